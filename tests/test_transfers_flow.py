"""The whole copy, end to end: real sandbox over HTTP, real RQ jobs, real database commits."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from audit.verify import verify_chain
from outscale import marks
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers import notifications
from transfers.models import Export, Recipient, Share
from transfers.services import import_offers

pytestmark = pytest.mark.django_db(transaction=True)


def _state(share):
    return Share.objects.get(pk=share.pk).state


def test_a_cross_region_copy_completes_with_one_export_and_one_import_per_recipient(flow, cloud):
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    assert share.state == Share.State.REQUESTED and share.approval_required
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"offered"}

    for recipient in Recipient.objects.filter(share=share):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)

    recipients = list(Recipient.objects.filter(share=share).select_related("target_account"))
    assert {r.state for r in recipients} == {"completed"}
    for r in recipients:
        image = cloud.world.images[r.image_id]
        assert image.account_id == r.target_account.account_id and image.state == "available"
        assert image.name == "web-copy"
        tags = {t["Key"]: t["Value"] for t in image.tags} if isinstance(image.tags, list) else image.tags
        # Provenance: the source account, and the portal account it was made for (the same on every
        # copy from that account there, so copies are tagged together); the source image is named
        # beside the mark in the Description; the share is the portal's to say.
        assert marks.source_of(image.description) == share.source_image_id
        assert "omiportal:source-image" not in tags
        assert tags["omiportal:source-account"] == share.source_account.account_id
        assert tags["omiportal:recipient"] == str(r.target_account.public_id)
        assert "omiportal:share" not in tags
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1
    assert cloud.counters("444455556666").get("CreateImage") == 1
    assert cloud.counters("333344445555").get("CreateImage") == 1
    assert verify_chain().ok
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    for expected in ("share.requested", "share.approved", "export.requested", "export.started", "export.completed",
                     "share.offered", "import.accepted", "import.started", "import.completed", "share.completed"):
        assert expected in actions
    # Every job that opened stored keys said so, and why.
    purposes = set(AuditEvent.objects.filter(action="credential.used").values_list("details__purpose", flat=True))
    assert {"start export", "watch exports", "start import", "watch imports", "sign manifest link"} <= purposes


def _ready(share):
    # Every recipient offered: a same-Region one is offered once its launch grant is made, which
    # a throttled cloud can delay past the export's end.
    return lambda: _state(share) == Share.State.READY and not share.recipients.filter(state="waiting").exists()


def _accept_all(flow, share):
    for recipient in Recipient.objects.filter(share=share, kind="team", state="offered"):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)


def test_a_public_image_is_copied_into_the_account_before_its_export(flow, cloud):
    share = request_share(flow, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    export = Export.objects.get(shares=share)
    assert export.copy_image_id and export.copy_image_id != export.source_image_id
    counters = cloud.counters("111122223333")
    assert counters.get("CreateImage") == 1 and counters.get("CreateImageExportTask") == 1
    # The copy was made in the source account and, the export complete, deleted from it again.
    assert export.copy_image_id not in cloud.world.images and counters.get("DeleteImage") == 1


def test_a_later_share_of_the_same_image_reuses_the_export(flow, cloud):
    first = request_share(flow, cloud)
    approve(flow, first)
    workers.run_jobs(until=_ready(first))
    second = request_share(flow, cloud, accounts=[flow.delta], copy_name="web-copy-2")  # by export
    approve(flow, second)
    assert _state(second) == Share.State.READY
    assert Share.objects.get(pk=second.pk).export_id == Share.objects.get(pk=first.pk).export_id
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1


def test_a_failed_export_fails_the_share_with_the_clouds_reason(flow, cloud):
    share = request_share(flow, cloud, image="alpha-legacy-broken", copy_name="broken-copy")
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.FAILED)
    share.refresh_from_db()
    assert share.state_message
    assert AuditEvent.objects.filter(action="export.failed", outcome="failed").exists()
    assert set(share.recipients.values_list("state", flat=True)) == {"cancelled"}


def test_an_expired_manifest_expires_the_share_and_one_click_exports_again(flow, cloud, settings):
    from datetime import timedelta

    from django.utils import timezone

    from transfers.services import reconcile

    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    Export.objects.filter(shares=share).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    reconcile.reconcile()
    share.refresh_from_db()
    assert share.state == Share.State.EXPIRED
    assert set(share.recipients.values_list("state", flat=True)) == {"expired"}
    reconcile.share_reexport(access=access(flow.src_member, flow.source), share=share)
    workers.run_jobs(until=_ready(share))
    assert Export.objects.filter(account=flow.alpha).count() == 2
    _accept_all(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)


def test_a_failed_import_can_be_retried(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    cloud.faults.fail_import("web-copy", comment="disk image is corrupt")
    _accept_all(flow, share)
    recipient = Recipient.objects.get(share=share)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == "failed")
    recipient.refresh_from_db()
    assert "corrupt" in recipient.state_message
    assert _state(share) == Share.State.FAILED or _state(share) == Share.State.IMPORTING
    import_offers.recipient_retry(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == "completed")
    assert Recipient.objects.get(pk=recipient.pk).image_name == "web-copy (retry 2)"


def test_an_external_recipient_gets_a_link_another_team_can_import_from(flow, cloud):
    from transfers.services import external_links
    from transfers.services.requests import ExternalRecipient

    share = request_share(flow, cloud, accounts=[], externals=[ExternalRecipient("444455556666", "us-east-2")])
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    external = Recipient.objects.get(share=share)
    revealed = external_links.link_reveal(access=access(flow.src_member, flow.source), share=share, recipient=external)
    assert revealed.url not in str(AuditEvent.objects.filter(action="link.revealed").values_list("details"))
    assert _state(share) == Share.State.COMPLETED
    pasted = external_links.link_import_create(access=access(flow.dst_member, flow.dest), account=flow.delta,
                                      url=revealed.url, image_name="from-a-link")
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=pasted.pk).state == "completed")
    pasted.refresh_from_db()
    assert pasted.link_sealed == ""  # the bearer link is gone once the import exists
    assert cloud.world.images[pasted.image_id].account_id == "444455556666"


def test_throttling_errors_and_lost_responses_never_duplicate_a_create(flow, cloud, settings):
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 2
    cloud.faults.configure(throttle_rate=0.3, error_rate=0.05, lost_response_rate=0.3)
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma]) if _requested(flow, cloud) else None
    cloud.faults.configure(throttle_rate=0.3, error_rate=0.05, lost_response_rate=0.3)
    approve(flow, share)
    workers.run_jobs(until=_ready(share), timeout=60)
    _accept_all(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED, timeout=60)
    cloud.faults.reset()
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1
    assert cloud.counters("444455556666").get("CreateImage") == 1
    assert cloud.counters("333344445555").get("CreateImage") == 1
    assert verify_chain().ok


def _requested(flow, cloud):
    cloud.faults.reset()  # the request itself is made with a calm cloud: it is a user's click
    return True


def test_a_flushed_redis_delays_transfers_but_loses_none(flow, cloud, settings):
    from transfers.services import reconcile

    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.flush()  # the export job is gone
    assert workers.pending_jobs() == 0
    reconcile.reconcile()
    workers.run_jobs(until=_ready(share))
    _accept_all(flow, share)
    workers.flush()
    reconcile.reconcile()
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1
    assert cloud.counters("444455556666").get("CreateImage") == 1


def _export_start_jobs(export) -> list[str]:
    return [job_id for q in workers.queues() for job_id in q.job_ids
            if job_id.startswith(f"export-start-{export.public_id}-")]


def test_a_start_still_queued_behind_a_backlog_is_not_enqueued_again_and_a_lost_one_is_once(
        flow, cloud, settings):
    # Ten thousand approvals queue their starts behind each other; every tick of the reconciler
    # used to enqueue each late one again (a 10,000-transfer benchmark had 27,885 extra start jobs
    # queued within minutes). A queued job is not lost: only one the queues have moved past is.
    from transfers import scheduling
    from transfers.services import reconcile

    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0.3
    workers.flush()
    # The backlog's head: a start of an export that does not exist (it does nothing when it runs).
    scheduling.enqueue("transfers.jobs.export_start_job", "00000000-0000-0000-0000-000000000000",
                       job_id="backlog-head")
    time.sleep(0.05)
    share = request_share(flow, cloud)
    approve(flow, share)
    export = Export.objects.get(shares=share)
    assert len(_export_start_jobs(export)) == 1
    for _ in range(4):
        time.sleep(0.4)  # each tick, the row's next look is more than a grace period late
        reconcile.reconcile()
    assert len(_export_start_jobs(export)) == 1  # still waiting behind the head: left alone

    # The job is lost (here: taken out of the queue), and the queue moves on past it.
    for q in workers.queues():
        for job_id in _export_start_jobs(export):
            q.remove(job_id)
    workers.run_jobs()  # the head and the rest run: the queues are empty
    time.sleep(0.4)
    reconcile.reconcile()
    reconcile.reconcile()
    assert len(_export_start_jobs(export)) == 1  # enqueued again, once
    workers.run_jobs(until=_ready(share))
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1


def test_a_team_with_auto_accept_imports_without_anyone_clicking(flow, cloud):
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)
    assert AuditEvent.objects.filter(action="import.auto_accepted", actor_id=None).count() == 1


def test_the_people_concerned_are_emailed_at_each_step(flow, cloud, mailoutbox):
    share = request_share(flow, cloud)
    assert not mailoutbox  # mails go out from a job, never from the request itself
    workers.run_jobs()
    subjects = [m.subject for m in mailoutbox]
    assert any("Approval needed" in s for s in subjects)
    approval_mail = next(m for m in mailoutbox if "Approval needed" in m.subject)
    assert "member@src.test" not in approval_mail.to  # never the requester
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    _accept_all(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)
    workers.run_jobs()  # the last mails
    by_subject = {m.subject: m.to for m in mailoutbox}
    assert any("was approved" in s and to == ["member@src.test"] for s, to in by_subject.items())
    assert any("ready for your team" in s and "member@dst.test" in to for s, to in by_subject.items())
    assert any("Import completed" in s for s in by_subject)
    for message in mailoutbox:
        assert "X-Amz-Signature" not in message.body


def test_a_hand_off_larger_than_the_sweep_budget_goes_on_in_jobs_and_starts_each_import_once(flow, cloud,
                                                                                            settings):
    """Four shares of one image to two accounts each: one export, eight imports to start when it
    completes. With no budget the sweep starts one and hand-off jobs start the rest."""
    settings.OMIPORTAL_SWEEP_BUDGET_SECONDS = 0
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    shares = [request_share(flow, cloud, accounts=[flow.delta, flow.gamma], copy_name=f"web-copy-{k}")
              for k in range(4)]
    for share in shares:
        approve(flow, share)
    workers.run_jobs(until=lambda: all(_state(s) == Share.State.COMPLETED for s in shares), timeout=60)
    assert Export.objects.filter(shares__in=shares).distinct().count() == 1
    assert cloud.counters("444455556666").get("CreateImage") == 4  # delta
    assert cloud.counters("333344445555").get("CreateImage") == 4  # gamma
    started_by = list(AuditEvent.objects.filter(action="import.started").values_list("request_id", flat=True))
    assert len(started_by) == 8
    assert any(r.startswith("export-sweep-") for r in started_by)  # the sweep began the hand-off
    assert any(r.startswith("import-handoff-") for r in started_by)  # jobs went on with it
    # Each counted one attempt: the starts the budget left undone were given back, not retried.
    assert set(Recipient.objects.filter(share__in=shares).values_list("start_tries", flat=True)) == {1}
    assert verify_chain().ok


def test_a_batch_of_emails_costs_the_same_few_queries_as_one(flow, cloud, mailoutbox):
    """A sweep that readies or completes hundreds of transfers queues one email job for them all,
    which reads the batch in a fixed number of queries."""
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    shares = [request_share(flow, cloud, copy_name=f"web-copy-{k}") for k in range(3)]
    for share in shares:
        approve(flow, share)
    workers.run_jobs(until=lambda: all(_state(s) == Share.State.COMPLETED for s in shares), timeout=60)
    workers.run_jobs()
    recipients = list(Recipient.objects.filter(share__in=shares).values_list("pk", flat=True))
    sent = {}
    for kind, ids in (("share_ready", [s.pk for s in shares]), ("import_ended", recipients),
                      ("approval_needed", [s.pk for s in shares]), ("decision_made", [s.pk for s in shares])):
        for batch in (ids[:1], ids):
            mailoutbox.clear()
            with CaptureQueriesContext(connection) as queries:
                notifications.send(kind, batch)
            sent[kind, len(batch)] = (len(queries), len(mailoutbox))
        (one_queries, one_mails), (all_queries, all_mails) = sent[kind, 1], sent[kind, len(ids)]
        assert all_queries == one_queries, kind
        assert one_mails >= 1 and all_mails == one_mails * len(ids), kind
    notifications.send("share_ready", [max(recipients) + 10_000])  # gone since: nothing, no error
