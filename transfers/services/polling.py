"""What the export and import sweeps share: claiming due rows, scheduling the next look,
postponing after a throttled call, spacing the retries of a create, and running the per-row
calls of one sweep side by side."""

import contextlib
import contextvars
import logging
import queue
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

import outscale
from accounts.models import CloudAccount
from transfers import scheduling
from transfers.models import Export
from transfers.services import copy_looks

logger = logging.getLogger(__name__)

MAX_START_ATTEMPTS = 8
WAITING_PREFIX = "Waiting for OUTSCALE: "


def start_retry_delay(tries: int) -> float:
    """Seconds before the ``tries``-th new attempt at a create that OUTSCALE put off."""
    return min(scheduling.sweep_max(), scheduling.sweep_min() * 2 ** tries)


def start_deadline(delay: float):
    """When the reconciler should consider a put-off create lost and enqueue it again."""
    return timezone.now() + timedelta(seconds=delay + settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)


# --- leases on starts ------------------------------------------------------------------------
# A start (an import's CreateImage, an export's copy or task) counts its attempt and writes a
# lease in the same conditional UPDATE, before any cloud call: next_poll_at moves past the end
# of the longest stay inside the calls, so the reconciler leaves the row alone, and no other run
# (a re-enqueued job, a retry job, the hand-off, a second worker) may claim it until it ran out.
# When the calls return, the lease is replaced by the next look (or a put-off, or the end).


def start_call_seconds(*, calls: int, starts: int = 0) -> float:
    """The longest a start can stay inside ``calls`` cloud calls at these settings, ``starts`` of
    them paced as starts (an export's ``CreateImageExportTask``, which lets writes pass it for up
    to outscale.START_PATIENCE at each attempt, so that a hand-off's creates go first).

    Each call may wait for its turn in the account's pace behind every other thread calling the
    account: OMIPORTAL_SWEEP_CONCURRENCY of them in each process whose pace is shared (every rq
    worker running, scheduling.workers_running; this process alone when the pace is not shared),
    OMIPORTAL_OUTSCALE_CALLS_PER_SECOND served a second. Then it may connect and wait up to the
    read timeout, up to OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS times with at most
    OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY between attempts (throttled answers are retried even for
    creates). A hand-off claims all its rows at once and begins the last of them up to
    OMIPORTAL_SWEEP_BUDGET_SECONDS later. At the shipped settings (two workers of 32 threads, 10
    calls a second, 5 + 30 s timeouts, 3 attempts, 4 s, 5 s budget) an import start's three calls
    (lookup, create, lookup after a duplicate-name answer) come to about 400 s.
    (A read timeout bounds the wait for each byte, not the whole answer; OUTSCALE answers in
    one piece.)
    """
    callers = scheduling.workers_running() if settings.OMIPORTAL_OUTSCALE_PACE_SHARED else 1
    pace_wait = callers * max(1, int(settings.OMIPORTAL_SWEEP_CONCURRENCY)) / max(
        1, int(settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND))
    attempt = pace_wait + float(settings.OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT) + float(
        settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT)
    attempts = max(1, int(settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS))
    per_call = attempts * attempt + (attempts - 1) * float(settings.OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY)
    patience = starts * attempts * outscale.START_PATIENCE
    return float(settings.OMIPORTAL_SWEEP_BUDGET_SECONDS) + calls * per_call + patience


def _start_horizon() -> float:
    """How far ahead a start not held by anyone can be scheduled: a put-off's retry (at most a
    sweep_max) plus the reconciler's grace (`start_deadline`), or a fresh row's grace."""
    return scheduling.sweep_max() + float(settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)


def start_lease_until(now, *, calls: int, starts: int = 0):
    """The next_poll_at a claimed start is given. It lies beyond any time a start not held is
    scheduled for (`_start_horizon`) by the longest stay inside its calls, so a re-run can tell
    a held row from one put off until later, as `riders` tells a swept row from a scheduled one;
    the reconciler comes back a grace period after it."""
    return now + timedelta(seconds=_start_horizon() + start_call_seconds(calls=calls, starts=starts))


def start_free(now, *, tried: int) -> Q:
    """Rows whose start no run holds, among those with ``tried`` attempts counted: any with
    none (never claimed; whatever their next look says, it is no lease), else those put off or
    whose lease ran out (the run holding it died inside its calls; the next looks the name up)."""
    if not tried:
        return Q()
    return Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now + timedelta(seconds=_start_horizon()))


def put_off_start(row, exc, *, tries: int, fail, job: str, job_id: str, claimed: Q) -> None:
    """OUTSCALE put a create off (throttled, unavailable): try again later, or give up after
    MAX_START_ATTEMPTS. ``tries`` counts attempts made so far; ``fail(row, message, request_ids)``
    ends the transfer. ``claimed`` is the condition the row met when this run claimed it (state,
    attempt count, no result yet): a run whose lease ran out and was taken over by another
    changes nothing, since the row moved on without it."""
    delay = start_retry_delay(tries)
    settle = settle_seconds(exc)
    if settle:
        # Held, not merely put off: a next look beyond the start horizon is a lease
        # (`start_free`), so no run (this job released early, the reconciler, another worker)
        # looks the name up before the unanswered create had its time to land.
        next_poll_at = timezone.now() + timedelta(seconds=_start_horizon() + settle)
        # rq keeps a scheduled time in whole seconds (it may run a job up to a second early):
        # the job comes a little after the hold ends, not just before it (it would find the row
        # held and leave it to the reconciler, minutes later).
        delay = max(delay, settle + 2.0)
    else:
        next_poll_at = start_deadline(delay)
    with transaction.atomic():
        if not type(row).objects.select_for_update().filter(claimed, pk=row.pk).exists():
            return
        if tries >= MAX_START_ATTEMPTS:
            fail(row, f"OUTSCALE stayed unavailable: {exc.user_message}", exc.request_ids)
            return
        type(row).objects.filter(claimed, pk=row.pk).update(
            state_message=f"{WAITING_PREFIX}{exc.user_message}"[:500], next_poll_at=next_poll_at)
        scheduling.enqueue(job, str(row.public_id), job_id=job_id, delay=delay)


def settle_seconds(exc) -> float:
    """How long to leave a create that got no answer before looking its name up again.

    OUTSCALE has no idempotency token. A create that timed out or lost its connection may still
    be applied after the portal stopped waiting; a lookup made before that finds nothing, and
    the next create makes a second export task (or races the first for the image name). So the
    next attempt waits OMIPORTAL_CREATE_SETTLE_SECONDS, the longest the cloud is taken to sit on
    a request, and then finds what the first one made. An error answer needs no wait."""
    return float(settings.OMIPORTAL_CREATE_SETTLE_SECONDS) if getattr(exc, "unanswered", False) else 0.0


def lease_until(now):
    """How long a sweep holds the rows it claimed: the reconciler takes them back once this is
    a grace period late. It lies beyond any scheduled look (those are at most a sweep_max ahead),
    so `riders` can tell a row another sweep holds from one waiting for its look."""
    return now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS + scheduling.sweep_max())


def claim(model, *, account: CloudAccount, states, extra: Q, now) -> list:
    """Take the due rows of one account for this sweep. A second sweep running at the same
    time finds nothing due and makes no cloud call.

    Rows due within the next grid cell ride along: the call is made anyway, and one more id in
    it is cheaper than another call a moment later.
    """
    lease = lease_until(now)
    due_by = now + timedelta(seconds=scheduling.slot_seconds())
    due = model.objects.filter(extra, state__in=states, next_poll_at__lte=due_by, **{_account_field(model): account})
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
        model.objects.filter(pk__in=ids).update(next_poll_at=lease)
    return list(model.objects.filter(pk__in=ids))


def _account_field(model) -> str:
    """The field naming a watched row's account: an export's own, an import's target."""
    return "account" if model is Export else "target_account"


def riders(model, *, account: CloudAccount, states, extra: Q, taken: list) -> list:
    """The account's other in-flight rows, not due yet. A sweep's call can carry their ids too
    at no cost (up to a page), so a row that ended before its own next look is noticed at any
    look at its account: rows started a little apart look for each other. They are only read
    here; `claim_riders` takes the ones that turn out to have ended. Rows another sweep holds
    (leased beyond any scheduled look) are not riders: two sweeps of one account can overlap,
    and both would tag the same import."""
    field = _account_field(model)
    room = outscale.PAGE_SIZE - len(taken)  # one read's ids
    if room <= 0:
        return []
    waiting = timezone.now() + timedelta(seconds=scheduling.sweep_max())  # later: another sweep's lease
    return list(model.objects.filter(extra, state__in=states, next_poll_at__lte=waiting, **{field: account})
                .exclude(pk__in=[row.pk for row in taken]).order_by("next_poll_at")[:room])


def image_ended(image) -> bool:
    """Whether a pending OMI (a copy or an import) has stopped pending: available, failed,
    deleted, or unknown to the cloud."""
    return image is None or image.state in ("available", "failed", "deleted")


def claim_riders(model, riders: list, ended: set) -> list:
    """Take the riders whose end the sweep saw (pks in ``ended``), as `claim` takes due rows,
    except those another sweep or the reconciler took since they were read (a lease moved
    their next look) or holds now."""
    read = {row.pk: row.next_poll_at for row in riders if row.pk in ended}
    if not read:
        return []
    lease = lease_until(timezone.now())
    with transaction.atomic():
        now_at = dict(model.objects.select_for_update(skip_locked=True).filter(pk__in=read)
                      .values_list("pk", "next_poll_at"))
        mine = {pk for pk, at in now_at.items() if at == read[pk]}
        model.objects.filter(pk__in=mine).update(next_poll_at=lease)
    taken = [row for row in riders if row.pk in mine]
    for row in taken:
        row.next_poll_at = lease  # what the row holds now: a put-off is conditional on it
    return taken


# A look is put off only when at least this many rows fall due after it within the window: the
# calls it saves are worth their wait.
GATHER_MIN_ROWS = 2


def gather_until(model, *, account: CloudAccount, states, extra: Q, now, prompt: Q | None = None):
    """When the account's look, due now, is better made: the latest look due within
    ``scheduling.gather_seconds()`` of the earliest one due, when at least GATHER_MIN_ROWS rows
    fall due after this grid cell and within that window; None: look now.

    At a busy account (a stream of exports or imports started a few a second, each ending some
    time later) a look falls due in every grid cell, each one a call that sees the few rows that
    ended since the last. Gathered, one call sees them all: a row waits at most the window past
    its own look, and every in-flight row rides in that call (``riders``), so none is seen later
    than that. A lone row, or rows due together, are looked at when due.

    Looks right away: when nothing is due (``claim`` finds nothing and makes no call), when the
    earliest due row has waited the whole window, when a ``prompt`` row is due (same-Region
    copies follow their own plan, copy_looks.py), or when a due row had no look for longer than
    a back-off ceiling and the window (the reconciler put it back: its next_poll_at says now,
    its updated_at how long it has really waited).
    """
    window = scheduling.gather_seconds()
    if window <= 0:
        return None
    field = _account_field(model)
    rows = model.objects.filter(extra, state__in=states, **{field: account})
    due_by = now + timedelta(seconds=scheduling.slot_seconds())
    due = rows.filter(next_poll_at__lte=due_by).aggregate(
        first=Min("next_poll_at"), last_look=Min("updated_at"),
        **({"prompt": Count("pk", filter=prompt)} if prompt is not None else {}))
    first = due["first"]
    if first is None or first <= now - timedelta(seconds=window) or due.get("prompt") \
            or due["last_look"] <= now - timedelta(seconds=scheduling.sweep_max() + window):
        return None
    later = rows.filter(next_poll_at__gt=due_by, next_poll_at__lte=first + timedelta(seconds=window)) \
        .aggregate(n=Count("pk"), last=Max("next_poll_at"))
    return later["last"] if later["n"] >= GATHER_MIN_ROWS else None


def gathered(model, account: CloudAccount, kind: str, states, extra: Q, *, prompt: Q | None = None) -> bool:
    """Put this sweep's look off to ``gather_until``'s time (its sweep booked there, nothing
    claimed, no call); False: look now. A sweep made by the copy watcher looks now."""
    if copy_looks.watching():
        return False
    when = gather_until(model, account=account, states=states, extra=extra, now=timezone.now(), prompt=prompt)
    if when is None:
        return False
    with transaction.atomic():
        scheduling.schedule_sweep(kind, account.public_id, when)
    return True


def schedule_next(model, account: CloudAccount, kind: str, states, extra: Q) -> None:
    if copy_looks.watching():
        return  # the copy watcher makes their looks, and books rq's when it stops (copy_watch.py)
    field = _account_field(model)
    # The earliest look, on the grid its row's interval asks for (a copy near its end: finer).
    nxt = model.objects.filter(extra, state__in=states, next_poll_at__isnull=False, **{field: account}) \
        .order_by("next_poll_at").values_list("next_poll_at", "poll_interval").first()
    if nxt is not None:
        with transaction.atomic():
            scheduling.schedule_sweep(kind, account.public_id, max(nxt[0], timezone.now()), interval=nxt[1])


def postpone(rows, message: str) -> None:
    """Look again later at rows a sweep took (throttled, unavailable): each only while it is
    still in the state and under the lease it was read with, so a late put-off never moves a
    row that another run has advanced meanwhile."""
    for row in rows:
        interval = min(scheduling.sweep_max(), max(row.poll_interval, scheduling.sweep_min()) * 2)
        type(row).objects.filter(pk=row.pk, state=row.state, next_poll_at=row.next_poll_at).update(
            poll_interval=interval, next_poll_at=timezone.now() + timedelta(seconds=interval),
            state_message=f"{WAITING_PREFIX}{message}"[:500])


_in_line: contextvars.ContextVar[bool] = contextvars.ContextVar("run_each_in_line", default=False)


@contextlib.contextmanager
def in_line():
    """Inside, run_each runs its items one after another: work already run side by side with
    others (sweeps taken off the queue) opens no threads of its own, so a process holds at most
    OMIPORTAL_SWEEP_CONCURRENCY threads, and database connections, for it."""
    token = _in_line.set(True)
    try:
        yield
    finally:
        _in_line.reset(token)


def run_each(func, items, *, what: str, budget: float | None = None, threads: int | None = None,
             more=None, more_for: float = 0.0) -> list:
    """``func(item)`` for every item, ``OMIPORTAL_SWEEP_CONCURRENCY`` at a time: each call waits
    mostly on OUTSCALE. One item failing does not stop the others; its row stays in flight and the
    reconciler comes back to it after the grace period.

    With a ``budget`` (seconds), no item is begun after it runs out: the items left are returned,
    for the caller to hand to a job of their own. A sweep then keeps its worker for about the
    budget, and the sweeps waiting behind it (other accounts' finished exports) get their turn.
    ``threads`` asks for that many threads (still at most the concurrency), where each item waits
    on several calls in turn. ``more()``: asked, by a thread that found no item left within
    ``more_for`` seconds, for more items (an empty list: there are none).
    """
    deadline = None if budget is None else time.monotonic() + budget
    more_until = time.monotonic() + more_for
    pending, left, left_lock = queue.SimpleQueue(), [], threading.Lock()
    for item in items:
        pending.put(item)

    def refill() -> bool:
        if more is None or time.monotonic() > more_until:
            return False
        with left_lock:  # one thread asks at a time; the others then find what it got
            if not pending.empty():
                return True
            got = more()
            for item in got:
                pending.put(item)
            return bool(got)

    def drain(own_thread: bool):
        done = 0
        try:
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    if refill():
                        continue
                    return
                # Each thread does at least one item, so even a spent budget makes progress.
                if done and deadline is not None and time.monotonic() > deadline:
                    with left_lock:
                        left.append(item)
                    continue
                _logged(func, item, what)
                done += 1
        finally:
            if own_thread:
                connections.close_all()  # this thread's own connections

    # A thread costs a database connection: a few rows are done faster in line.
    concurrency = max(1, min(int(settings.OMIPORTAL_SWEEP_CONCURRENCY), threads or pending.qsize() // 2))
    if _in_line.get():
        concurrency = 1  # already one of a process's side-by-side sweeps (in_line)
    if concurrency == 1:
        drain(own_thread=False)
        return left
    # Each thread runs in a copy of this context, so the audit context (the job) follows the work.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(drain, True), daemon=True)
               for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return left


def _logged(func, item, what: str) -> None:
    try:
        func(item)
    except Exception:  # noqa: BLE001 - one broken row must not stop the others; the reconciler retries it
        logger.exception("Could not %s (%s); the reconciler will come back to it.", what, item)
