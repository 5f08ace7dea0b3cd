"""Pre-flight checks of a share waiting for approval: the source's in the source team's job, each
recipient's in its own team's job with its own keys (the request never opens them), dry runs
as the sandbox answers them, shown to the approver and run again when they get old."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts import preflight as account_checks
from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import request_share
from transfers.models import Recipient, Share
from transfers.services import preflight

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, DELTA = "111122223333", "444455556666"


def _checked(share):
    def done():
        rows = [Share.objects.get(pk=share.pk), *Recipient.objects.filter(share=share, kind="team")]
        return all(row.preflight.get("checks") for row in rows)
    return done


def _statuses(row) -> dict:
    row.refresh_from_db()
    return {check["name"]: check["status"] for check in row.preflight["checks"]}


def _recipient(share) -> Recipient:
    return Recipient.objects.get(share=share, kind="team")


def _page(client, flow, share, user=None):
    client.force_login(user or flow.src_approver)
    return client.get(reverse("transfers:share-detail", kwargs={"team_id": flow.source.public_id,
                                                                "share_id": share.public_id})).content.decode()


def test_a_waiting_share_is_checked_on_both_sides_each_with_its_own_keys(flow, cloud, client):
    share = request_share(flow, cloud)  # to delta, Research's account in us-east-2
    # The request opened the source's keys only: the recipient's are opened by Research's job.
    used = AuditEvent.objects.filter(action="credential.used")
    assert not used.filter(target_id=str(flow.delta.public_id)).exists()

    workers.run_jobs(until=_checked(share))
    assert _statuses(Share.objects.get(pk=share.pk)) == {"oos": "ok", "bucket": "ok", "dry_run": "ok"}
    assert _statuses(_recipient(share)) == {"name": "ok", "quota": "ok", "dry_run": "ok"}
    # Dry runs, not creates: nothing was made on either side.
    assert cloud.counters(ALPHA).get("CreateImageExportTask:DryRun") == 1
    assert not cloud.counters(ALPHA).get("CreateImageExportTask")
    assert cloud.counters(DELTA).get("CreateImage:DryRun") == 1 and not cloud.counters(DELTA).get("CreateImage")

    opened = used.get(target_id=str(flow.delta.public_id))
    assert opened.team_id == flow.dest.pk and opened.details["purpose"] == "pre-flight checks"
    assert opened.request_id.startswith("recipient-preflight-")
    event = AuditEvent.objects.get(action="import.preflight_checked")
    assert event.team_id == flow.dest.pk and event.outcome == "success" and event.cloud_request_ids
    source = AuditEvent.objects.get(action="share.preflight_checked")
    assert source.team_id == flow.source.pk and source.cloud_request_ids

    page = _page(client, flow, share)
    assert "data-share-preflight" in page and escape(preflight.NAME_FREE.format(name="web-copy", label="delta")) \
        in page


def test_a_name_taken_in_the_recipient_account_is_shown_to_the_approver(flow, cloud, client, oapi):
    oapi("delta").CreateImage(SourceImageId=cloud.account("delta")["images"][0]["image_id"],
                              SourceRegionName="us-east-2", ImageName="web-copy")
    share = request_share(flow, cloud)
    workers.run_jobs(until=_checked(share))
    recipient = _recipient(share)
    assert _statuses(recipient)["name"] == "problem" and recipient.preflight["problems"] == 1
    assert "dry_run" not in _statuses(recipient)  # it would only say the same again
    assert AuditEvent.objects.get(action="import.preflight_checked").outcome == "failed"
    page = _page(client, flow, share)
    assert escape(preflight.NAME_TAKEN.format(name="web-copy", label="delta")) in page


def test_a_full_quota_in_the_recipient_account_is_shown_without_its_numbers(flow, cloud, client):
    owned = sum(1 for image in cloud.world.images.values() if image.account_id == DELTA)
    cloud.set_quota(DELTA, "image_limit", owned)
    share = request_share(flow, cloud)
    workers.run_jobs(until=_checked(share))
    recipient = _recipient(share)
    quota = next(check for check in recipient.preflight["checks"] if check["name"] == "quota")
    assert quota["status"] == "problem" and "used" not in quota and "limit" not in quota
    assert quota["message"] == account_checks.QUOTA_FULL_THERE.format(label="delta")


def test_a_source_whose_keys_oos_refuses_is_a_problem_before_approval(flow, cloud):
    share = request_share(flow, cloud)
    cloud.refuse_oos(ALPHA)  # after the request's own bucket check
    workers.run_jobs(until=_checked(share))
    statuses = _statuses(Share.objects.get(pk=share.pk))
    assert statuses["oos"] == "problem" and statuses["bucket"] == "unknown"
    assert AuditEvent.objects.get(action="share.preflight_checked").outcome == "failed"


def test_the_copy_first_dry_run_and_quota_are_checked_for_an_image_the_source_does_not_own(flow, cloud):
    share = request_share(flow, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    workers.run_jobs(until=_checked(share))
    assert _statuses(Share.objects.get(pk=share.pk)) == {"oos": "ok", "bucket": "ok", "quota": "ok", "dry_run": "ok"}
    assert cloud.counters(ALPHA).get("CreateImage:DryRun") == 1 and not cloud.counters(ALPHA).get("CreateImage")


def test_checks_older_than_a_few_minutes_run_again_when_an_approver_opens_the_share(flow, cloud, client):
    share = request_share(flow, cloud)
    workers.run_jobs(until=_checked(share))
    workers.flush()
    _page(client, flow, share)
    assert workers.pending_jobs() == 0  # fresh: nothing queued

    _page(client, flow, share, user=flow.src_member)  # the requester cannot decide: never queues
    old = timezone.now() - timedelta(seconds=preflight.PREFLIGHT_FRESH_SECONDS + 1)
    Share.objects.filter(pk=share.pk).update(preflight_checked_at=old)
    _page(client, flow, share, user=flow.src_member)
    assert workers.pending_jobs() == 0

    _page(client, flow, share)
    assert workers.pending_jobs() == 2  # the source's job and the recipient team's
    workers.run_jobs()
    assert Share.objects.get(pk=share.pk).preflight_checked_at > old
    assert AuditEvent.objects.filter(action="import.preflight_checked").count() == 2


def test_a_decided_share_keeps_the_checks_it_was_decided_on(flow, cloud):
    share = request_share(flow, cloud)
    Share.objects.filter(pk=share.pk).update(state=Share.State.CANCELLED)
    workers.run_jobs()
    assert Share.objects.get(pk=share.pk).preflight == {} and _recipient(share).preflight == {}
    assert not cloud.counters(DELTA)


def test_a_requests_checks_and_mail_wait_in_the_background_queue_not_before_the_transfers_steps(flow, cloud):
    """A burst of requests queues their checks and mail: in `default` they were ahead of every
    export start and grant in first-in first-out order (4,970 of them in the two-host fault run)."""
    import django_rq

    workers.flush()
    share = request_share(flow, cloud)
    background = django_rq.get_queue("background").job_ids
    assert any(job_id.startswith(f"share-preflight-{share.public_id}-") for job_id in background)
    assert any(job_id.startswith(f"recipient-preflight-{_recipient(share).public_id}-") for job_id in background)
    assert any(job_id.startswith("notify-approval_needed-") for job_id in background)
    assert not [job_id for name in ("default", "poll") for job_id in django_rq.get_queue(name).job_ids
                if job_id.startswith(("share-preflight-", "recipient-preflight-", "notify-"))]
