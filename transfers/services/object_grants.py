"""External delivery without a bearer link: an object ACL (OUTSCALE's "Copying an OMI Across Regions":
the owner gives "the path to the OMI in the OOS bucket, if the other user's account is in the same
Region. This account must have the permissions to access this OMI", see "Configuring an Object ACL").

An external recipient in the source account's Region that gave its OOS user ID (the S3 canonical
id OUTSCALE's ACLs name a grantee by) is served this way (``external_method``, at request time).
Once its export completes, the source account's keys:

1. check that OOS reports the OOS user ID as the approved OUTSCALE account id (a probe object of
   no content, granted, read back and deleted: nothing of value is granted to a wrong id);
2. grant READ on the manifest and on the snapshot objects it lists (never beyond the export's
   prefix) to that id;
3. record ``acl_granted_at`` and one ``link.acl_granted`` event with the RequestIds, and mark the
   recipient completed: the share page shows the full OOS path and the commands, no link.

The read is taken back at the manifest's deadline or when the files are deleted
(object_revokes.py, the clean-up's and the reconciler's hook).

Exactly once, crash-safe: the grant is claimed by a conditional UPDATE (a lease in next_poll_at,
one more start_tries) before any cloud call; a grant is idempotent (an id that already reads an
object writes nothing), so a run that died is simply run again once its lease has run out, and
``acl_granted_at`` is set, with its event, by one conditional UPDATE. Changes to one export's
ACLs are serialised (``object_revokes.export_acl_lock``).
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from audit import recorder
from audit.recorder import record
from transfers import scheduling
from transfers.models import Export, Recipient
from transfers.services import bounded, polling
from transfers.services.object_revokes import claim, export_acl_lock, lease_free
from transfers.services.share_state import share_refresh

REASON_OBJECT_ACL = ("An account outside the portal in the source's Region ({region}) that gave its OOS user ID: "
                     "it is granted read on the export's manifest and snapshots (an object ACL) and imports from "
                     "the plain OOS path. No bearer link.")
MSG_GRANTED = "Read on the export's files granted to account {account} until {when} UTC: it imports from the OOS path."
MSG_NOT_THEIR_ID = ("OOS says the OOS user ID given for account {account} belongs to {other}: nothing was granted. "
                    "Ask for a new request with that account's own OOS user ID.")
MSG_GRANT_REFUSED = "The read grant for account {account} could not be made: {reason}"

WAITING = Q(method=Recipient.Method.OBJECT_ACL, state=Recipient.State.OFFERED, acl_granted_at__isnull=True)


def external_method(*, source_region: str, recipient: Recipient) -> tuple[str, str] | None:
    """OBJECT_ACL, and why, for an external recipient this method serves; None for any other."""
    if recipient.kind == Recipient.Kind.EXTERNAL and recipient.external_region == source_region \
            and recipient.external_oos_user_id:
        return Recipient.Method.OBJECT_ACL, REASON_OBJECT_ACL.format(region=source_region)
    return None


def _fail_grant(recipient: Recipient, message: str) -> None:
    grant_failed(recipient, message, ())


OBJECT_GRANT = bounded.Step("object grant", Recipient, WAITING, ("team", "share__team", "share__export"), _fail_grant,
                            claims="start_tries")


def object_grants_begin(*, share_ids) -> None:
    """The export of these shares completed: queue a grant for each of their object-ACL recipients
    (in the caller's transaction; the jobs are sent on commit)."""
    for public_id in Recipient.objects.filter(WAITING, share__in=share_ids).values_list("public_id", flat=True):
        scheduling.enqueue("transfers.jobs.object_grant_job", str(public_id), job_id=f"object-grant-{public_id}")


def object_grant(*, recipient_id) -> None:
    """Grant one external account read on its export's manifest and snapshots. Safe to run twice."""
    recipient = Recipient.objects.select_related("share__team", "share__export__account__team") \
        .filter(WAITING, public_id=recipient_id).first()
    if recipient is None or recipient.share_id is None:
        return
    export = recipient.share.export
    if export is None or export.state != Export.State.COMPLETED or export.cleanup_claimed_at \
            or export.manifest_deadline <= timezone.now():
        return  # not yet, or too late (the reconciler expires what waited past the deadline)
    if not claim(recipient, WAITING):
        return  # another run holds it
    user_id, account = recipient.external_oos_user_id, recipient.external_account_id
    keys: tuple[str, ...] = ()
    creds = None
    with export_acl_lock(export.pk), outscale.record_request_ids() as request_ids:
        try:
            creds = credentials_for(export.account, purpose="grant read on export")
            grantee = outscale.object_grantee(creds=creds, bucket=export.bucket, prefix=export.prefix,
                                              user_id=user_id)
            if grantee.account_id != account:
                other = f"account {grantee.account_id}" if grantee.account_id else "no account OOS names"
                grant_failed(recipient, MSG_NOT_THEIR_ID.format(account=account, other=other), list(request_ids))
                return
            keys = outscale.manifest_object_keys(creds=creds, bucket=export.bucket, manifest_key=export.manifest_key,
                                                 prefix=export.prefix).keys
            outscale.grant_object_read(creds=creds, bucket=export.bucket, keys=keys, user_id=user_id)
        except outscale.CloudError as exc:
            _not_granted(recipient, export, exc, creds=creds, keys=keys)
            return
    _granted(recipient, export, keys=keys, request_ids=list(request_ids))


def _granted(recipient: Recipient, export: Export, *, keys: tuple[str, ...], request_ids: list) -> None:
    now = timezone.now()
    with recorder.atomic():
        # Noted even if the recipient moved on meanwhile (expired at the deadline): the grant exists,
        # and its removal goes by acl_granted_at.
        if not Recipient.objects.filter(pk=recipient.pk, acl_granted_at__isnull=True).update(
                acl_granted_at=now, next_poll_at=None, updated_at=now):
            return
        message = MSG_GRANTED.format(account=recipient.external_account_id,
                                     when=f"{export.manifest_deadline:%Y-%m-%d %H:%M}")
        Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.OFFERED).update(
            state=Recipient.State.COMPLETED, completed_at=now, state_message=message)
        record(action="link.acl_granted", actor=None, team=recipient.share.team, target=recipient.share,
               cloud_request_ids=request_ids,
               details={"recipient": str(recipient.public_id), "account_id": recipient.external_account_id,
                        "oos_user_id": recipient.external_oos_user_id, "bucket": export.bucket,
                        "manifest_key": export.manifest_key, "objects": len(keys),
                        "until": export.manifest_deadline.isoformat()})
        share_refresh(share_id=recipient.share_id)


def _not_granted(recipient: Recipient, export: Export, exc: outscale.CloudError, *, creds, keys) -> None:
    if exc.retryable:
        tries = recipient.start_tries + 1
        if tries < polling.MAX_START_ATTEMPTS:
            delay = polling.start_retry_delay(tries)
            with transaction.atomic():
                if Recipient.objects.filter(WAITING, pk=recipient.pk).update(
                        next_poll_at=timezone.now() + timedelta(seconds=delay),
                        state_message=f"{polling.WAITING_PREFIX}{exc.user_message}"[:500]):
                    scheduling.enqueue("transfers.jobs.object_grant_job", str(recipient.public_id),
                                       job_id=f"object-grant-{recipient.public_id}-{tries}", delay=delay)
            return
    if keys and creds is not None:
        # Some objects may already be readable: take them back now, or leave it to the removal.
        try:
            outscale.remove_object_read(creds=creds, bucket=export.bucket, keys=keys,
                                        user_id=recipient.external_oos_user_id)
        except outscale.CloudError:
            Recipient.objects.filter(pk=recipient.pk, acl_granted_at__isnull=True).update(
                acl_granted_at=timezone.now())
    grant_failed(recipient, MSG_GRANT_REFUSED.format(account=recipient.external_account_id,
                                                     reason=exc.user_message), list(exc.request_ids))


def grant_failed(recipient: Recipient, message: str, request_ids) -> None:
    """The grant will not be made: the recipient fails with the reason, recorded once."""
    now = timezone.now()
    with recorder.atomic():
        if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.OFFERED,
                                        method=Recipient.Method.OBJECT_ACL).update(
                state=Recipient.State.FAILED, state_message=message[:500], completed_at=now, next_poll_at=None,
                updated_at=now):
            return
        record(action="link.acl_granted", outcome="failed", actor=None, team=recipient.share.team,
               target=recipient.share, cloud_request_ids=list(request_ids),
               details={"recipient": str(recipient.public_id), "account_id": recipient.external_account_id,
                        "reason": message})
        share_refresh(share_id=recipient.share_id)


def object_grants_due(*, now) -> int:
    """The reconciler's part: queue the grants of completed exports that no run holds (never sent,
    lost with Redis, or held by a run that died a grace period ago)."""
    overdue = now - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    due = Recipient.objects.filter(WAITING, share__export__state=Export.State.COMPLETED,
                                   share__export__manifest_deadline__gt=now,
                                   share__export__cleanup_claimed_at__isnull=True) \
        .filter(Q(next_poll_at__lt=overdue) | Q(next_poll_at__isnull=True, updated_at__lt=overdue))
    count = 0
    for public_id in due.values_list("public_id", flat=True):
        with transaction.atomic():
            scheduling.enqueue("transfers.jobs.object_grant_job", str(public_id),
                               job_id=f"object-grant-{public_id}-r{int(now.timestamp())}")
        count += 1
    return count


__all__ = ["OBJECT_GRANT", "external_method", "lease_free", "object_grant", "object_grants_begin",
           "object_grants_due"]
