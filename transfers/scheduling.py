"""Putting background work on the queues: on commit, ids only, duplicates harmless.

Redis only carries the next step; the database says where each transfer stands.
When Redis is unreachable or flushed, nothing is lost: the reconciler finds rows
whose next look is overdue and enqueues their step again.
"""

import contextlib
import contextvars
import functools
import logging
import math
import time
from datetime import timedelta

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq import get_current_job
from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus
from rq.worker import Worker

from transfers import sweep_bookings

logger = logging.getLogger(__name__)

JOB_RESULT_TTL = 60  # seconds; results are never read, only kept for the dashboard
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def failure_ttl() -> int:
    """Seconds Redis keeps a failed job (its record and its place in the failed registry)."""
    return max(1, int(settings.OMIPORTAL_JOB_FAILURE_TTL_SECONDS))


def sweep_min() -> float:
    return float(settings.OMIPORTAL_SWEEP_MIN_SECONDS)


def sweep_max() -> float:
    return float(settings.OMIPORTAL_SWEEP_MAX_SECONDS)


# rq keeps a scheduled time in whole seconds: the finest cell a look can ask for.
FINE_SLOT_SECONDS = 1.0


def slot_seconds(interval: float = 0) -> float:
    """Sweeps of one account are due on a grid of the minimum interval: the looks that rows ask
    for within one cell share one sweep, and so one call (each start in a burst asks for its own
    first look), so an account is read at most once a minimum interval per phase. A row looked
    at every ``interval`` seconds, shorter than that (a copy near its expected end,
    transfers/services/copy_looks.py), gets a grid of whole seconds as fine as its interval."""
    grid = max(0.1, sweep_min())
    if 0 < interval < grid:
        return min(grid, float(max(FINE_SLOT_SECONDS, math.floor(interval))))
    return grid


def next_interval(previous: float) -> float:
    """Back off while a row stays in flight (exports can take hours); a new step (a start, a copy
    that became an export) begins again at the minimum."""
    if previous <= 0:
        return sweep_min()
    return min(sweep_max(), previous * 1.5)


def gather_seconds() -> float:
    """How long a look due at an account may wait for the looks due after it there, to be made
    with them in one call (polling.gather_until): OMIPORTAL_SWEEP_GATHER_SECONDS, but never more
    than the back-off ceiling (no row waits longer for a look than a backed-off one would), and
    short enough that a gathered row, its sweep a grid cell late and a cell of queue, is never
    the reconciler's (it takes back rows a grace late)."""
    grace = float(settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    return max(0.0, min(float(settings.OMIPORTAL_SWEEP_GATHER_SECONDS), sweep_max(), grace - 2 * slot_seconds()))


def seconds_to_finish(before: int, after: int, elapsed: float) -> float | None:
    """How long a task reporting a percentage should still take, at the pace it kept between two
    looks ``elapsed`` seconds apart; None when that pace says nothing: no progress yet (a queued
    export reports 0), none since the last look, or the clock went backwards."""
    if before <= 0 or after <= before or after >= 100 or elapsed <= 0:
        return None
    return (100 - after) * elapsed / (after - before)


@functools.lru_cache(maxsize=8)
def _connection(url: str):
    # django_rq builds a new client, and so a new connection pool, on every get_queue(): one
    # per process and URL keeps the TCP connections of a burst of enqueues (clients are thread-safe).
    return redis.Redis.from_url(url)


# Mail and pre-flight checks: no transfer waits on them, so a burst of requests does not put them
# ahead of the transfers' steps (a worker listening to `default` takes them too: omiportal/worker.py).
BACKGROUND = "background"
# Where a transfer's steps go: the reconciler judges a step lost against these queues' backlog.
STEP_QUEUES = ("poll", "default")


def get_queue(name: str):
    return django_rq.get_queue(name, connection=_connection(settings.RQ_QUEUES[name]["URL"]))


_workers_seen = {"count": 1, "at": -math.inf}
WORKERS_SEEN_FOR = 30.0  # seconds a count of the workers is reused (leases read it on every claim)


def workers_running() -> int:
    """How many rq workers are registered now (at least one: whoever asks is about to call).

    The account's pace is shared by every process (outscale/shared_pace.py), so a call may wait
    behind every worker's threads, not only its own process's: leases count them
    (polling.start_call_seconds). Redis out of reach: the last count."""
    now = time.monotonic()
    if now - _workers_seen["at"] >= WORKERS_SEEN_FOR:
        with contextlib.suppress(RedisError):
            _workers_seen["count"] = max(1, Worker.count(connection=_connection(settings.RQ_QUEUES["default"]["URL"])))
            _workers_seen["at"] = now
    return _workers_seen["count"]


def _send(func: str, args: tuple, *, job_id: str, queue: str, delay: float, result_ttl: int,
          at_front: bool = False) -> bool:
    """Whether a job ``job_id`` waits in the queue now (this one, or one enqueued before)."""
    try:
        q = get_queue(queue)
        # A failed job is kept to be looked at, for a week by default, not for rq's year.
        options = {"job_id": job_id, "unique": True, "result_ttl": result_ttl, "description": job_id,
                   "failure_ttl": failure_ttl()}
        if delay > 0:
            q.enqueue_in(timedelta(seconds=delay), func, *args, **options)
        else:
            q.enqueue(func, *args, at_front=at_front, **options)
        return True
    except DuplicateJobError:
        # The same step is already queued: running it twice would be harmless anyway. An id
        # whose job has already run (rq keeps it JOB_RESULT_TTL) swallows the step instead: the
        # reconciler brings it back, minutes later. Said in the log, since it is a naming mistake.
        with contextlib.suppress(RedisError):
            job = q.fetch_job(job_id)  # None: expired meanwhile, nothing to say
            if job is not None and (status := job.get_status(refresh=False)) not in _WAITING:
                logger.warning("Not enqueued: job id %s was already used by a job that is %s.",
                               job_id, getattr(status, "value", status))
            else:
                return job is not None
    except RedisError:
        logger.warning("Could not enqueue %s; the reconciler will retry it.", job_id)
    return False


def waiting_since(queues):
    """When the oldest job still waiting in ``queues`` was enqueued (None:
    they are empty, or Redis cannot say). Queues are first in, first out, so a job enqueued after
    it may still be waiting; one enqueued before it has been taken (or was lost with a flushed Redis)."""
    oldest = None
    for name in queues:
        try:
            q = get_queue(name)
            # The head, or the first of the next few whose record still exists (a deleted job
            # leaves its id in the list until a worker skips it).
            for job_id in q.get_job_ids(0, 4):
                job = q.fetch_job(job_id)
                if job is not None and job.enqueued_at is not None:
                    oldest = job.enqueued_at if oldest is None else min(oldest, job.enqueued_at)
                    break
        except RedisError:
            return None  # nothing can be enqueued either: the reconciler's enqueues say so
    return oldest


def enqueue(func: str, *args, job_id: str, queue: str = "default", delay: float = 0,
            result_ttl: int = JOB_RESULT_TTL, at_front: bool = False) -> None:
    """Enqueue ``func(*args)`` (ids only) once the current transaction commits; ``at_front``: before
    every job already waiting in the queue (a job whose delay costs more than theirs)."""
    transaction.on_commit(lambda: _send(func, args, job_id=job_id, queue=queue, delay=delay, result_ttl=result_ttl,
                                        at_front=at_front))


def schedule_sweep(kind: str, account_public_id, when, *, interval: float = 0, replace: bool = False) -> None:
    """Schedule the ``kind`` ("export" or "import") sweep of one account at ``when``, or just after.

    The job id names the grid cell (``slot_seconds``, finer for a row looked at every ``interval``
    seconds when that is shorter than the grid's) it is due at the end of, so several rows asking
    for looks within one cell share one job, and no row is looked at before it is due.
    No job is added while a sweep of the account due no later waits (sweep_bookings.py: that one
    books the next from the database); ``replace``: add it anyway (the reconciler's, for looks
    found lost).
    """
    width = slot_seconds(interval)
    # A finer grid's cells are named apart: its slot numbers count other seconds.
    grid = "" if width == slot_seconds() else f"-{int(width)}s"
    # On it, a look is due at the start of its cell, not the end: rq's scheduler moves a job up to
    # a second after its time, so every look a second apart would come two seconds apart. Up to a
    # cell early is on time: the sweep takes the rows due within the grid's next cell.
    at = when.timestamp()
    current = running_job_id()
    prefix = f"{kind}-sweep-{account_public_id}-"
    if grid and current is not None and current.startswith(prefix) and current.endswith(grid):
        # A sweep on this grid keeps its rhythm: its rows' next look a step after this one was
        # due, not after it ran (the scheduler and the queue let it run up to a cell late).
        running = int(current[len(prefix):-len(grid)]) * width
        at -= min(width, max(0.0, timezone.now().timestamp() - running))
    slot = (math.floor if grid else math.ceil)(at / width)
    job_id = f"{kind}-sweep-{account_public_id}-{slot}{grid}"
    if current == job_id:
        # A sweep that ran early (the scheduler works to the second) asks for its own slot
        # again: take the next one, or the running job's id would swallow the request.
        slot += 1
        job_id = f"{kind}-sweep-{account_public_id}-{slot}{grid}"
    delay = max(0.0, slot * width - timezone.now().timestamp())

    def send():
        # A burst of starts in one account asks for the same sweep over and over: one EXISTS
        # answers most of them, where building and enqueueing a job costs several round trips.
        # Finished sweeps leave no trace (result_ttl=0), so a slot whose sweep already ran (the
        # scheduler may release it a little early) is enqueued again, as it must be.
        connection = get_queue("poll").connection
        try:
            if connection.exists(Job.key_for(job_id)):
                return
        except RedisError:
            pass  # _send logs it
        # The key outlives the sweep's time by a grace period and a back-off ceiling: the longest it
        # may wait in the queue before the reconciler would book its looks again anyway.
        ttl = max(1, math.ceil(delay + float(settings.OMIPORTAL_RECONCILE_GRACE_SECONDS) + sweep_max()))
        if not sweep_bookings.book(connection, kind, account_public_id, at=slot * width, job_id=job_id,
                                   ttl=ttl, replace=replace):
            return  # an earlier sweep of the account waits: it reads this row (committed), and books its look
        if not _send(f"transfers.jobs.{kind}_sweep_job", (str(account_public_id),), job_id=job_id, queue="poll",
                     delay=delay, result_ttl=0):
            sweep_bookings.clear(connection, kind, account_public_id, job_id=job_id)  # no job waits: say so

    transaction.on_commit(send)


def sweep_begins(kind: str, account_public_id) -> None:
    """The running job, a sweep of the account, begins (before it reads anything): looks asked for
    from now on book a sweep again, this one's next included (sweep_bookings.py). It covers a
    sweep booked up to a grid cell ahead (its claim takes the rows due by then)."""
    job_id = running_job_id()
    if job_id is not None:
        sweep_bookings.clear(get_queue("poll").connection, kind, account_public_id, job_id=job_id,
                             due_by=timezone.now().timestamp() + slot_seconds())


# The job a sweep run in another job's thread stands for (take_waiting_sweeps): rq knows the
# job it runs in its own thread only.
_standing_for: contextvars.ContextVar[str | None] = contextvars.ContextVar("sweep_job", default=None)


def running_job_id() -> str | None:
    """The id of the job whose work runs here: the one a sweep taken off the queue stands for, or
    rq's current job."""
    if (job_id := _standing_for.get()) is not None:
        return job_id
    job = get_current_job()
    return job.id if job is not None else None


@contextlib.contextmanager
def standing_for(job_id: str):
    token = _standing_for.set(job_id)
    try:
        yield
    finally:
        _standing_for.reset(token)


PEEK_PER_TAKE = 4  # queued ids looked at per sweep taken (hand-offs and others sit among them)


def take_waiting_sweeps(kind: str, *, limit: int) -> list[tuple[str, str]]:
    """Take up to ``limit`` ``kind`` sweeps off the head of the poll queue, for the running sweep
    to run beside its own: (job id, account id) each.

    A queued sweep is due (rq's scheduler moves it there at its time). One after another, each
    one a look and a tag of ~0.1 s each and its completions, a release into 1,000 accounts had its
    accounts looked at 1.5 a second on two workers. A worker that takes one now runs the due
    sweeps behind it side by side, as a hand-off runs its creates.

    LREM removes an id for one caller only, so no sweep is taken twice (nor also run by the worker
    that dequeues it); the job's record goes with it, its id free for a booking again. A process
    that dies holding sweeps loses them as it loses its own job: the reconciler books their looks.
    """
    if limit <= 0:
        return []
    q, prefix, taken = get_queue("poll"), f"{kind}-sweep-", []
    try:
        for job_id in q.get_job_ids(0, PEEK_PER_TAKE * limit - 1):
            if len(taken) >= limit:
                break
            if not job_id.startswith(prefix) or not q.remove(job_id):
                continue  # another kind of job, or another worker took it first
            job = q.fetch_job(job_id)
            if job is not None:
                taken.append((job_id, str(job.args[0])))
                job.delete()
    except RedisError:
        logger.warning("Could not take the waiting %s sweeps; they run as their own jobs.", kind)
    return taken
