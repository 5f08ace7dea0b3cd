"""Walk the whole audit chain and say whether it is intact, and where it first breaks.

Reads in bounded memory (a server-side cursor on PostgreSQL, chunked fetches
on SQLite) in ``seq`` order. First the signed checkpoints (``checkpoints.py``)
are read and checked: each signature with a known key, each one linking to the
one before (``checkpoint_*`` reasons). Then, for each event, in this order:

1. ``gap``: its ``seq`` is not the previous one plus one (the first is 1). A
   deleted first or middle event shows up here, as the missing ``seq``.
2. ``broken_link``: its ``prev_hash`` is not the previous event's ``hash``
   (genesis: 64 zeros). Reordered or swapped events show up here or in 3.
3. ``hash_mismatch``: recomputing the hash of its fields gives something else.
   Any edited field, ``hash`` itself included, shows up here.
4. ``checkpoint_mismatch``: a signed checkpoint names this ``seq`` with another
   hash. A prefix rewritten with every later hash (and the head) recomputed
   passes 1-3 and shows up here.

Then the chain head row must name an event that exists with the same hash
(``head_mismatch``; ``head_missing`` if the row is gone), and the chain must
reach the latest checkpoint's seq (``checkpoint_beyond_chain``): a tail cut off
after a checkpoint, the head row rewound with it, is caught here. Finally every
``audit.checkpointed`` event must name a checkpoint that is in the store with the
same digest (``checkpoint_missing``).

Last, the events still waiting for their place in the chain (recorder._park): the chain
covers them only once chained, so one waiting longer than
``OMIPORTAL_AUDIT_PENDING_GRACE_SECONDS`` fails verification (``pending_stale``): the
chaining job is not running, or something holds the chain head for ever. Fewer, younger ones
are reported (``pending``) and do not fail it.

Checkpoints are read first, then the head, then the events, then the pending events, so
checkpoints and events written meanwhile are fine (an event chained during the walk is in
neither, or in one of them). When ``OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ``
is set, the chain starts after the signed checkpoint at that seq (README: retention).
"""

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, models
from django.utils import timezone

from audit import checkpoints as checkpoints_module
from audit import hashing
from audit import stored as stored_module
from audit.errors import AuditError
from audit.models import AuditChainHead, AuditEvent, AuditPendingEvent

GAP = "gap"
BROKEN_LINK = "broken_link"
HASH_MISMATCH = "hash_mismatch"
HEAD_MISMATCH = "head_mismatch"
HEAD_MISSING = "head_missing"
CHECKPOINT_MISMATCH = "checkpoint_mismatch"
CHECKPOINT_BEYOND_CHAIN = "checkpoint_beyond_chain"
CHECKPOINT_MISSING = "checkpoint_missing"
CHECKPOINT_UNREADABLE = "checkpoint_unreadable"
ARCHIVE_ANCHOR_MISSING = "archive_anchor_missing"
PENDING_STALE = "pending_stale"
# From checkpoints.check_chain:
CHECKPOINT_BAD_SIGNATURE = checkpoints_module.BAD_SIGNATURE
CHECKPOINT_UNKNOWN_KEY = checkpoints_module.UNKNOWN_KEY
CHECKPOINT_BROKEN_LINK = checkpoints_module.BROKEN_CHECKPOINT_LINK


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    count: int  # events checked
    last_seq: int  # the last good seq (0: none)
    first_bad_seq: int | None = None
    reason: str | None = None  # one of the module constants above
    message: str = ""
    checkpoint_number: int | None = None  # the bad checkpoint, or the latest one checked when ok
    checkpoint_seq: int | None = None  # the latest checkpoint's seq
    checkpoint_at: datetime.datetime | None = None
    checkpoints: int = 0  # checkpoints whose signature and link were checked
    pending: int = 0  # events waiting to be chained when the walk ended

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        """One sentence for people: what is wrong and where, or what was checked."""
        if self.ok:
            return self.message
        if self.reason == PENDING_STALE:
            return f"Audit events not chained ({self.reason}): {self.message}. {self.count} event(s) verified."
        if self.first_bad_seq:
            where = f"at event #{self.first_bad_seq}"
        elif self.checkpoint_number:
            where = f"at checkpoint #{self.checkpoint_number}"
        else:
            where = "at the chain head"
        return (f"Audit chain broken {where} ({self.reason}): {self.message}. "
                f"{self.count} event(s) verified before it.")


def _fail(*, count: int, last_seq: int, seq: int | None, reason: str, message: str, **extra) -> VerificationResult:
    return VerificationResult(
        ok=False, count=count, last_seq=last_seq, first_bad_seq=seq, reason=reason, message=message, **extra
    )


def _intact(expected_seq: int, prev_hash: str, prev: str, stored: str, values: list,
            hash_event: stored_module.HashEvent) -> bool:
    try:
        return values[_SEQ] == expected_seq and prev == prev_hash and hash_event(prev, values) == stored
    except AuditError:
        return False


def _check_event(expected_seq: int, prev_hash: str, prev: str, stored: str, values: list,
                 hash_event: stored_module.HashEvent) -> tuple[str, str] | None:
    """(reason, message) if this event breaks the chain, else None."""
    seq = values[_SEQ]
    if seq != expected_seq:
        what = "missing" if seq > expected_seq else "out of order"
        return GAP, f"event #{expected_seq} is {what} (next event found is #{seq})"
    if prev != prev_hash:
        return BROKEN_LINK, f"event #{seq} does not link to the event before it (prev_hash differs)"
    try:
        recomputed = hash_event(prev, values)
    except AuditError as exc:  # a stored value the recorder would never have written
        recomputed = f"unhashable: {exc}"
    if recomputed != stored:
        return HASH_MISMATCH, f"event #{seq} has been altered (its content does not match its hash)"
    return None


_SEQ, _ACTION, _DETAILS = (hashing.HASHED_FIELDS.index(name) for name in ("seq", "action", "details"))


def verify_segment(*, after_seq: int, after_hash: str, through_seq: int, through_hash: str,
                   chunk_size: int = 2000, using: str = DEFAULT_DB_ALIAS) -> VerificationResult:
    """Check events ``after_seq + 1 .. through_seq`` link on from ``after_hash`` and end at ``through_hash``."""
    expected_seq, prev_hash, count = after_seq + 1, after_hash, 0
    queryset = AuditEvent.objects.using(using).filter(seq__gt=after_seq, seq__lte=through_seq).order_by("seq")
    with stored_module.stored_rows(queryset, chunk_size) as (rows, hash_event):
        for prev, stored, *values in rows:
            if not _intact(expected_seq, prev_hash, prev, stored, values, hash_event):
                problem = _check_event(expected_seq, prev_hash, prev, stored, values, hash_event)
                return _fail(count=count, last_seq=expected_seq - 1, seq=expected_seq, reason=problem[0],
                             message=problem[1])
            expected_seq, prev_hash, count = expected_seq + 1, stored, count + 1
    if expected_seq - 1 != through_seq or prev_hash != through_hash:
        return _fail(count=count, last_seq=expected_seq - 1, seq=through_seq, reason=HEAD_MISMATCH,
                     message=f"the events after #{after_seq} do not reach the chain head #{through_seq} with its hash")
    return VerificationResult(ok=True, count=count, last_seq=through_seq, message=f"{count} event(s) link on")


def _load_checkpoints(checkpoints: Sequence[checkpoints_module.Checkpoint] | None):
    if checkpoints is not None:
        return list(checkpoints), None
    try:
        return checkpoints_module.load_all(), None
    except AuditError as exc:
        return [], (checkpoints_module.MALFORMED_CHECKPOINT, str(exc))
    except Exception as exc:  # noqa: BLE001 - an unreachable store is a failed verification, said plainly
        return [], (CHECKPOINT_UNREADABLE, f"the checkpoint store could not be read ({type(exc).__name__}: {exc})")


def _decoded(value):
    return json.loads(value) if isinstance(value, str) else value


def verify_chain(*, chunk_size: int = 2000, using: str = DEFAULT_DB_ALIAS,
                 checkpoints: Sequence[checkpoints_module.Checkpoint] | None = None) -> VerificationResult:
    """Check the signed checkpoints, every event and the chain head; stop at the first problem.

    ``checkpoints`` defaults to those in the configured store (none if it is empty). When
    given, only those are compared, and the trail's own ``audit.checkpointed`` events are
    not cross-checked against the store.
    """
    from_store = checkpoints is None
    cps, load_problem = _load_checkpoints(checkpoints)
    if load_problem:
        return _fail(count=0, last_seq=0, seq=None, reason=load_problem[0], message=load_problem[1])
    problem = checkpoints_module.check_chain(cps)
    if problem:
        return _fail(count=0, last_seq=0, seq=None, reason=problem.reason, message=problem.message,
                     checkpoint_number=problem.number)
    latest = cps[-1] if cps else None
    cp_extra = {"checkpoint_seq": latest.seq if latest else None,
                "checkpoint_at": latest.created_at if latest else None, "checkpoints": len(cps)}

    expected_seq, prev_hash = 1, hashing.GENESIS_HASH
    archived = int(getattr(settings, "OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ", 0) or 0)
    if archived:
        anchor = next((cp for cp in cps if cp.seq == archived), None)
        if anchor is None:
            return _fail(count=0, last_seq=0, seq=None, reason=ARCHIVE_ANCHOR_MISSING, **cp_extra,
                         message=f"OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ is {archived} but no signed checkpoint "
                                 f"is at event #{archived}")
        expected_seq, prev_hash = archived + 1, anchor.hash
    pending = [cp for cp in cps if cp.seq >= expected_seq]  # in seq order (check_chain made sure)
    next_cp = 0
    next_cp_seq = pending[0].seq if pending else None

    head = AuditChainHead.objects.using(using).filter(pk=AuditChainHead.SINGLETON_ID).values_list("seq", "hash").first()
    queryset = AuditEvent.objects.using(using).filter(seq__gte=expected_seq).order_by("seq")
    count, head_hash_seen, recorded_checkpoints = 0, None, []
    head_seq = head[0] if head is not None else None
    checkpoint_action = checkpoints_module.ACTION if from_store else None  # locals: read once per event
    with stored_module.stored_rows(queryset, chunk_size) as (rows, hash_event):
        for prev, stored, *values in rows:
            seq = values[_SEQ]
            try:  # the common case inline: one walk over a million events calls little else
                intact = seq == expected_seq and prev == prev_hash and hash_event(prev, values) == stored
            except AuditError:
                intact = False
            if not intact:
                problem = _check_event(expected_seq, prev_hash, prev, stored, values, hash_event)
                return _fail(count=count, last_seq=expected_seq - 1, seq=expected_seq, reason=problem[0],
                             message=problem[1], **cp_extra)
            if seq == next_cp_seq:
                cp = pending[next_cp]
                if cp.hash != stored:
                    return _fail(count=count, last_seq=seq - 1, seq=seq, reason=CHECKPOINT_MISMATCH,
                                 checkpoint_number=cp.number, **{**cp_extra, "checkpoint_seq": cp.seq},
                                 message=f"event #{seq} differs from signed checkpoint #{cp.number}: the trail up to "
                                         f"#{seq} was rewritten (hashes recomputed after the checkpoint)")
                next_cp += 1
                next_cp_seq = pending[next_cp].seq if next_cp < len(pending) else None
            if values[_ACTION] == checkpoint_action:
                details = _decoded(values[_DETAILS])
                details = details if isinstance(details, dict) else {}
                number, digest = details.get("number"), details.get("digest")
                if isinstance(number, int) and not isinstance(number, bool):
                    # Kept small: one entry per checkpoint written, and only until compared below.
                    recorded_checkpoints.append((seq, number, digest))
            if seq == head_seq:
                head_hash_seen = stored
            expected_seq, prev_hash, count = seq + 1, stored, count + 1

    last_seq = expected_seq - 1
    if head is None:
        return _fail(count=count, last_seq=last_seq, seq=None, reason=HEAD_MISSING,
                     message="the chain head row is missing", **cp_extra)
    head_seq, head_hash = head
    if head_seq > last_seq:
        return _fail(count=count, last_seq=last_seq, seq=last_seq + 1, reason=HEAD_MISMATCH, **cp_extra,
                     message=f"the chain head is at #{head_seq} but the last event is #{last_seq}: "
                             f"events #{last_seq + 1} to #{head_seq} are missing")
    if head_seq == 0 and head_hash != hashing.GENESIS_HASH or head_seq and head_hash != head_hash_seen:
        return _fail(count=count, last_seq=last_seq, seq=head_seq or None, reason=HEAD_MISMATCH, **cp_extra,
                     message=f"the chain head's hash does not match event #{head_seq}")
    if next_cp < len(pending):
        cp = pending[next_cp]
        return _fail(count=count, last_seq=last_seq, seq=last_seq + 1, reason=CHECKPOINT_BEYOND_CHAIN,
                     checkpoint_number=cp.number, **cp_extra,
                     message=f"signed checkpoint #{cp.number} covers events up to #{cp.seq} but the trail ends at "
                             f"#{last_seq}: events #{last_seq + 1} to #{cp.seq} (at least) were removed")
    by_number = {cp.number: cp for cp in cps}
    for seq, number, digest in recorded_checkpoints:
        cp = by_number.get(number)
        if cp is None or cp.digest != digest:
            what = "is missing from" if cp is None else "differs in"
            return _fail(count=count, last_seq=last_seq, seq=None, reason=CHECKPOINT_MISSING,
                         checkpoint_number=number, **cp_extra,
                         message=f"checkpoint #{number}, recorded by event #{seq}, {what} the checkpoint store")
    pending = AuditPendingEvent.objects.using(using).aggregate(n=models.Count("id"), oldest=models.Min("recorded_at"))
    grace = int(settings.OMIPORTAL_AUDIT_PENDING_GRACE_SECONDS)
    if pending["n"] and pending["oldest"] < timezone.now() - datetime.timedelta(seconds=grace):
        return _fail(count=count, last_seq=last_seq, seq=None, reason=PENDING_STALE, pending=pending["n"], **cp_extra,
                     message=f"{pending['n']} event(s) wait to be chained, the oldest recorded at "
                             f"{pending['oldest']:%Y-%m-%d %H:%M:%S} UTC, more than {grace} s ago: is a worker "
                             f"running (audit_chain_job chains them)?")
    where = f", latest checkpoint #{latest.number} at #{latest.seq}" if latest else ", no checkpoint yet"
    waiting = f", {pending['n']} waiting to be chained" if pending["n"] else ""
    return VerificationResult(ok=True, count=count, last_seq=last_seq, pending=pending["n"],
                              checkpoint_number=latest.number if latest else None,
                              message=f"audit chain intact: {count} event(s), head at #{head_seq}{where}{waiting}",
                              **cp_extra)
