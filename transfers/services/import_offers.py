"""A recipient's life, 1 of 4: the beginning. A recipient is offered the copy when its share's
export completes (export_completes.shares_ready, which accepts at once for teams that auto-accept), or is
created by a pasted link (external_links.link_import_create). Here a member of its team accepts
or declines the offer, or retries a failed import: accepting or retrying moves it to IMPORTING
and queues its start (or leaves it to the hand-off); declining ends it.

Next: import_starts.py (the start), then import_sweeps.py (the looks) and import_ends.py (the
end). The words are defined in transfers/services/__init__.py.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from accounts.access import require
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from transfers import errors, rules, scheduling
from transfers.models import Recipient, Share
from transfers.services import binding, grant_state
from transfers.services.import_ends import share_target
from transfers.services.share_state import share_refresh


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
        # A retry re-opens a share that failed because its only imports failed (a share whose copies
        # all stay in their Region has no export).
        Share.objects.filter(Q(export__state="completed") | Q(export__isnull=True),
                             pk__in={r.share_id for r in moved if r.share_id},
                             state__in=[Share.State.READY, Share.State.FAILED]) \
            .update(state=Share.State.IMPORTING, updated_at=now)
        if retry:  # a copy by launch permission whose grant was removed when it failed is granted again
            grant_state.grants_reopen(recipients=moved)
        first = "import.auto_accepted" if auto else "import.accepted"
        for recipient in moved:
            action = "import.retried" if recipient.attempt > 1 else first
            record(action=action, actor=actor, team=recipient.team, target=share_target(recipient),
                   details={"recipient": str(recipient.public_id), "account": recipient.target_account.label,
                            "image_name": recipient.image_name, "attempt": recipient.attempt})
            if enqueue:
                # A direct copy's start is one CreateImage whose end is near (copy_watch.py): on the
                # queue workers take first, it no longer waits behind a burst of grant jobs.
                queue = "poll" if recipient.method == Recipient.Method.DIRECT else "default"
                scheduling.enqueue("transfers.jobs.import_start_job", str(recipient.public_id), queue=queue,
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
    refusal = rules.retry_refusal(recipient)
    if refusal:
        raise errors.ShareError(refusal)


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
