"""A share's state follows its recipients' once it is offered: ready while any is still offered,
importing while any imports, then completed or failed; an ended share may free its export."""

from collections import defaultdict
from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from audit.recorder import record
from transfers import scheduling
from transfers.models import Recipient, Share
from transfers.services import grant_state
from transfers.services.cleanup import exports_cleanup_if_done


def share_refresh(*, share_id) -> None:
    """Derive a ready/importing share's state from its recipients (in the caller's transaction)."""
    if share_id is not None:
        shares_refresh(share_ids=[share_id])


def shares_refresh(*, share_ids) -> None:
    """``share_refresh`` for many shares: the same few queries for one or hundreds (a sweep that
    completes hundreds of imports), one UPDATE per new state, one cleanup check per export.

    A share that stays importing is neither locked nor read (``_still_importing``): a release's
    thousand sweeps all end imports of the same ten shares, and each locked them and read the
    states of all their 10,000 recipients."""
    # A launch grant whose copies just ended is removed now, whatever the share's state (grant_releases.py).
    grant_state.grants_release_later(share_ids=share_ids)
    ids = set(share_ids) - _still_importing(share_ids)
    if not ids:
        return
    # Locked, the share's state is derived from what committed before: two transactions that end
    # its last imports take turns here, and the second sees the first's ends.
    shares = list(Share.objects.select_for_update(of=("self",)).select_related("team")
                  .filter(pk__in=ids, state__in=[Share.State.READY, Share.State.IMPORTING]).order_by("pk"))
    if not shares:
        return
    states: dict[int, set[str]] = defaultdict(set)
    for share_id, state in Recipient.objects.filter(share__in=shares).values_list("share_id", "state").distinct():
        states[share_id].add(state)
    moves: dict[tuple[str, str], list[int]] = defaultdict(list)
    ended_exports = set()
    for share in shares:
        new, message = _derived_state(states[share.pk])
        if new != share.state:
            moves[new, message].append(share.pk)
            if new in Share.FINAL_STATES:
                record(action=f"share.{new}", actor=None, team=share.team, target=share,
                       details={"recipients": sorted(states[share.pk])})
        if new in Share.FINAL_STATES and share.export_id:
            ended_exports.add(share.export_id)
    now = timezone.now()
    for (new, message), pks in moves.items():
        Share.objects.filter(pk__in=pks).update(state=new, state_message=message, updated_at=now)
    if ended_exports:
        exports_cleanup_if_done(export_ids=ended_exports)


def _still_importing(share_ids) -> set[int]:
    """The importing shares among these that stay importing, whatever commits meanwhile: each has
    a recipient still importing that this transaction now locks (``SKIP LOCKED``: never one that
    another transaction holds, which may be ending it) until it commits. Whoever ends that
    recipient waits for this commit at its conditional update, then refreshes the share and sees
    what this transaction ended.

    The witness is never due for a look within the grid cell: a look's claim skips a locked row,
    which would wait for the account's next look. It is the one whose look is furthest off (or
    whose create is still on its way)."""
    due_by = timezone.now() + timedelta(seconds=scheduling.slot_seconds())
    not_due = Q(next_poll_at__isnull=True) | Q(next_poll_at__gt=due_by)
    importing = Share.objects.filter(pk__in=share_ids, state=Share.State.IMPORTING).values_list("pk", flat=True)
    return {share_id for share_id in importing
            if Recipient.objects.select_for_update(skip_locked=True)
            .filter(not_due, share_id=share_id, state=Recipient.State.IMPORTING)
            .order_by(F("next_poll_at").desc(nulls_first=True)).values_list("pk", flat=True)[:1]}


def _derived_state(states: set[str]) -> tuple[str, str]:
    if Recipient.State.IMPORTING in states:
        return Share.State.IMPORTING, ""
    if states & {Recipient.State.OFFERED, Recipient.State.WAITING}:
        return Share.State.READY, ""
    if Recipient.State.COMPLETED in states:
        partly = Recipient.State.FAILED in states
        return Share.State.COMPLETED, "Some recipients failed to import." if partly else ""
    if Recipient.State.FAILED in states:
        return Share.State.FAILED, "Every import failed."
    return Share.State.COMPLETED, "No recipient imported the image."
