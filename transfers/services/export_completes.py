"""An export's successful end: its manifest read, the export completed, its shares offered and
the auto-accepted imports handed to the caller to start (exports.py's sweep, export_begin for a
reused export). The failed end is export_ends.py.

One look at an account can see many exports end. Reading their manifests is a cloud call each
(the deadline is in the manifest's signatures); made one after the other, the last export's
imports would wait for every read before them, so a look reads them side by side first
(`read_manifests`), and only the database work is done in turn.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

import outscale
from audit import recorder
from audit.recorder import record
from transfers import errors, events, notifications, rules, scheduling
from transfers.models import Export, Recipient, Share
from transfers.services import import_offers, object_grants, polling
from transfers.services.export_ends import export_failed, export_target

logger = logging.getLogger(__name__)

# What a manifest's deadline is when it cannot be read from the manifest itself: its snapshot links
# live 7 days (the SigV4 maximum) from the export's completion, less a margin for the clocks.
MANIFEST_LIFETIME = timedelta(seconds=604_800)
MANIFEST_DEADLINE_MARGIN = timedelta(minutes=5)


@dataclass
class Manifest:
    """What the cloud said about a completed export's manifest (cloud calls only, no database)."""

    key: str = ""
    deadline: datetime | None = None  # None when the manifest holds no pre-signed link
    unreadable: str = ""  # why the deadline could not be read, when it could not
    error: outscale.CloudError | None = None
    request_ids: list = field(default_factory=list)


def read_manifest(*, creds, export: Export, task) -> Manifest:
    with outscale.record_request_ids() as request_ids:
        try:
            key = task.manifest_key or outscale.find_manifest_key(
                creds=creds, bucket=export.bucket, prefix=task.prefix or export.prefix).key
            if not key:
                raise outscale.NotFound("The export finished but its manifest is missing from the bucket.")
            try:
                return Manifest(key=key, deadline=outscale.manifest_deadline(
                    creds=creds, bucket=export.bucket, key=key).deadline, request_ids=request_ids)
            except outscale.InvalidInput as exc:  # not JSON, too large: the export itself is fine
                return Manifest(key=key, unreadable=exc.user_message, request_ids=request_ids)
        except outscale.CloudError as exc:
            return Manifest(error=exc, request_ids=request_ids)


def read_manifests(*, creds, ended: list[tuple[Export, object]]) -> dict[int, Manifest]:
    """The manifests of the exports one look saw complete ((export, task) pairs), read side by
    side: {export.pk: Manifest}. Threads make cloud calls only; the database is left to the caller."""
    read: dict[int, Manifest] = {}

    def one(pair):
        export, task = pair
        read[export.pk] = read_manifest(creds=creds, export=export, task=task)

    polling.run_each(one, ended, what="read manifest", threads=len(ended))
    return read


class ManifestNotRead(Exception):
    """The read of an export's manifest raised (a bug; `polling.run_each` logged it)."""


def export_complete(*, export: Export, manifest: Manifest | None, handoff: list | None = None) -> None:
    """Complete an export the cloud says is done, with its manifest as `read_manifests` read it.

    It runs inside the look's transaction, so it makes no cloud call: a manifest whose read raised
    (None) is counted against its export, whose next look reads it again."""
    if manifest is None:
        raise ManifestNotRead(f"The manifest of export {export.public_id} could not be read.")
    account = export.account
    if manifest.error is not None:
        if manifest.error.retryable:
            polling.postpone([export], manifest.error.user_message)
        else:
            export_failed(export, manifest.error.user_message, manifest.error.request_ids)
        return
    now = timezone.now()
    key, deadline = manifest.key, manifest.deadline
    message, details = "", {}
    if deadline is None:
        # Never a reason to stall the account's sweep: assume the 7 days from the last look that
        # saw the export still running (it completed after that look), and say so.
        deadline = export.updated_at + MANIFEST_LIFETIME - MANIFEST_DEADLINE_MARGIN
        reason = manifest.unreadable or "it holds no pre-signed link"
        message = errors.MANIFEST_DEADLINE_ASSUMED.format(reason=reason.rstrip("."),
                                                          when=f"{deadline:%Y-%m-%d %H:%M} UTC")
        details = {"manifest_deadline_assumed": True, "reason": reason}
        logger.warning("Export %s: %s", export.public_id, message)
    # Hundreds of shares may wait on one export: their events are written together at the end.
    with recorder.atomic():
        changes = {"state": Export.State.COMPLETED, "progress": 100, "manifest_key": key, "completed_at": now,
                   "manifest_deadline": deadline, "next_poll_at": None, "state_message": message[:500],
                   "updated_at": now}
        if not Export.objects.filter(pk=export.pk, state=Export.State.RUNNING).update(**changes):
            return
        for name, value in changes.items():  # what was written, without reading the row again
            setattr(export, name, value)
        record(action="export.completed", actor=None, team=account.team, target=export_target(export),
               cloud_request_ids=list(manifest.request_ids),
               details={"task_id": export.task_id, "manifest_deadline": deadline.isoformat(), **details})
        shares = list(Share.objects.filter(export=export, state=Share.State.EXPORTING).select_related("team"))
        shares_ready(shares=shares, export=export, handoff=handoff)
        if export.copy_image_id:
            # The files are in the bucket: the copy-first image has done its job (cleanup.py).
            scheduling.enqueue("transfers.jobs.export_cleanup_job", str(export.public_id),
                               job_id=f"export-copy-delete-{export.public_id}")


def shares_ready(*, shares: list[Share], export: Export, handoff: list | None = None) -> None:
    """The manifest exists: offer it to every recipient of these shares (in the caller's transaction).

    Auto-accepted imports get a start job each, or, when the caller passes ``handoff``, their ids
    are added to it and the caller starts them itself once this transaction has committed.
    """
    if not shares:
        return
    now = timezone.now()
    ids = [share.pk for share in shares]
    Share.objects.filter(pk__in=ids).update(state=Share.State.READY, state_message="", updated_at=now)
    # The recipients the export serves; a same-Region copy was offered when its grant was made (grants.py).
    Recipient.objects.filter(share__in=ids, state=Recipient.State.WAITING, method__in=Recipient.EXPORT_METHODS) \
        .update(state=Recipient.State.OFFERED, updated_at=now)
    for share in shares:
        share.state = Share.State.READY
        record(action="share.offered", actor=None, team=share.team, target=share,
               details={"export": str(export.public_id), "link_valid_until": export.manifest_deadline.isoformat()})
    auto = Recipient.objects.filter(rules.STARTS_WITHOUT_ANSWER, share__in=ids, state=Recipient.State.OFFERED,
                                    kind=Recipient.Kind.TEAM, method__in=Recipient.EXPORT_METHODS) \
        .select_related("team", "target_account", "share")
    begun = import_offers.imports_begin(recipients=list(auto.order_by("pk")), actor=None, auto=True,
                                  enqueue=handoff is None)
    if handoff is not None:
        handoff.extend(recipient.public_id for recipient in begun)
    object_grants.object_grants_begin(share_ids=ids)  # external accounts served by an object ACL
    events.emit("share.ready", ids, occasion=str(export.public_id))
    notifications.later("share_ready", ids)
