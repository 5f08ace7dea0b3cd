"""A create whose answer never came may still be applied by the cloud later: the portal waits
a settle window before it looks the name up and tries again (OMIPORTAL_CREATE_SETTLE_SECONDS),
and holds the row for that window so no other run can start it earlier. Real sandbox over HTTP:
its hold switch keeps a create for longer than the client's read timeout, then applies it."""

import time

import pytest

from tests import workers
from tests.test_transfers_leases import DELTA, _images_named, _ready_share
from tests.transfer_world import access
from transfers import jobs
from transfers.models import Recipient
from transfers.services import import_offers

pytestmark = pytest.mark.django_db(transaction=True)

HOLD = 2.0  # the cloud keeps the create this long before applying it
READ_TIMEOUT = 0.7  # the portal stops waiting for the answer well before that
SETTLE = 3.5  # and waits this long before it looks again


@pytest.fixture
def abandoned(flow, cloud, settings):
    settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = READ_TIMEOUT
    settings.OMIPORTAL_CREATE_SETTLE_SECONDS = SETTLE
    return flow


def _state(recipient):
    return Recipient.objects.get(pk=recipient.pk)


def test_a_create_whose_answer_never_came_is_looked_up_after_the_settle_window_not_repeated(abandoned, cloud):
    share = _ready_share(abandoned, cloud)
    recipient = share.recipients.get()
    cloud.faults.configure(hold_seconds=HOLD, hold_actions={"CreateImage"})
    import_offers.recipient_accept(access=access(abandoned.dst_member, abandoned.dest), recipient=recipient)
    workers.flush()

    jobs.import_start_job(str(recipient.public_id))  # the read times out: did the cloud act? unknown
    first = _state(recipient)
    assert first.state == Recipient.State.IMPORTING and not first.image_id
    # Any run before the window ends (an early job, the reconciler, a second worker) finds the row held.
    jobs.import_start_job(str(recipient.public_id))
    assert _state(recipient).start_tries == 1  # not claimed again: no lookup, no second create

    time.sleep(SETTLE + 0.2)  # the held create has been applied meanwhile
    cloud.faults.reset()
    jobs.import_start_job(str(recipient.public_id))
    workers.run_jobs(until=lambda: _state(recipient).state in Recipient.FINAL_STATES)

    done = _state(recipient)
    assert done.state == Recipient.State.COMPLETED, done.state_message
    assert cloud.counters(DELTA)["CreateImage"] == 1  # looked up and adopted, never repeated
    assert len(_images_named(cloud, DELTA, "web-copy")) == 1
