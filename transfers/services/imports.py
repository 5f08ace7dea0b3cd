"""The recipient side: accept or decline, import with the recipient's keys, watch it."""

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

import outscale
from accounts.keys import credentials_for, opened_once
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess, require
from audit import recorder
from audit.recorder import record
from transfers import errors, scheduling
from transfers.models import Recipient, Share
from transfers.services import binding, bounded, polling
from transfers.services.import_ends import import_failed, import_tag, imports_complete, share_target
from transfers.services.share_state import share_refresh

logger = logging.getLogger(__name__)


def _image_name(recipient: Recipient) -> str:
    base = recipient.share.copy_name if recipient.share_id else recipient.image_name
    if recipient.attempt <= 1:
        return base
    suffix = f" (retry {recipient.attempt})"
    return base[: 128 - len(suffix)] + suffix


def import_begin(*, recipient: Recipient, actor, auto: bool = False, enqueue: bool = True,
                 retry: bool = False) -> None:
    """OFFERED (or, for a ``retry``, FAILED) → IMPORTING, in the caller's transaction; the job
    follows, unless the caller starts the import itself after commit (``enqueue=False``, the
    hand-off)."""
    if not imports_begin(recipients=[recipient], actor=actor, auto=auto, enqueue=enqueue, retry=retry):
        recipient.refresh_from_db()
        message = errors.NOT_RETRYABLE if retry else errors.NOT_OFFERED
        raise errors.ShareConflict(message.format(state=recipient.get_state_display().lower()))


def imports_begin(*, recipients: list[Recipient], actor, auto: bool = False, enqueue: bool = True,
                  retry: bool = False) -> list[Recipient]:
    """``import_begin`` for many recipients at once (an export's hand-off offers hundreds): one
    UPDATE for those still offered (or, for a ``retry``, failed), each keeping its own image name,
    one for their shares. Returns the recipients that moved; the others are left as they are.

    Accepting moves only an OFFERED recipient: a FAILED one goes through ``recipient_retry``'s
    checks (deadline, files still there, a pasted link not yet wiped), or it would start an
    import that can only fail again."""
    states = [Recipient.State.FAILED] if retry else [Recipient.State.OFFERED]
    if not recipients:
        return []
    now = timezone.now()
    # recorder.atomic: a refusal is recorded before the other rows are locked.
    with recorder.atomic():
        # An account re-keyed, moved or invalid since the approval gets no import.
        recipients = binding.imports_allowed(recipients, states=states)
        movable = set(Recipient.objects.select_for_update().filter(pk__in=[r.pk for r in recipients], state__in=states)
                      .values_list("pk", flat=True))
        moved = [r for r in recipients if r.pk in movable]
        for attempt in sorted({r.attempt + 1 for r in moved}):
            group = [r for r in moved if r.attempt + 1 == attempt]
            for recipient in group:
                recipient.attempt = attempt
            names = {r.pk: _image_name(r) for r in group}
            values = {"state": Recipient.State.IMPORTING, "attempt": attempt, "image_id": "", "state_message": "",
                      "started_at": now, "completed_at": None, "poll_interval": 0, "start_tries": 0, "step_errors": 0,
                      "updated_at": now,
                      "next_poll_at": now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS),
                      **({"decided_by": actor, "decided_at": now} if attempt == 1 else {})}
            if attempt == 1 and all(r.share_id for r in group):  # each takes its share's copy name: one UPDATE
                copy_name = Subquery(Share.objects.filter(pk=OuterRef("share_id")).values("copy_name")[:1])
                Recipient.objects.filter(pk__in=names).update(image_name=copy_name, **values)
            else:  # retries and links, one at a time as people ask for them
                for pk, name in names.items():
                    Recipient.objects.filter(pk=pk).update(image_name=name, **values)
            for recipient in group:  # what the row now holds, without reading it (and its relations) again
                for field, value in values.items():
                    setattr(recipient, field, value)
                recipient.image_name = names[recipient.pk]
        # A retry re-opens a share that failed because its only imports failed.
        Share.objects.filter(pk__in={r.share_id for r in moved if r.share_id},
                             state__in=[Share.State.READY, Share.State.FAILED], export__state="completed") \
            .update(state=Share.State.IMPORTING, updated_at=now)
        first = "import.auto_accepted" if auto else "import.accepted"
        for recipient in moved:
            action = "import.retried" if recipient.attempt > 1 else first
            record(action=action, actor=actor, team=recipient.team, target=share_target(recipient),
                   details={"recipient": str(recipient.public_id), "account": recipient.target_account.label,
                            "image_name": recipient.image_name, "attempt": recipient.attempt})
            if enqueue:
                scheduling.enqueue("transfers.jobs.import_start_job", str(recipient.public_id),
                                   job_id=f"import-start-{recipient.public_id}-{recipient.attempt}")
    return moved


def _recipient_access(access: TeamAccess, recipient: Recipient) -> None:
    require(access, Capability.ACCEPT_SHARE, target=share_target(recipient))


def _refuse_if_changed(recipient: Recipient, state) -> None:
    """Refuse (the recipient fails, one denied event) when its account is no longer what was
    approved. Outside the caller's transaction, so the refusal stays when the error is raised."""
    refusal = binding.import_refusal(recipient) if recipient.state == state else ""
    if refusal:
        binding.refuse_import(recipient, refusal, states=[state])
        raise errors.ShareError(refusal)


def recipient_accept(*, access: TeamAccess, recipient: Recipient) -> Recipient:
    """OFFERED → IMPORTING, and nothing else: a failed import is retried (``recipient_retry``)."""
    _recipient_access(access, recipient)
    _refuse_if_changed(recipient, Recipient.State.OFFERED)
    with transaction.atomic():
        moved = imports_begin(recipients=[recipient], actor=access.user)
    if not moved:
        _refuse_answer(access, recipient, action="import.accepted", message=errors.NOT_OFFERED)
    return recipient


def recipient_retry(*, access: TeamAccess, recipient: Recipient) -> Recipient:
    """FAILED → IMPORTING, once the retry's checks pass."""
    _recipient_access(access, recipient)
    _check_retryable(access, recipient)
    _refuse_if_changed(recipient, Recipient.State.FAILED)
    with transaction.atomic():
        moved = imports_begin(recipients=[recipient], actor=access.user, retry=True)
    if not moved:
        _refuse_answer(access, recipient, action="import.retried", message=errors.NOT_RETRYABLE)
    return recipient


def _refuse_answer(access: TeamAccess, recipient: Recipient, *, action: str, message: str) -> None:
    """The recipient is not in the state this answer moves (it moved on, or never was): nothing
    changes, nothing is enqueued, the attempt stays in the trail as denied (recorded outside any
    transaction of ours, so the error raised next takes nothing with it)."""
    recipient.refresh_from_db()
    record(action=action, outcome="denied", actor=access.user, team=access.team, target=share_target(recipient),
           details={"recipient": str(recipient.public_id), "reason": "wrong_state", "state": recipient.state})
    raise errors.ShareConflict(message.format(state=recipient.get_state_display().lower()))


def _check_retryable(access: TeamAccess, recipient: Recipient) -> None:
    if recipient.state != Recipient.State.FAILED:
        _refuse_answer(access, recipient, action="import.retried", message=errors.NOT_RETRYABLE)
    export = recipient.share.export if recipient.share_id else None
    deadline = export.manifest_deadline if export is not None else recipient.link_expires_at
    if deadline is None or deadline <= timezone.now() or (export is not None and export.cleaned_at) or \
            (export is None and not recipient.link_sealed):
        # Past the deadline, or the files (or the pasted link) are gone: only a new export helps.
        when = f"{deadline:%Y-%m-%d %H:%M} UTC" if deadline else "an unknown date"
        raise errors.ShareError(errors.LINK_EXPIRED.format(when=when))


@recorder.atomic()  # the share is locked (share_refresh) after import.declined is recorded
def recipient_decline(*, access: TeamAccess, recipient: Recipient, reason: str) -> Recipient:
    _recipient_access(access, recipient)
    if "\x00" in reason:
        raise errors.ShareError(errors.TEXT_NUL)
    now = timezone.now()
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.OFFERED).update(
            state=Recipient.State.DECLINED, decline_reason=reason[:500], decided_by=access.user, decided_at=now,
            updated_at=now):
        recipient.refresh_from_db()
        raise errors.ShareConflict(errors.NOT_OFFERED.format(state=recipient.get_state_display().lower()))
    recipient.refresh_from_db()
    record(action="import.declined", actor=access.user, team=access.team, target=share_target(recipient),
           details={"recipient": str(recipient.public_id), "reason": reason})
    share_refresh(share_id=recipient.share_id)
    return recipient


WATCHED = (Recipient.State.IMPORTING,)
WATCHABLE = Q(image_id__gt="")


def import_sweep(*, account_id) -> None:
    """One ReadImages call for every in-flight import into one account."""
    account = CloudAccount.objects.select_related("team").filter(public_id=account_id).first()
    if account is None:
        return
    rows = polling.claim(Recipient, account=account, states=WATCHED, extra=WATCHABLE, now=timezone.now())
    if rows:
        riders = polling.riders(Recipient, account=account, states=WATCHED, extra=WATCHABLE, taken=rows)
        # An error before any row could be looked at (the keys, the read) counts against each.
        with opened_once(), bounded.rows_errors(bounded.IMPORT_LOOK, rows):
            _observe(account, rows, riders)
    polling.schedule_next(Recipient, account, "import", WATCHED, WATCHABLE)


def _observe(account: CloudAccount, rows: list[Recipient], riders: list[Recipient]) -> None:
    try:
        creds = credentials_for(account, purpose="watch imports")
        images = outscale.read_images(creds=creds, account_id=account.account_id,
                                      image_ids=[r.image_id for r in (*rows, *riders)])
    except outscale.CloudError as exc:
        if not exc.retryable:
            for recipient in rows:
                import_failed(recipient, exc.user_message, exc.request_ids)
        else:
            polling.postpone(rows, exc.user_message)
        return
    # Riders that are still importing keep their own pace; the ones that ended join the rows.
    ended = {r.pk for r in riders if polling.image_ended(images.get(r.image_id))}
    rows = rows + polling.claim_riders(Recipient, riders, ended)
    available, waiting = [], defaultdict(list)  # waiting: next interval -> pks
    for recipient in rows:
        image = images.get(recipient.image_id)
        if image is None or image.state in ("failed", "deleted"):
            reason = (image.state_message if image else "") or "OUTSCALE could not import the image."
            with bounded.row_errors(bounded.IMPORT_LOOK, recipient):  # one bad row does not stop the others
                import_failed(recipient, reason, images.request_ids)
        elif image.state == "available":
            available.append(recipient)
        else:
            waiting[scheduling.next_interval(recipient.poll_interval)].append(recipient.pk)
    now = timezone.now()
    for interval, pks in waiting.items():  # imports started together back off together: one UPDATE
        Recipient.objects.filter(pk__in=pks, state=Recipient.State.IMPORTING).update(
            poll_interval=interval, next_poll_at=now + timedelta(seconds=interval), state_message="", updated_at=now)
    if not available:
        return
    # Each completion tags its OMI (one call each), side by side like the starts; then one
    # transaction records them all. A sweep that dies in between leaves them IMPORTING: the next
    # one tags them again (the same tags) and completes them.
    by_pk = Recipient.objects.select_related("share__source_account", "team").in_bulk([r.pk for r in available])
    tagged: list[tuple[Recipient, dict, list]] = []

    def tag(recipient):
        with bounded.row_errors(bounded.IMPORT_LOOK, recipient):
            import_tag(recipient, creds, tagged)

    polling.run_each(tag, list(by_pk.values()), what="tag import")
    try:
        imports_complete(tagged, images.request_ids)
    except Exception as exc:  # noqa: BLE001 - the others must not wait on one bad row: see below
        # The whole batch rolled back. Complete the rows one at a time, so that an error is
        # counted against the row that raises it (bounded.py) and the others complete.
        logger.warning("Completing %d imports together raised %s; completing them one at a time.", len(tagged),
                       type(exc).__name__)
        for one in tagged:
            with bounded.row_errors(bounded.IMPORT_LOOK, one[0]):
                imports_complete([one], images.request_ids)
