"""Deleting an export's objects from the bucket once nobody can still import from them."""

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from omiportal import outscale
from omiportal.audit.recorder import AuditTarget, record
from omiportal.outscale.account_credentials import credentials_for
from transfers import scheduling
from transfers.models import Export, Recipient, Share


def export_cleanup_if_done(*, export_id) -> None:
    """Queue the cleanup when every share of a completed export has ended (team setting)."""
    export = Export.objects.select_related("account__team").get(pk=export_id)
    if export.state != Export.State.COMPLETED or export.cleaned_at or not export.account.team.cleanup_exports:
        return
    if Share.objects.filter(export=export).exclude(state__in=Share.FINAL_STATES).exists():
        return
    if Recipient.objects.filter(share__export=export, state__in=Recipient.OPEN_STATES).exists():
        return
    if export.manifest_deadline > timezone.now() and Recipient.objects.filter(share__export=export).filter(
            Q(state=Recipient.State.FAILED) | Q(kind=Recipient.Kind.EXTERNAL)).exists():
        # Until the manifest's deadline a failed import may be retried, and an external
        # account may still be importing from the link it was given.
        return
    scheduling.enqueue("transfers.jobs.export_cleanup_job", str(export.public_id),
                       job_id=f"export-cleanup-{export.public_id}")


def export_cleanup(*, export_id) -> None:
    export = Export.objects.select_related("account__team").filter(public_id=export_id).first()
    if export is None or export.cleaned_at or export.state != Export.State.COMPLETED:
        return
    if Share.objects.filter(export=export).exclude(state__in=Share.FINAL_STATES).exists():
        return  # a later share reused it meanwhile
    try:
        creds = credentials_for(export.account, purpose="delete export files")
        deleted = outscale.delete_export_objects(creds=creds, bucket=export.bucket, prefix=export.prefix)
    except outscale.CloudError as exc:
        record(action="export.cleanup_failed", outcome="failed", actor=None, team=export.account.team,
               target=AuditTarget("transfers.export", str(export.public_id), f"export of {export.source_image_id}"),
               cloud_request_ids=list(exc.request_ids), details={"reason": exc.user_message})
        return
    with transaction.atomic():
        if Export.objects.filter(pk=export.pk, cleaned_at__isnull=True).update(cleaned_at=timezone.now()):
            record(action="export.cleaned", actor=None, team=export.account.team,
                   target=AuditTarget("transfers.export", str(export.public_id), f"export of {export.source_image_id}"),
                   cloud_request_ids=list(deleted.request_ids), details={"objects_deleted": deleted.count})
