"""The portal's RQ worker: runs jobs in its own process, with everything loaded once, and runs
the reconciler on every maintenance tick, so a flushed Redis never strands a transfer.

Why not rq's default fork per job: the portal's jobs are short, take ids only and are safe to
run twice, while a fresh child per job pays again for what a job mostly does: new database and
Redis connections, new cloud clients and HTTP connections, modules imported lazily. Measured in
`bench_transfers` (1,000 transfers), that was the larger part of the workers' CPU. A job that
crashes the process is what a killed worker already is: the reconciler puts its step back.
"""

import contextlib
import importlib
import logging
import os
import time

import django_rq
from django.conf import settings
from django.db import close_old_connections
from rq import SimpleWorker
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.serializers import JSONSerializer
from rq.utils import utcparse

import outscale
from audit.jobs import ensure_audit_jobs_enqueued
from audit.recorder import keeping_denials, slot_job_id
from omiportal import clock
from omiportal.priority import yield_cpu
from transfers.scheduling import BACKGROUND

logger = logging.getLogger(__name__)


def ensure_reconcile_enqueued() -> None:
    """Enqueue the reconciler for this tick unless another worker already did.

    The job id names the tick slot (recorder.slot_job_id, on the database's clock, so workers
    on hosts whose clocks differ name the same slot): a failed or killed run only blocks its own
    slot (rq keeps a failed job's record, and a unique enqueue with that id would be refused), so
    the safety net is back on the next tick.
    """
    job_id = slot_job_id("reconcile", settings.OMIPORTAL_RECONCILE_EVERY_SECONDS)
    with contextlib.suppress(DuplicateJobError):
        django_rq.get_queue("poll").enqueue("transfers.jobs.reconcile_job", job_id=job_id, unique=True,
                                            result_ttl=0, failure_ttl=300)


# Which host id each scheduler runs on (rq records the machine's name only).
SCHEDULER_HOST_KEY = "omiportal:scheduler-host:%s"
SCHEDULER_HOST_TTL = 7 * 24 * 3600  # noted again at every maintenance tick
# Deletes a queue's scheduler lock only while it still names the dead scheduler.
_RELEASE_IF_HELD_BY = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def release_dead_scheduler_locks(connection, queue_names) -> list[str]:
    """Let go of the scheduler locks that a worker killed on this machine left behind.

    A scheduler holds each queue's lock for 61 s at a time (rq: its interval + 60 s), renewed every
    second. When its worker is killed (SIGKILL, the OOM killer), no other scheduler may move the
    queue's delayed jobs (every sweep, every retry) until the lock expires: a minute in which no
    transfer is polled. A lock whose scheduler ran on this host and has a pid that no longer
    exists is deleted at once, and this worker's own scheduler takes it at its maintenance tick.

    "This host" is OMIPORTAL_HOST_ID (the machine's name unless set): each worker notes its
    scheduler's host id in Redis (`note_scheduler_host`); a scheduler with no note counts as on the
    host rq recorded (the machine's name). A scheduler on another host cannot be checked: its lock
    expires as before. Hosts that share a machine name but not a PID namespace (containers on the
    host's network, two "hosts" of the multi-host fault run on one machine) must be given host ids
    of their own, or a live scheduler of one could be taken for dead by the other. (Even then it
    only hands its lock over: one scheduler still moves each queue.)
    """
    host, released = settings.OMIPORTAL_HOST_ID, []
    for name in queue_names:
        key = RQScheduler.get_locking_key(name)
        holder = connection.get(key)
        if holder is None:
            continue
        hostname, pid = connection.hmget(SCHEDULER_KEY_TEMPLATE % holder.decode(), "hostname", "pid")
        noted = connection.get(SCHEDULER_HOST_KEY % holder.decode())
        holder_host = noted if noted is not None else hostname
        if holder_host is None or holder_host.decode() != host or int(pid or 0) <= 0 or _alive(int(pid)):
            continue
        if connection.eval(_RELEASE_IF_HELD_BY, 1, key, holder):
            released.append(name)
    return released


def note_scheduler_host(connection, scheduler) -> None:
    """Record which host id this worker's scheduler runs on (rq records the machine's name only)."""
    if scheduler is not None:
        connection.set(SCHEDULER_HOST_KEY % scheduler.name, settings.OMIPORTAL_HOST_ID, ex=SCHEDULER_HOST_TTL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def late_queues(queues, connection, *, patience: float, now: float) -> list:
    """The later queues (not the first) whose head has waited more than ``patience`` seconds, in
    the listed order. A deleted job's id left at a head, or a head without a time, is not late."""
    later = list(queues[1:])
    if not later:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for queue in later:
            pipe.lindex(queue.key, 0)
        heads = pipe.execute()
    with connection.pipeline(transaction=False) as pipe:
        for head in heads:
            pipe.hget(Job.key_for((head or b"").decode()), "enqueued_at")
        stamps = pipe.execute()
    late = []
    for queue, head, stamp in zip(later, heads, stamps, strict=True):
        if head is not None and stamp is not None:
            with contextlib.suppress(ValueError):
                if now - utcparse(stamp.decode()).timestamp() > patience:
                    late.append(queue)
    return late


# How long a late queue's turn lasts: as many of its jobs as start within it.
LATE_TURN_SECONDS = 1.0

JOB_MODULES = ("transfers.jobs", "transfers.notifications", "audit.jobs")


class PortalWorker(SimpleWorker):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", int(settings.OMIPORTAL_RECONCILE_EVERY_SECONDS))
        # Jobs carry ids only, as JSON; rqworker's default (pickle) would also run whatever
        # a pickled payload placed in Redis asks for.
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)
        # `background` (mail, pre-flight checks) used to be part of `default`: a worker that takes
        # `default` takes it too, after the others, so `rqworker poll default` needs no change.
        if "default" in self.queue_names() and BACKGROUND not in self.queue_names():
            self.queues.append(django_rq.get_queue(BACKGROUND, connection=self.connection))
        self._turn, self._next_late = None, 1  # (queue, started) while a late queue has its turn
        # Before any thread or the scheduler's child is started: they inherit it.
        if lowered := yield_cpu(settings.OMIPORTAL_WORKER_NICE):
            logger.info("Worker CPU priority: %s.", "; ".join(lowered))
        outscale.warm_up()  # the OAPI spec (seconds to parse) and the cloud layer, once
        for module in JOB_MODULES:
            importlib.import_module(module)

    def execute_job(self, job, queue):
        # As Django does around a request: a connection left broken (a database restart) or
        # past CONN_MAX_AGE is not handed to the next job.
        close_old_connections()
        try:
            # Jobs open their own audit context; this also covers one that does not, so a denial
            # its transaction rolled back is still written once the job is done.
            with keeping_denials():
                return super().execute_job(job, queue)
        finally:
            close_old_connections()

    def handle_job_failure(self, job, queue, *args, **kwargs):
        # Whatever queued it (a job from before failure TTLs were set, a benchmark's), a failed job
        # stays in Redis at most OMIPORTAL_JOB_FAILURE_TTL_SECONDS, not rq's default year.
        cap = max(1, int(settings.OMIPORTAL_JOB_FAILURE_TTL_SECONDS))
        asked = job.failure_ttl
        job.failure_ttl = cap if asked is None or asked < 0 else min(asked, cap)  # -1 would be for ever
        return super().handle_job_failure(job, queue, *args, **kwargs)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        # The queues are listed in the order they matter (poll first: a look is one short call, and
        # must not wait behind a burst of starts), but rq takes from the first non-empty queue
        # for as long as it has jobs: a poll queue kept busy (a thousand direct copies' starts,
        # each seconds of paced, throttled calls) starved every export start and grant in
        # `default` for minutes in the two-host fault run. So after each job taken in the listed
        # order, a later queue whose head has waited past OMIPORTAL_QUEUE_PATIENCE_SECONDS gets a
        # turn: its jobs for up to LATE_TURN_SECONDS (a second of mail is a hundred mails, of
        # grants one grant; counting jobs instead left 4,600 mails behind three slow steps each),
        # late queues taking turns in rotation (the eldest head every time let a burst of mail in
        # `background` starve `default` again). A look waits a turn and the job in progress at most.
        self._ordered_queues = list(self.queues)
        forced = None
        if self._turn is not None and time.monotonic() - self._turn[1] < LATE_TURN_SECONDS:
            forced = self._turn[0]
        elif self._turn is not None:
            self._turn = None  # over: this job in the listed order
        else:
            try:
                late = late_queues(self.queues, self.connection, patience=settings.OMIPORTAL_QUEUE_PATIENCE_SECONDS,
                                   now=clock.now_timestamp())
            except Exception:  # noqa: BLE001 - Redis or the clock failing: the listed order, as rq would
                logger.exception("Could not compare the queues' waits")
                late = []
            if late:
                names = [q.name for q in self.queues]
                # The first late queue at or after the one after the last turn, cyclically.
                forced = min(late, key=lambda q: (names.index(q.name) - self._next_late) % len(names))
                self._turn, self._next_late = (forced, time.monotonic()), names.index(forced.name) + 1
        if forced is not None:
            self._ordered_queues = [forced, *(q for q in self.queues if q is not forced)]
        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        if forced is not None and (result is None or result[1].name != forced.name):
            self._turn = None  # it ran dry (the job came from the listed order)
        return result

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker wakes at least once a maintenance interval, so the reconciler
        # keeps running even when no job arrives (rq would otherwise block ~7 minutes).
        return max(1, min(super().dequeue_timeout, int(self.maintenance_interval)))

    def _start_scheduler(self, *args, **kwargs):
        super()._start_scheduler(*args, **kwargs)
        with contextlib.suppress(Exception):  # noted again at the next maintenance tick
            note_scheduler_host(self.connection, self.scheduler)

    def run_maintenance_tasks(self):
        if self.scheduler is not None:  # --with-scheduler: rq's maintenance then takes the locks let go here
            try:
                note_scheduler_host(self.connection, self.scheduler)
                released = release_dead_scheduler_locks(self.connection, self.queue_names())
            except Exception:  # noqa: BLE001 - the locks then expire as rq intends; the next tick retries
                logger.exception("Could not check the scheduler locks")
            else:
                if released:
                    logger.warning("Scheduler locks of %s released: their scheduler's process is gone.",
                                   ", ".join(released))
        super().run_maintenance_tasks()
        try:
            ensure_reconcile_enqueued()
        except Exception:  # noqa: BLE001 - a broken tick must not stop the worker; the next one retries
            logger.exception("Could not enqueue the reconciler")
        try:  # audit checkpoint and verification jobs, each at most once per its interval
            ensure_audit_jobs_enqueued()
        except Exception:  # noqa: BLE001 - as above: the next tick retries
            logger.exception("Could not enqueue the audit jobs")
