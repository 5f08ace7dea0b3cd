"""The whole copy, end to end: real sandbox over HTTP, real RQ jobs, real database commits."""

import pytest

from omiportal.audit.models import AuditEvent
from omiportal.audit.verify import verify_chain
from tests import workers
from tests.transfer_world import access, approve, make_transfer_world, request_share
from transfers.models import Recipient, Share
from transfers.services import imports

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def flow(cloud, settings):
    settings.OMIPORTAL_SWEEP_MIN_SECONDS = 0.05
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 0.2
    workers.flush()
    yield make_transfer_world(cloud)
    workers.flush()


def _state(share):
    return Share.objects.get(pk=share.pk).state


def test_a_cross_region_copy_completes_with_one_export_and_one_import_per_recipient(flow, cloud):
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    assert share.state == Share.State.REQUESTED and share.approval_required
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"offered"}

    for recipient in Recipient.objects.filter(share=share):
        imports.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)

    recipients = list(Recipient.objects.filter(share=share).select_related("target_account"))
    assert {r.state for r in recipients} == {"completed"}
    for r in recipients:
        image = cloud.world.images[r.image_id]
        assert image.account_id == r.target_account.account_id and image.state == "available"
        assert image.name == "web-copy"
        tags = {t["Key"]: t["Value"] for t in image.tags} if isinstance(image.tags, list) else image.tags
        assert tags["omiportal:share"] == str(share.public_id)
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1
    assert cloud.counters("444455556666").get("CreateImage") == 1
    assert cloud.counters("333344445555").get("CreateImage") == 1
    assert verify_chain().ok
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    for expected in ("share.requested", "share.approved", "export.requested", "export.started", "export.completed",
                     "share.offered", "import.accepted", "import.started", "import.completed", "share.completed"):
        assert expected in actions
