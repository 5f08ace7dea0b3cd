"""Walk the whole audit chain and say whether it is intact, and where it first breaks.

Reads in bounded memory (a server-side cursor on PostgreSQL, chunked fetches
on SQLite) in ``seq`` order. For each event, in this order:

1. ``gap``: its ``seq`` is not the previous one plus one (the first is 1). A
   deleted first or middle event shows up here, as the missing ``seq``.
2. ``broken_link``: its ``prev_hash`` is not the previous event's ``hash``
   (genesis: 64 zeros). Reordered or swapped events show up here or in 3.
3. ``hash_mismatch``: recomputing the hash of its fields gives something else.
   Any edited field, ``hash`` itself included, shows up here.

Then the chain head row must name an event that exists with the same hash
(``head_mismatch``; ``head_missing`` if the row is gone): the only way to notice
that the newest events were deleted, since what remains is a valid chain.
The head is read before the events, so events appended meanwhile are fine.
"""

from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS

from omiportal.audit import hashing
from omiportal.audit.errors import AuditError
from omiportal.audit.models import AuditChainHead, AuditEvent

GAP = "gap"
BROKEN_LINK = "broken_link"
HASH_MISMATCH = "hash_mismatch"
HEAD_MISMATCH = "head_mismatch"
HEAD_MISSING = "head_missing"

_COLUMNS = ("prev_hash", "hash", *hashing.HASHED_FIELDS)


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    count: int  # events checked
    last_seq: int  # the last good seq (0: none)
    first_bad_seq: int | None = None
    reason: str | None = None  # one of the module constants above
    message: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _fail(*, count: int, last_seq: int, seq: int | None, reason: str, message: str) -> VerificationResult:
    return VerificationResult(
        ok=False, count=count, last_seq=last_seq, first_bad_seq=seq, reason=reason, message=message
    )


def verify_chain(*, chunk_size: int = 2000, using: str = DEFAULT_DB_ALIAS) -> VerificationResult:
    """Check every event and the chain head; stop at the first problem."""
    head = AuditChainHead.objects.using(using).filter(pk=AuditChainHead.SINGLETON_ID).values_list("seq", "hash").first()
    rows = AuditEvent.objects.using(using).order_by("seq").values_list(*_COLUMNS).iterator(chunk_size=chunk_size)
    expected_seq, prev_hash, count, head_hash_seen = 1, hashing.GENESIS_HASH, 0, None
    for prev, stored, *values in rows:
        fields = dict(zip(hashing.HASHED_FIELDS, values, strict=True))
        seq = fields["seq"]
        if seq != expected_seq:
            what = "missing" if seq > expected_seq else "out of order"
            return _fail(count=count, last_seq=expected_seq - 1, seq=expected_seq, reason=GAP,
                         message=f"event #{expected_seq} is {what} (next event found is #{seq})")
        if prev != prev_hash:
            return _fail(count=count, last_seq=seq - 1, seq=seq, reason=BROKEN_LINK,
                         message=f"event #{seq} does not link to the event before it (prev_hash differs)")
        try:
            recomputed = hashing.event_hash(prev_hash=prev, fields=fields)
        except AuditError as exc:  # a stored value the recorder would never have written
            recomputed = f"unhashable: {exc}"
        if recomputed != stored:
            return _fail(count=count, last_seq=seq - 1, seq=seq, reason=HASH_MISMATCH,
                         message=f"event #{seq} has been altered (its content does not match its hash)")
        if head is not None and seq == head[0]:
            head_hash_seen = stored
        expected_seq, prev_hash, count = seq + 1, stored, count + 1

    last_seq = expected_seq - 1
    if head is None:
        return _fail(count=count, last_seq=last_seq, seq=None, reason=HEAD_MISSING,
                     message="the chain head row is missing")
    head_seq, head_hash = head
    if head_seq > last_seq:
        return _fail(count=count, last_seq=last_seq, seq=last_seq + 1, reason=HEAD_MISMATCH,
                     message=f"the chain head is at #{head_seq} but the last event is #{last_seq}: "
                             f"events #{last_seq + 1} to #{head_seq} are missing")
    if head_seq == 0 and head_hash != hashing.GENESIS_HASH or head_seq and head_hash != head_hash_seen:
        return _fail(count=count, last_seq=last_seq, seq=head_seq or None, reason=HEAD_MISMATCH,
                     message=f"the chain head's hash does not match event #{head_seq}")
    return VerificationResult(ok=True, count=count, last_seq=last_seq,
                              message=f"audit chain intact: {count} event(s), head at #{head_seq}")
