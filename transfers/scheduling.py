"""Putting background work on the queues: on commit, ids only, duplicates harmless.

Redis only carries the next step; the database says where each transfer stands.
When Redis is unreachable or flushed, nothing is lost: the reconciler finds rows
whose next look is overdue and enqueues their step again.
"""

import logging
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError

logger = logging.getLogger(__name__)

JOB_RESULT_TTL = 60  # seconds; results are never read, only kept for the dashboard


def sweep_min() -> float:
    return float(settings.OMIPORTAL_SWEEP_MIN_SECONDS)


def sweep_max() -> float:
    return float(settings.OMIPORTAL_SWEEP_MAX_SECONDS)


def next_interval(previous: float, *, changed: bool) -> float:
    """Back off while nothing changes (exports can take hours); snap back when something does."""
    if changed or previous <= 0:
        return sweep_min()
    return min(sweep_max(), previous * 1.5)


def _send(func: str, args: tuple, *, job_id: str, queue: str, delay: float, result_ttl: int) -> None:
    try:
        q = django_rq.get_queue(queue)
        options = {"job_id": job_id, "unique": True, "result_ttl": result_ttl, "description": job_id}
        if delay > 0:
            q.enqueue_in(timedelta(seconds=delay), func, *args, **options)
        else:
            q.enqueue(func, *args, **options)
    except DuplicateJobError:
        pass  # the same step is already queued: running it twice would be harmless anyway
    except RedisError:
        logger.warning("Could not enqueue %s; the reconciler will retry it.", job_id)


def enqueue(func: str, *args, job_id: str, queue: str = "default", delay: float = 0,
            result_ttl: int = JOB_RESULT_TTL) -> None:
    """Enqueue ``func(*args)`` (ids only) once the current transaction commits."""
    transaction.on_commit(lambda: _send(func, args, job_id=job_id, queue=queue, delay=delay, result_ttl=result_ttl))


def schedule_sweep(kind: str, account_public_id, when) -> None:
    """Schedule the ``kind`` ("export" or "import") sweep of one account at ``when``.

    The job id names the tenth of a second it is due, so several rows asking for the
    same sweep share one job, and a sweep never runs for nothing more than once a slot.
    """
    from rq import get_current_job

    slot = int(when.timestamp() * 10)
    job_id = f"{kind}-sweep-{account_public_id}-{slot}"
    current = get_current_job()
    if current is not None and current.id == job_id:
        # A sweep that ran early (the scheduler works to the second) asks for its own slot
        # again: take the next one, or the running job's id would swallow the request.
        slot += 1
        job_id = f"{kind}-sweep-{account_public_id}-{slot}"
    delay = max(0.0, slot / 10 - timezone.now().timestamp())
    # Finished sweeps leave no trace (result_ttl=0), so a later request for a slot is never
    # mistaken for a duplicate of one that already ran.
    enqueue(f"transfers.jobs.{kind}_sweep_job", str(account_public_id), job_id=job_id, queue="poll", delay=delay,
            result_ttl=0)
