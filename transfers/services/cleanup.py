"""Deleting an export's objects from the bucket once nobody can still import from them.

The export is claimed before anything is deleted: a conditional update, under the export row's
lock, that succeeds only while no share uses it (``cleanup_claimed_at``). export_begin reuses an
export only unclaimed, under the same lock, so a new share and the clean-up never both win: either
the share holds the export first (the claim then sees it and gives up) or the claim comes first
(the share then gets a new export). A claimed export is never reused again, so a clean-up that
failed or was killed after its claim simply goes on later (the reconciler queues it again).
"""

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from audit.recorder import AuditTarget, record
from transfers import scheduling
from transfers.models import Export, Recipient, Share
from transfers.services import object_revokes


def still_needed(now) -> Q:
    """Exports whose objects a share or an import may still read (a filter on Export): in one
    query for any number of exports, so the reconciler's safety net stays one statement a tick."""
    recipients = Recipient.objects.filter(share__export=OuterRef("pk"))
    return (Q(Exists(Share.objects.filter(export=OuterRef("pk")).exclude(state__in=Share.FINAL_STATES)))
            | Q(Exists(recipients.filter(state__in=Recipient.OPEN_STATES)))
            # Until the manifest's deadline a failed import may be retried, and an external
            # account may still be importing from the link it was given.
            | (Q(manifest_deadline__gt=now)
               & Q(Exists(recipients.filter(Q(state=Recipient.State.FAILED) | Q(kind=Recipient.Kind.EXTERNAL))))))


def _still_needed(export: Export) -> bool:
    return Export.objects.filter(still_needed(timezone.now()), pk=export.pk).exists()


def exports_cleanup_if_done(*, export_ids) -> None:
    """Queue the clean-up of each of these exports that is completed and not cleaned, when every
    share of it has ended (team setting), or when a claimed clean-up has not finished yet. One
    query for any number of exports: a sweep that completes imports of many exports (a release
    to hundreds of accounts) asked two per export."""
    needed = Export.objects.filter(still_needed(timezone.now()), pk=OuterRef("pk"))
    due = (Export.objects.filter(pk__in=list(export_ids), state=Export.State.COMPLETED, cleaned_at__isnull=True)
           .filter(Q(cleanup_claimed_at__isnull=False) | (Q(account__team__cleanup_exports=True) & ~Exists(needed)))
           .order_by("pk").values_list("public_id", flat=True))
    for public_id in due:
        cleanup_later(public_id)


def cleanup_later(export_public_id) -> None:
    """Queue an export's clean-up; its run checks again, under the export's lock, that nothing uses it."""
    scheduling.enqueue("transfers.jobs.export_cleanup_job", str(export_public_id),
                       job_id=f"export-cleanup-{export_public_id}")


def _claim(export: Export) -> bool:
    """Mark the export as being cleaned, only while nothing uses it. Nothing is deleted before."""
    with transaction.atomic():
        # The row lock orders this claim after a reuse that holds the export (export_begin locks
        # it too), and the checks below are new statements: they see the share it committed.
        held = Export.objects.select_for_update().filter(
            pk=export.pk, state=Export.State.COMPLETED, cleaned_at__isnull=True,
            cleanup_claimed_at__isnull=True).first()
        if held is None or _still_needed(held):
            return False
        return bool(Export.objects.filter(pk=export.pk, cleanup_claimed_at__isnull=True).update(
            cleanup_claimed_at=timezone.now()))


def export_cleanup(*, export_id) -> None:
    """What an export leaves behind: its copy-first image as soon as it ended, its objects once
    nobody can import from them (and the team wants them deleted)."""
    export = Export.objects.select_related("account__team").filter(public_id=export_id).first()
    if export is None:
        return
    export_copy_delete(export=export)
    if export.cleaned_at or export.state != Export.State.COMPLETED:
        return
    if export.cleanup_claimed_at is None and (not export.account.team.cleanup_exports or not _claim(export)):
        return  # a later share reused it meanwhile, or another run claimed it
    target = _target(export)
    # An external account granted read on the files loses it first (a failed removal goes on at a
    # later reconcile, or goes with the files).
    object_revokes.object_grants_remove_for_export(export=export)
    try:
        creds = credentials_for(export.account, purpose="delete export files")
        deleted = outscale.delete_export_objects(creds=creds, bucket=export.bucket, prefix=export.prefix)
        count, request_ids = deleted.count, deleted.request_ids
    except outscale.NotFound as exc:
        count, request_ids = 0, exc.request_ids  # the bucket is gone, and its objects with it
    except outscale.CloudError as exc:
        # The claim stays: nobody reuses the export, and the reconciler queues this again.
        record(action="export.cleanup_failed", outcome="failed", actor=None, team=export.account.team,
               target=target, cloud_request_ids=list(exc.request_ids), details={"reason": exc.user_message})
        return
    with transaction.atomic():
        if Export.objects.filter(pk=export.pk, cleaned_at__isnull=True).update(cleaned_at=timezone.now()):
            record(action="export.cleaned", actor=None, team=export.account.team, target=target,
                   cloud_request_ids=list(request_ids), details={"objects_deleted": count})
            object_revokes.object_grants_gone_with_files(export=export)


def _target(export: Export) -> AuditTarget:
    return AuditTarget("transfers.export", str(export.public_id), f"export of {export.source_image_id}")


COPY_ENDED = (Export.State.COMPLETED, Export.State.FAILED)


def export_copy_delete(*, export: Export) -> None:
    """Delete the copy-first image once its export ended: OUTSCALE exported the copy, not the
    source, and the files in the bucket no longer need it. Safe twice: only the image whose id
    the export recorded when the portal created it (never one found by name), only while
    copy_cleaned_at is unset, and a second run (or one that finds it gone) changes nothing."""
    if (export.state not in COPY_ENDED or not export.copy_image_id or export.copy_cleaned_at
            or export.copy_image_id == export.source_image_id):
        return
    outcome, details = "success", {"copy_image_id": export.copy_image_id}
    try:
        creds = credentials_for(export.account, purpose="delete copy-first image")
        request_ids = outscale.delete_image(creds=creds, image_id=export.copy_image_id).request_ids
    except outscale.NotFound as exc:
        request_ids, details["already_gone"] = exc.request_ids, True
    except outscale.CloudError as exc:
        if exc.retryable:
            return  # throttled or busy: the reconciler brings it back after the grace period
        # Bad keys are never retried (OUTSCALE locks an account after a few), nor a refusal that
        # will not change: the image stays in the account, and the trail says so.
        request_ids, outcome, details["reason"] = exc.request_ids, "failed", exc.user_message
    now = timezone.now()
    with transaction.atomic():
        if Export.objects.filter(pk=export.pk, copy_cleaned_at__isnull=True).update(copy_cleaned_at=now):
            export.copy_cleaned_at = now
            record(action="export.copy_deleted" if outcome == "success" else "export.copy_delete_failed",
                   outcome=outcome, actor=None, team=export.account.team, target=_target(export),
                   cloud_request_ids=list(request_ids), details=details)
