"""A share withdrawn while its export is in flight takes the export with it: DeleteExportTask, once,
audited with its RequestIds, only when no other share uses the export (real sandbox, real jobs)."""

import time

import pytest

from audit.models import AuditEvent
from audit.verify import verify_chain
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers import errors
from transfers.models import Export, Recipient, Share
from transfers.services import export_cancels
from transfers.services import requests as share_requests

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA = "111122223333"


def _export(share) -> Export:
    return Export.objects.get(pk=Share.objects.get(pk=share.pk).export_id)


def _cancel(flow, share, user=None):
    return share_requests.share_cancel(access=access(user or flow.src_member, flow.source),
                                       share=Share.objects.get(pk=share.pk))


def _work(seconds):
    """Run the jobs for a while (sweeps of an export in flight keep coming back)."""
    until = time.monotonic() + seconds
    workers.run_jobs(until=lambda: time.monotonic() > until)


def _running(share):
    return lambda: _export(share).state == Export.State.RUNNING


def _ended(share):
    return lambda: _export(share).state == Export.State.FAILED


def test_it_cancels_a_queued_export_task_once_when_its_only_share_is_withdrawn(flow, cloud):
    cloud.set_durations(export_seconds=60)  # queued for its first 12 s
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_running(share))
    task_id = _export(share).task_id
    assert cloud.world.tasks[task_id].state == "pending/queued"

    cancelled = _cancel(flow, share)
    assert cancelled.state == Share.State.CANCELLED
    workers.run_jobs(until=_ended(share))

    export = _export(share)
    assert export.state_message == errors.EXPORT_CANCELLED
    assert cloud.world.tasks[task_id].state == "cancelled"
    assert cloud.counters(ALPHA).get("DeleteExportTask") == 1
    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"cancelled"}
    event = AuditEvent.objects.get(action="export.cancelled")
    assert event.outcome == "success" and event.cloud_request_ids and event.details["outcome"] == "cancelled"
    assert AuditEvent.objects.get(action="share.cancelled").details == {"export_cancelled": True}

    # Exactly once: the job again, or another claim, calls nothing more.
    export_cancels.export_cancel(export_id=export.public_id)
    assert not export_cancels.claim_for_cancel(export.pk)
    workers.run_jobs()
    assert cloud.counters(ALPHA).get("DeleteExportTask") == 1
    assert AuditEvent.objects.filter(action="export.cancelled").count() == 1
    assert verify_chain().ok


def test_an_export_another_share_still_needs_is_not_cancelled(flow, cloud):
    cloud.set_durations(export_seconds=60)
    first = request_share(flow, cloud)
    approve(flow, first)
    workers.run_jobs(until=_running(first))
    second = request_share(flow, cloud, copy_name="web-copy-2")  # by export, as delta is in another Region
    approve(flow, second)
    assert _export(second).pk == _export(first).pk  # reused while in flight

    _cancel(flow, first)
    _work(1.0)
    assert _export(first).state == Export.State.RUNNING
    assert not cloud.counters(ALPHA).get("DeleteExportTask")
    assert AuditEvent.objects.get(action="share.cancelled").details == {"export_cancelled": False}

    # The last one withdrawn takes the export with it.
    _cancel(flow, second)
    workers.run_jobs(until=_ended(second))
    assert cloud.counters(ALPHA).get("DeleteExportTask") == 1


def test_an_export_withdrawn_before_it_started_never_reaches_the_cloud(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)  # its start job is queued, not run
    assert _export(share).state == Export.State.STARTING

    _cancel(flow, share)
    workers.run_jobs(until=_ended(share))
    workers.run_jobs()

    assert _export(share).state_message == errors.EXPORT_CANCELLED_UNSTARTED
    counters = cloud.counters(ALPHA)
    assert not counters.get("CreateImageExportTask") and not counters.get("DeleteExportTask")
    assert AuditEvent.objects.get(action="export.cancelled").details["outcome"] == "unstarted"
    assert not AuditEvent.objects.filter(action="export.started").exists()


def test_a_new_share_does_not_reuse_an_export_being_cancelled(flow, cloud):
    cloud.set_durations(export_seconds=60)
    first = request_share(flow, cloud)
    approve(flow, first)
    workers.run_jobs(until=_running(first))
    _cancel(flow, first)  # claimed; its cancellation job not run yet
    second = request_share(flow, cloud, copy_name="web-copy-2")  # by export, as delta is in another Region
    approve(flow, second)
    assert _export(second).pk != _export(first).pk


def test_a_task_past_its_queue_runs_to_its_end_offered_to_nobody(flow, cloud):
    cloud.set_durations(export_seconds=4)  # queued for 0.8 s only
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=lambda: _running(share)() and cloud.world.tasks[_export(share).task_id].state == "pending")

    _cancel(flow, share)
    workers.run_jobs(until=lambda: _export(share).state == Export.State.COMPLETED)

    event = AuditEvent.objects.get(action="export.cancelled")
    assert event.outcome == "failed" and event.cloud_request_ids and event.details["outcome"] == "refused"
    assert Share.objects.get(pk=share.pk).state == Share.State.CANCELLED
    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"cancelled"}
    assert not AuditEvent.objects.filter(action="share.offered").exists()
    # Claimed, so no later share reuses it, and its files go once it is done.
    assert _export(share).cleanup_claimed_at is not None


def test_only_a_share_whose_export_is_still_in_flight_can_be_withdrawn(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    with pytest.raises(errors.ShareConflict, match="whose export has not finished"):
        _cancel(flow, share)

