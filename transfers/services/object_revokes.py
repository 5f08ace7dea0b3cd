"""Removing the read an object ACL gave an external account (object_grants.py gives it), once the
export's manifest is dead (its 7-day deadline) or its files are being deleted (cleanup.py).

A removal reads each of the export's objects' ACL and writes it back without that account's READ
(outscale/storage.py): harmless twice, and an object already deleted holds no grant. It is
claimed like a start (a lease in next_poll_at, by a conditional UPDATE) and recorded once
(``acl_removed_at`` set by a conditional UPDATE, one ``link.acl_removed`` event with its RequestIds).
Changes to one export's ACLs are serialised by a PostgreSQL advisory lock (``export_acl_lock``):
a put replaces the whole list, so two at once would lose one.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from audit import recorder
from audit.recorder import record
from transfers import scheduling
from transfers.models import Export, Recipient
from transfers.services import locks, polling

logger = logging.getLogger(__name__)

# The most calls a removal (or a grant) makes per object: read the ACL, write it.
CALLS_PER_OBJECT = 2
LEASE_CALLS = 16

MSG_REMOVED = "Read on the export's files was granted until {when} UTC and is now removed."
MSG_REMOVE_FAILED = ("The read grant on the export's files could not be removed ({reason}); OMI Portal stopped "
                     "trying. Remove account {account}'s grants on {bucket}/{prefix} by hand.")


def export_acl_lock(export_pk: int):
    """Only one change to an export's object ACLs at a time, across workers (locks.py: a session
    lock that holds no row and goes with the connection if the worker dies)."""
    return locks.advisory_locks([f"export-acl:{export_pk}"])


def lease_free(now) -> Q:
    return Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now)


def claim(recipient: Recipient, condition: Q) -> bool:
    """Take the row for one run: a lease in next_poll_at, only if no run holds it."""
    now = timezone.now()
    return bool(Recipient.objects.filter(condition, lease_free(now), pk=recipient.pk).update(
        next_poll_at=polling.start_lease_until(now, calls=LEASE_CALLS), start_tries=F("start_tries") + 1))


GRANTED = Q(method=Recipient.Method.OBJECT_ACL, acl_granted_at__isnull=False, acl_removed_at__isnull=True)


def removal_due(now) -> Q:
    """Grants whose export's manifest is dead or whose files are going: time to take them back."""
    return GRANTED & (Q(share__export__manifest_deadline__lte=now) | Q(share__export__cleanup_claimed_at__isnull=False)
                      | Q(share__export__cleaned_at__isnull=False))


def object_grant_remove(*, recipient_id) -> None:
    """Take back one external account's read on its export's files. Safe to run twice."""
    recipient = Recipient.objects.select_related("share__team", "share__export__account__team") \
        .filter(GRANTED, public_id=recipient_id).first()
    if recipient is None or recipient.share_id is None or not claim(recipient, GRANTED):
        return
    export = recipient.share.export
    with export_acl_lock(export.pk), outscale.record_request_ids() as request_ids:
        try:
            creds = credentials_for(export.account, purpose="remove read on export")
            keys = export_keys(creds, export)
            outscale.remove_object_read(creds=creds, bucket=export.bucket, keys=keys,
                                        user_id=recipient.external_oos_user_id)
        except outscale.CloudError as exc:
            _not_removed(recipient, export, exc)
            return
    _removed(recipient, export, request_ids=list(request_ids), objects=len(keys), already_gone=not keys)


def export_keys(creds, export: Export) -> tuple[str, ...]:
    """Every object under the export's prefix: a superset of what was granted (removing a READ
    that is not there writes nothing); none once the files are deleted."""
    try:
        keys = outscale.list_export_keys(creds=creds, bucket=export.bucket, prefix=export.prefix).keys
    except outscale.NotFound:
        return ()
    return tuple(keys)


def _removed(recipient: Recipient, export: Export, *, request_ids: list, objects: int, already_gone: bool) -> None:
    now = timezone.now()
    with recorder.atomic():
        if not Recipient.objects.filter(GRANTED, pk=recipient.pk).update(acl_removed_at=now, next_poll_at=None,
                                                                          updated_at=now):
            return
        record(action="link.acl_removed", actor=None, team=recipient.share.team, target=recipient.share,
               cloud_request_ids=request_ids,
               details={"recipient": str(recipient.public_id), "account_id": recipient.external_account_id,
                        "bucket": export.bucket, "prefix": export.prefix, "objects": objects,
                        "files_deleted": already_gone})


def _not_removed(recipient: Recipient, export: Export, exc: outscale.CloudError) -> None:
    """Throttled or unavailable: the reconciler comes back after its grace period. A refusal counts
    against the row; after OMIPORTAL_STEP_MAX_ATTEMPTS the portal stops and the trail says so."""
    now = timezone.now()
    back = now + timedelta(seconds=polling.start_retry_delay(recipient.start_tries))
    with recorder.atomic():
        if exc.retryable:
            Recipient.objects.filter(GRANTED, pk=recipient.pk).update(next_poll_at=back)
            return
        Recipient.objects.filter(GRANTED, pk=recipient.pk).update(next_poll_at=back,
                                                                  step_errors=F("step_errors") + 1)
        errors_counted = Recipient.objects.filter(pk=recipient.pk).values_list("step_errors", flat=True).first()
        if errors_counted is not None and errors_counted >= int(settings.OMIPORTAL_STEP_MAX_ATTEMPTS):
            message = MSG_REMOVE_FAILED.format(reason=exc.user_message.rstrip("."), bucket=export.bucket,
                                               account=recipient.external_account_id, prefix=export.prefix)
            Recipient.objects.filter(pk=recipient.pk).update(state_message=message[:500], updated_at=now)
            record(action="link.acl_removed", outcome="failed", actor=None, team=recipient.share.team,
                   target=recipient.share, cloud_request_ids=list(exc.request_ids),
                   details={"recipient": str(recipient.public_id), "account_id": recipient.external_account_id,
                            "reason": exc.user_message, "attempts": errors_counted})


def object_grants_remove_for_export(*, export: Export) -> None:
    """The clean-up's hook, before the files are deleted: take back every grant still on them."""
    for public_id in Recipient.objects.filter(GRANTED, share__export=export).values_list("public_id", flat=True):
        object_grant_remove(recipient_id=public_id)


def object_grants_gone_with_files(*, export: Export) -> None:
    """The clean-up deleted the export's files: a grant that could not be removed went with them."""
    for recipient in Recipient.objects.select_related("share__team").filter(GRANTED, share__export=export):
        _removed(recipient, export, request_ids=[], objects=0, already_gone=True)


def object_revokes_due(*, now) -> int:
    """The reconciler's part: queue the removal of every grant that is due and that no run holds
    (a lease a grace period late is a run that died)."""
    overdue = now - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    due = Recipient.objects.filter(removal_due(now), step_errors__lt=int(settings.OMIPORTAL_STEP_MAX_ATTEMPTS)) \
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lt=overdue))
    count = 0
    for public_id in due.values_list("public_id", flat=True):
        with transaction.atomic():
            scheduling.enqueue("transfers.jobs.object_grant_remove_job", str(public_id),
                               job_id=f"object-grant-remove-{public_id}-r{int(now.timestamp())}")
        count += 1
    return count
