"""An export's failed end: one conditional update, its audit event, the shares waiting on it failed
and their recipients cancelled, an email queued. Below exports.py and bounded.py, which both end
exports this way (a successful end is export_completes.export_complete, which offers the copy).
"""

from django.utils import timezone

from audit import recorder
from audit.recorder import AuditTarget, record
from transfers import notifications
from transfers.models import Export, Recipient, Share
from transfers.services.share_state import shares_refresh


def export_target(export: Export) -> AuditTarget:
    return AuditTarget("transfers.export", str(export.public_id), f"export of {export.source_image_id}")


def export_failed(export: Export, message: str, request_ids=(), *, outcome: str = "failed") -> None:
    """Fail an export still in flight, and the shares waiting on it (their recipients cancelled)."""
    now = timezone.now()
    with recorder.atomic():  # the shares and recipients are updated after export.failed is recorded
        if not Export.objects.filter(pk=export.pk, state__in=Export.IN_FLIGHT).update(
                state=Export.State.FAILED, state_message=message[:500], next_poll_at=None, updated_at=now):
            return
        record(action="export.failed", outcome=outcome, actor=None, team=export.account.team,
               target=export_target(export), cloud_request_ids=list(request_ids),
               details={"reason": message, "bucket": export.bucket})
        shares = list(Share.objects.filter(export=export, state=Share.State.EXPORTING).values_list("pk", flat=True))
        Recipient.objects.filter(share__in=shares, state=Recipient.State.WAITING,
                                 method__in=Recipient.EXPORT_METHODS).update(state=Recipient.State.CANCELLED)
        # A share with same-Region copies (grants.py) goes on without the export: it follows them.
        going_on = set(Recipient.objects.filter(share__in=shares).exclude(method__in=Recipient.EXPORT_METHODS)
                       .values_list("share_id", flat=True))
        failed = [pk for pk in shares if pk not in going_on]
        Share.objects.filter(pk__in=failed).update(state=Share.State.FAILED, state_message=message[:500],
                                                   updated_at=now)
        Share.objects.filter(pk__in=going_on).update(state=Share.State.IMPORTING, updated_at=now)
        shares_refresh(share_ids=going_on)
        notifications.later("share_failed", failed)
