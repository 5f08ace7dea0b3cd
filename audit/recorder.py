"""``record()``: the one way events enter the audit trail.

Call it from a service, inside the service's transaction::

    with recorder.atomic():
        ...business writes...
        record(action="share.approved", team=share.team, target=share,
               details={"image_id": share.image_id}, cloud_request_ids=[request_id])

It joins the caller's transaction: if the event cannot be written, the caller's
change rolls back with it (fail closed).

One lock order: business rows, then the chain head. Appending an event locks the
chain head until the transaction ends, and every writer appends; a transaction
that locked the head and then waited on a share or an export another transaction
held, while that one waited for the head, would deadlock. Inside ``atomic()`` the
events are checked when recorded and appended when the block ends, so the head is
the last lock its transaction takes, whatever the order of the service's calls.

A web request never queues for the head (issue 19): jobs append all the time, and a page that
waited behind each of them was several times slower under load than alone. Nor do the sweeps a
worker runs side by side (``job_context(park=True)``). When another
transaction holds the head, the request's events are written to the pending table instead, in the
request's own transaction, and the next writer that holds the head (or ``chain_pending``, run by
``audit_chain_job``) chains them, oldest first, before its own events. Jobs and commands wait for
the head as before.
"""

import contextlib
import functools
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple

import django_rq
import redis
from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone
from rq.exceptions import DuplicateJobError

from audit import actions, guard, hashing
from audit.context import AuditContext, current
from audit.errors import AuditError
from audit.models import ACTION_INVALID, AuditChainHead, AuditEvent, AuditPendingEvent

logger = logging.getLogger(__name__)

ACTION_UNDECLARED = ("Audit action {action!r} is not declared: add it to audit/actions.py (what it means, its target, "
                     "whether it is a denial) before recording it.")
DENIAL_OUTCOME = "Audit action {action!r} is a denial: its outcome is 'denied', not {outcome!r}."
OUTCOME_INVALID = "Audit outcome {outcome!r} is not one of: success, denied, failed."
DETAILS_INVALID = "Audit details must be a mapping (a dict), not a {type}."
TARGET_INVALID = "An audit target must be a model instance, an AuditTarget or None, not a {type}."
TOO_LONG = "Audit field {field} is longer than {limit} characters."
CLOUD_IDS_INVALID = "cloud_request_ids must be an iterable of non-empty strings of at most 128 characters."
DETAILS_TOO_BIG = "Audit details are {size} bytes once serialised; the limit is {limit}."
HEAD_MISSING = "The audit chain head is missing although events exist; refusing to start a new chain."
HEAD_MOVED = "The audit chain head moved while this event was being appended; nothing was recorded."

DETAILS_MAX_BYTES = 64 * 1024
# Pending events chained by one append at most: a burst of them is chained over several appends,
# and no holder of the head does an unbounded amount of work under it.
PENDING_PER_APPEND = 500
CHAIN_QUEUE = "default"
CHAIN_JOB_ID = "audit-chain"
THROTTLE_KEY = "omiportal:audit:{job_id}:enqueued"  # also audit.jobs' throttle for its jobs
CHAIN_ASK_SECONDS = 1  # a burst of parked requests asks once a second at most
# A chaining job waiting in the queue keeps others of its slot from doubling it; a killed one
# (its record stays "started" for the job timeout plus a minute) blocks only its slot.
CHAIN_SLOT_SECONDS = 10
# The fields of an event a pending row keeps (seq, occurred_at and the hashes come with chaining).
PENDING_FIELDS = ("actor_id", "actor_name", "team_id", "team_name", "action", "outcome", "target_type", "target_id",
                  "target_label", "details", "request_id", "ip", "user_agent", "cloud_request_ids")


class AuditTarget(NamedTuple):
    """What an event is about, when it is not (or no longer) a model instance."""

    type: str
    id: str
    label: str = ""


class _CurrentActor:
    def __repr__(self) -> str:
        return "CURRENT_ACTOR"


# Default for ``actor``: the signed-in user of the current request, or the job's
# actor. Pass ``actor=None`` to record the system as the actor.
CURRENT_ACTOR: Any = _CurrentActor()


def _field_limit(name: str) -> int:
    return AuditEvent._meta.get_field(name).max_length


def _clip(value: str, *, field: str) -> str:
    """Copies of names and labels are informational: shorten rather than fail the business action."""
    text = str(value).replace("\x00", "\ufffd")
    limit = _field_limit(field)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exact(value: str, *, field: str) -> str:
    """Identifiers must be stored whole or not at all: a cut id points at something else."""
    text = str(value)
    if len(text) > _field_limit(field):
        raise AuditError(TOO_LONG.format(field=field, limit=_field_limit(field)))
    return hashing.check_text(text, path=field)


def _resolve_actor(actor: Any, context: AuditContext | None) -> Any:
    if actor is CURRENT_ACTOR:
        if context is None:
            return None
        actor = getattr(context.request, "user", None) if context.request is not None else context.actor
    if actor is None or not getattr(actor, "is_authenticated", False) or actor.pk is None:
        return None
    return actor


def _actor_name(actor: Any) -> str:
    return str(getattr(actor, "display_name", None) or actor)


def _target_fields(target: Any) -> dict[str, str]:
    if target is None:
        return {"target_type": "", "target_id": "", "target_label": ""}
    if isinstance(target, AuditTarget):
        kind, ident, label = target
    elif isinstance(target, models.Model):
        kind = target._meta.label_lower
        ident = getattr(target, "public_id", None) or target.pk
        label = str(target)
    else:
        raise AuditError(TARGET_INVALID.format(type=type(target).__name__))
    return {
        "target_type": _exact(kind, field="target_type"),
        "target_id": _exact("" if ident is None else str(ident), field="target_id"),
        "target_label": _clip(label, field="target_label"),
    }


def _cloud_ids(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise AuditError(CLOUD_IDS_INVALID)  # a lone string would be split into characters
    ids = list(values)
    if not all(isinstance(value, str) and 0 < len(value) <= 128 for value in ids):
        raise AuditError(CLOUD_IDS_INVALID)
    return [hashing.check_text(value, path="cloud_request_ids") for value in ids]


def _details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise AuditError(DETAILS_INVALID.format(type=type(details).__name__))
    normalised = hashing.normalise_json(details)
    guard.check_details(normalised)
    size = len(hashing.dumps(normalised).encode("utf-8"))
    if size > DETAILS_MAX_BYTES:
        raise AuditError(DETAILS_TOO_BIG.format(size=size, limit=DETAILS_MAX_BYTES))
    return normalised


def _with_via(details: Mapping[str, Any] | None, context: AuditContext | None) -> Mapping[str, Any] | None:
    """An API request names the token it came through (``request.audit_via``, set by the API's
    authentication) in every event it records: who acted is the token's person, how is the token."""
    via = getattr(context.request, "audit_via", None) if context is not None and context.request is not None else None
    if not via or not isinstance(details, Mapping | None):
        return details
    return {**(details or {}), "via": via}


def _lock_head(*, wait: bool = True) -> AuditChainHead | None:
    """Lock the chain head for this transaction, creating it on a fresh database. With ``wait``
    false: None at once if another transaction holds it (SQLite has no row locks: never None).

    The head's ``waiting`` says whether events may wait to be chained. It is asked in the same
    statement when the head was free (an append costs no more queries than before pending events
    existed); after a wait that statement's snapshot is older than the lock, so it is left True
    and ``_chain`` looks.
    """
    head = (AuditChainHead.objects.select_for_update(skip_locked=True)
            .annotate(waiting=models.Exists(AuditPendingEvent.objects.all()))
            .filter(pk=AuditChainHead.SINGLETON_ID).first())
    if head is not None:
        return head
    if AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID).exists():
        if not wait:
            return None  # skipped: it is there, and another transaction holds it
        return AuditChainHead.objects.select_for_update().get(pk=AuditChainHead.SINGLETON_ID)
    if AuditEvent.objects.exists():
        raise AuditError(HEAD_MISSING)
    # Two first writers may race here: ignore_conflicts lets both insert-or-skip,
    # then both queue on the row lock like any other append.
    AuditChainHead.objects.bulk_create([AuditChainHead()], ignore_conflicts=True)
    return AuditChainHead.objects.select_for_update().get(pk=AuditChainHead.SINGLETON_ID)


def record(
    *,
    action: str,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    actor: Any = CURRENT_ACTOR,
    team: Any = None,
    target: Any = None,
    details: Mapping[str, Any] | None = None,
    cloud_request_ids: Iterable[str] = (),
    request_id: str | None = None,
) -> AuditEvent:
    """Append one event to the audit trail and return it.

    ``actor`` defaults to the current request's signed-in user (or the job
    context's actor); ``None`` means the system. ``team`` is a Team or None for
    site-wide events. ``target`` is a model instance, an ``AuditTarget`` or None.
    ``details`` is JSON data without floats or secrets. ``action`` must be declared in
    ``audit.actions``. Raises ``AuditError`` on any invalid input, before writing anything.
    """
    if not isinstance(action, str) or len(action) > 64 or not actions.ACTION_RE.match(action):
        raise AuditError(ACTION_INVALID.format(action=action))
    declared = actions.ACTIONS.get(action)
    if declared is None:
        raise AuditError(ACTION_UNDECLARED.format(action=action))
    if outcome not in AuditEvent.Outcome.values:
        raise AuditError(OUTCOME_INVALID.format(outcome=outcome))
    if declared.denial and outcome != AuditEvent.Outcome.DENIED:
        raise AuditError(DENIAL_OUTCOME.format(action=action, outcome=str(outcome)))
    context = current()
    actor = _resolve_actor(actor, context)
    fields: dict[str, Any] = {
        "public_id": uuid.uuid4(),
        "actor_id": actor.pk if actor is not None else None,
        "actor_name": _clip(_actor_name(actor), field="actor_name") if actor is not None else "",
        "team_id": team.pk if team is not None else None,
        "team_name": _clip(team.name, field="team_name") if team is not None else "",
        "action": action,
        "outcome": str(outcome),
        **_target_fields(target),
        "details": _details(_with_via(details, context)),
        "request_id": _exact(request_id or (context.request_id if context else ""), field="request_id"),
        "ip": context.ip if context else None,
        "user_agent": context.user_agent if context else "",
        "cloud_request_ids": _cloud_ids(cloud_request_ids),
    }
    guard.check_strings(
        (name, fields[name]) for name in ("actor_name", "team_name", "target_label", "target_id", "user_agent")
    )

    if outcome == AuditEvent.Outcome.DENIED:
        _keep_denial(fields)
    pending = _pending()
    if pending is not None:
        event = AuditEvent(**fields)  # seq, time and hashes are given when the batch is written
        pending.append(event)
        return event
    event = AuditEvent(**fields)
    _append([event])
    return event


def _may_park() -> bool:
    """Whether the events being appended may wait in the pending table rather than for the head:
    those of a web request (a person waits for the page), and of a job run side by side with many
    others (``job_context(park=True)``: sweeps run in up to 64 threads of two workers spent 43% of
    their time queued on the head). Other jobs and commands wait for the head."""
    context = current()
    return context is not None and (context.request is not None or context.park)


def _append(events: list[AuditEvent]) -> None:
    """Chain ``events`` on, in order, under one lock of the head, after the pending events (or park
    them, when the head is held and they come from a request)."""
    with transaction.atomic():
        head = _lock_head(wait=not _may_park())
        if head is None:
            _park(events)
        else:
            _chain(head, events)


def _chain(head: AuditChainHead, events: list[AuditEvent]) -> int:
    """Chain the oldest pending events, then ``events``, on from the locked ``head``: one INSERT
    for all of them. Returns how many pending events were chained."""
    waiting = list(AuditPendingEvent.objects.order_by("id")[:PENDING_PER_APPEND]) \
        if getattr(head, "waiting", True) else []
    # Taken under the lock, so time never runs backwards along the chain (as far as this
    # server's clock goes): a pending event keeps the time it was recorded at, unless an event
    # chained before it is later (it waited; the chain's order is the order of chaining).
    now = timezone.now()
    if waiting:
        last = AuditEvent.objects.filter(seq=head.seq).values_list("occurred_at", flat=True).first()
        parked = []
        for row in waiting:
            event = AuditEvent(public_id=row.public_id, **row.fields)
            event.occurred_at = last = row.recorded_at if last is None else max(row.recorded_at, last)
            parked.append(event)
        now = max(now, last)
        for event in events:
            event.occurred_at = now
        events = [*parked, *events]
    else:
        for event in events:
            event.occurred_at = now
    seq, prev_hash = head.seq, head.hash
    for event in events:
        seq += 1
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = prev_hash = hashing.event_hash(
            prev_hash=prev_hash, fields={name: getattr(event, name) for name in hashing.HASHED_FIELDS})
    AuditEvent.objects.bulk_create(events)
    if len(events) == 1:
        moved = AuditChainHead.objects.filter(pk=head.pk, seq=head.seq).update(seq=seq, hash=prev_hash) == 1
    else:
        # The head's trigger lets it move one step at a time: one UPDATE per event, sent together.
        table, column = AuditChainHead._meta.db_table, AuditChainHead._meta.get_field
        with connection.cursor() as cursor:
            cursor.executemany(
                f'UPDATE "{table}" SET "{column("seq").column}" = %s, "{column("hash").column}" = %s '  # noqa: S608
                f'WHERE "{column("id").column}" = %s AND "{column("seq").column}" = %s',
                [(e.seq, e.hash, head.pk, e.seq - 1) for e in events])
        moved = AuditChainHead.objects.filter(pk=head.pk, seq=seq, hash=prev_hash).exists()
    if not moved:
        raise AuditError(HEAD_MOVED)
    if waiting:
        # Their events are in the chain now (the table's trigger checks it, row by row).
        AuditPendingEvent.objects.filter(pk__in=[row.pk for row in waiting]).delete()
    return len(waiting)


def _park(events: list[AuditEvent]) -> None:
    """Write ``events`` to the pending table, in the caller's transaction: they commit (or roll
    back) with its change, and are chained by the next writer that holds the head."""
    now = timezone.now()
    rows = []
    for event in events:
        event.occurred_at = now  # until chained: seq and the hashes stay None
        rows.append(AuditPendingEvent(public_id=event.public_id, recorded_at=now,
                                      fields={name: getattr(event, name) for name in PENDING_FIELDS}))
    AuditPendingEvent.objects.bulk_create(rows)
    transaction.on_commit(_ask_for_chaining)


def _ask_for_chaining() -> None:
    # Usually the next writer chains them within moments; the job is for a quiet moment (and each
    # worker's maintenance tick enqueues it too, so a lost enqueue only delays them).
    try:
        enqueue_chaining()
    except Exception:  # noqa: BLE001 - the events are safe in the table; the tick will ask again
        logger.warning("Could not enqueue the audit chaining job; the next tick will.", exc_info=True)


@functools.lru_cache(maxsize=1)
def _queue():
    # One client per process for the requests that ask (django_rq builds a new pool per get_queue).
    return django_rq.get_queue(CHAIN_QUEUE, connection=redis.Redis.from_url(settings.RQ_QUEUES[CHAIN_QUEUE]["URL"]))


def slot_job_id(name: str, seconds: float) -> str:
    """The id of ``name``'s job in the current slot of ``seconds`` (as the reconciler's).

    These jobs go out with ``unique=True`` so one waiting is not doubled. A run killed with its
    worker leaves its record "started" until rq declares it abandoned, which a worker running jobs
    in-process does only after the job's timeout plus a minute (16 minutes on the default queue):
    with one fixed id every enqueue meanwhile was refused. Named by its slot, a killed run blocks
    its own slot only. The slot is the database's time (omiportal/clock.py), the same on every host.
    """
    return f"{name}-{int(timezone.now().timestamp() // max(1.0, seconds))}"


def enqueue_chaining(queue=None) -> bool:
    """Enqueue ``audit.jobs.audit_chain_job`` unless it was asked for within the last second or
    one is waiting already (it chains whatever is pending when it runs)."""
    queue = queue or _queue()
    if not queue.connection.set(THROTTLE_KEY.format(job_id=CHAIN_JOB_ID), "1", nx=True, ex=CHAIN_ASK_SECONDS):
        return False
    with contextlib.suppress(DuplicateJobError):
        queue.enqueue("audit.jobs.audit_chain_job", job_id=slot_job_id(CHAIN_JOB_ID, CHAIN_SLOT_SECONDS),
                      unique=True, result_ttl=0, failure_ttl=60)
        return True
    return False


def chain_pending() -> int:
    """Chain every pending event (``audit_chain_job``), waiting for the head like any job."""
    chained = 0
    while True:
        with transaction.atomic():
            if not AuditPendingEvent.objects.exists():
                return chained
            head = _lock_head()
            done = _chain(head, [])
        if not done:
            return chained
        chained += done


_batch = threading.local()


def _pending() -> list[AuditEvent] | None:
    # Per thread: the threads of a sweep (polling.run_each) have their own transactions.
    return getattr(_batch, "events", None)


@contextlib.contextmanager
def atomic():
    """The transaction of a service that records events (a context manager, or a decorator):
    ``transaction.atomic()`` with the chain head locked last.

    Inside it, ``record()`` checks and prepares each event at once (an invalid one raises there,
    before anything is written) and the events are appended together when the block ends, under
    one lock of the chain head, right before the commit. So every row lock the service takes,
    in whatever order its calls come (approving records, then locks the export it reuses; failing
    an import records, then locks the share), comes before the head, as in the sweeps: no two
    writers can hold one each and wait for the other's. It also makes many events cheap: one
    INSERT, where each event alone costs a savepoint, a lock, an INSERT and an UPDATE.

    Nested blocks join the outer one: their events are appended at the outermost end, and each
    nested block is a savepoint, so an error leaving it undoes its writes and drops its events
    while the outer block may go on (the API's idempotent POSTs answer a refusal that way). Inside a
    plain ``transaction.atomic()`` the events are appended when this block ends, which is the
    transaction's end only if the caller locks nothing after it: open this one outermost.
    The events are appended even if a savepoint inside the block rolled back and the block went
    on: do not swallow an error raised after a ``record()`` inside it. An error that leaves the
    block rolls everything back, events included (denials are kept, see below). The returned
    events get their ``seq`` and hashes when the block ends.
    """
    pending = _pending()
    if pending is not None:
        mark = len(pending)
        with transaction.atomic():
            try:
                yield
            except BaseException:
                del pending[mark:]  # rolled back with the savepoint (a denial among them is kept aside)
                raise
        return
    with transaction.atomic():
        _batch.events = []
        try:
            yield
            events = _batch.events
        finally:
            del _batch.events
        if events:
            _append(events)


# --- Denials outlive the transaction they were recorded in ------------------------------------
#
# A service records its refusal (``require()``'s ``access.denied``, a self-approval) inside its own
# transaction, then raises; the exception rolls the transaction back, and the denial with it. The
# attempt must stay in the trail (INS-06), yet the event cannot be written from a second connection
# while this one may hold the chain head's lock (the two would wait on each other for ever).
#
# So a denial recorded inside a transaction is also kept aside, per request, job or command (the
# keeper below, opened by ``request_context`` and ``job_context``). When the keeper closes, outside
# the work's transactions, it looks its kept events up, in one query: an event that committed with
# its transaction is there; one that a rollback (of the transaction or of a savepoint) took away is
# not, and is written again then, in a transaction of its own. Each denial thus ends up in the
# chain exactly once. (Looking up rather than counting on on_commit callbacks: those would also
# show up among the callbacks of work that must enqueue nothing, and an open test transaction
# never runs them.)

_kept: ContextVar[list[dict[str, Any]] | None] = ContextVar("omiportal_audit_kept_denials", default=None)


def _keep_denial(fields: dict[str, Any]) -> None:
    kept = _kept.get()
    if kept is not None and transaction.get_connection().in_atomic_block:
        kept.append(dict(fields))  # in autocommit the event commits at once: nothing to keep


@contextlib.contextmanager
def keeping_denials() -> Iterator[None]:
    """Write, when the block ends, the denials recorded inside it whose transaction rolled back.

    Nested blocks join the outer one, so the writing happens at the outermost, after the work's
    transactions have ended. Open it around a request, a job or a command (the audit context does).
    """
    if _kept.get() is not None:
        yield
        return
    kept: list[dict[str, Any]] = []
    token = _kept.set(kept)
    try:
        yield
    finally:
        _kept.reset(token)
        if kept:
            _write_kept(kept)


def _write_kept(kept: list[dict[str, Any]]) -> None:
    ids = [f["public_id"] for f in kept]
    # Pending first: an event chained between the two reads is then seen in one of them.
    present = set(AuditPendingEvent.objects.filter(public_id__in=ids).values_list("public_id", flat=True))
    present |= set(AuditEvent.objects.filter(public_id__in=ids).values_list("public_id", flat=True))
    lost = [AuditEvent(**fields) for fields in kept if fields["public_id"] not in present]
    if lost:
        _append(lost)
