"""At most one waiting sweep per account (transfers/sweep_bookings.py): looks asked for at an
account where an earlier sweep already waits add no job, and nothing is lost for it. Real Redis
and rq queues, real jobs run by a burst worker, the sandbox over HTTP."""

import math
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from tests import workers
from tests.transfer_world import imports_started
from transfers import scheduling, sweep_bookings
from transfers.models import Recipient
from transfers.services import polling, reconcile

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = "444455556666"


@pytest.fixture
def shipped(settings):
    """The shipped sweep grid (5 s) and back-off; gathering off, so each sweep looks when it runs."""
    def apply():
        settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 5.0, 60.0
        settings.OMIPORTAL_RECONCILE_GRACE_SECONDS, settings.OMIPORTAL_SWEEP_GATHER_SECONDS = 60.0, 0.0
    return apply


def _booked(account) -> list[str]:
    """The ids of the account's import sweeps waiting (scheduled or queued)."""
    q = scheduling.get_queue("poll")
    prefix = f"import-sweep-{account.public_id}-"
    return sorted(j for j in [*q.scheduled_job_registry.get_job_ids(), *q.get_job_ids()] if j.startswith(prefix))


def _ask(account, *offsets: float, now=None) -> None:
    """Ask for a look at each offset (seconds from now), each in its own transaction, as imports
    started one after another do (import_starts._started)."""
    now = now or timezone.now()
    for offset in offsets:
        with transaction.atomic():
            scheduling.schedule_sweep("import", account.public_id, now + timedelta(seconds=offset))


def _run_waiting() -> None:
    """Run the jobs waiting now (scheduled ones at once), as a worker would; the looks they book
    stay scheduled."""
    workers.release_scheduled()
    qs = workers.queues()
    SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer).work(burst=True, logging_level="WARNING")


def _slot_id(account, when) -> str:
    return f"import-sweep-{account.public_id}-{math.ceil(when.timestamp() / scheduling.slot_seconds())}"


def test_looks_asked_for_after_a_waiting_sweep_add_no_job_an_earlier_one_does(flow, shipped):
    shipped()
    now = timezone.now()
    _ask(flow.delta, *[10 + 5 * k for k in range(10)], now=now)  # ten starts, ten grid cells
    # Only the earliest waits (ten before: one per cell, nine of them finding nothing to do).
    assert _booked(flow.delta) == [_slot_id(flow.delta, now + timedelta(seconds=10))]
    _ask(flow.delta, 2, now=now)  # earlier than the one waiting: it is booked, and named by the key
    assert _slot_id(flow.delta, now + timedelta(seconds=2)) in _booked(flow.delta)
    assert len(_booked(flow.delta)) == 2
    assert sweep_bookings.booked(scheduling.get_queue("poll").connection, "import", flow.delta.public_id)[1] == \
        _slot_id(flow.delta, now + timedelta(seconds=2))
    _ask(flow.alpha, 30, now=now)  # another account books its own
    assert len(_booked(flow.alpha)) == 1


def test_the_waiting_sweep_looks_at_the_rows_whose_looks_it_stood_for_then_books_the_next(flow, cloud, shipped):
    rows = imports_started(flow, cloud, 3)  # importing, queues empty, nothing booked
    shipped()
    now = timezone.now()
    # Started a few seconds apart: their first looks fall in three grid cells.
    for row, offset in zip(rows, (0.5, 3, 30), strict=True):
        Recipient.objects.filter(pk=row.pk).update(next_poll_at=now + timedelta(seconds=offset), poll_interval=5.0)
    _ask(flow.delta, 0.5, 3, 30, now=now)
    assert _booked(flow.delta) == [_slot_id(flow.delta, now + timedelta(seconds=0.5))]
    for row in rows[:2]:  # the first two are done; the third still imports
        with cloud.world.lock:
            cloud.world.images[row.image_id].ready_at = time.monotonic()
    time.sleep(max(0.0, (now + timedelta(seconds=1) - timezone.now()).total_seconds()))

    _run_waiting()

    # The one sweep claimed the second row too (due within its cell, its own booking skipped)...
    assert [r.state for r in Recipient.objects.order_by("pk")] == ["completed", "completed", "importing"]
    # ...and, having cleared the key as it began, booked the third row's look: without that, its
    # own booking would have been taken for one already waiting, and nothing would look again.
    assert _booked(flow.delta) == [_slot_id(flow.delta, now + timedelta(seconds=30))]


def test_a_look_asked_for_while_the_sweep_runs_is_booked(flow, cloud, shipped, monkeypatch):
    """The moment after a sweep's last read of the account: a look asked for then gets a job of
    its own, before the one the sweep books (the sweep will not read the row again)."""
    rows = imports_started(flow, cloud, 3)
    shipped()
    now = timezone.now()
    for row, offset in zip(rows, (0, 40, 100), strict=True):
        Recipient.objects.filter(pk=row.pk).update(next_poll_at=now + timedelta(seconds=offset), poll_interval=5.0)
    with cloud.world.lock:
        cloud.world.images[rows[0].image_id].ready_at = time.monotonic()
    _ask(flow.delta, 0, now=now)
    asked = []
    schedule_next = polling.schedule_next

    def a_start_lands_after_the_sweep_read(*args, **kwargs):
        schedule_next(*args, **kwargs)  # books the second row's look, 40 s on
        # Another worker's start commits now: its look, 20 s on, comes before that one.
        Recipient.objects.filter(pk=rows[2].pk).update(next_poll_at=now + timedelta(seconds=20))
        _ask(flow.delta, 20, now=now)
        asked.append(True)

    monkeypatch.setattr(polling, "schedule_next", a_start_lands_after_the_sweep_read)
    _run_waiting()
    assert asked and Recipient.objects.get(pk=rows[0].pk).state == "completed"
    assert _booked(flow.delta) == sorted([_slot_id(flow.delta, now + timedelta(seconds=20)),
                                          _slot_id(flow.delta, now + timedelta(seconds=40))])


def test_a_waiting_sweep_that_is_lost_is_replaced_by_the_reconciler(flow, cloud, shipped):
    rows = imports_started(flow, cloud, 1)
    shipped()
    now = timezone.now()
    _ask(flow.delta, 1, now=now)
    lost = _booked(flow.delta)
    assert len(lost) == 1
    scheduling.get_queue("poll").scheduled_job_registry.remove(lost[0], delete_job=True)  # lost
    Recipient.objects.filter(pk=rows[0].pk).update(next_poll_at=now - timedelta(seconds=61))
    _ask(flow.delta, 2, now=now)  # a look asked for meanwhile still defers to the key: no job
    assert _booked(flow.delta) == []

    assert reconcile.reconcile()["imports"] == 1
    # The reconciler does not defer to a key naming a sweep it has found lost.
    assert len(_booked(flow.delta)) == 1
    workers.release_scheduled()
    with cloud.world.lock:
        cloud.world.images[rows[0].image_id].ready_at = time.monotonic()
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=rows[0].pk).state == "completed")
    assert Recipient.objects.get(pk=rows[0].pk).state == "completed"


def test_a_sweep_that_could_not_be_enqueued_leaves_no_key(flow, shipped, monkeypatch):
    shipped()
    monkeypatch.setattr(scheduling, "_send", lambda *a, **k: False)  # Redis refused the enqueue
    _ask(flow.delta, 10)
    monkeypatch.undo()
    assert sweep_bookings.booked(scheduling.get_queue("poll").connection, "import", flow.delta.public_id) is None
    _ask(flow.delta, 12)
    assert len(_booked(flow.delta)) == 1
