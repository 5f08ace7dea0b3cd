"""Background jobs of the audit trail, enqueued from the worker's maintenance tick.

``ensure_audit_jobs_enqueued`` is called on every tick of every worker; a Redis key
with the interval as its lifetime (``SET NX EX``) makes each job go out at most once
per interval across all workers, and a job id naming the interval's slot keeps a waiting one from
doubling while a killed one blocks only its slot (recorder.slot_job_id).
``audit_chain_job`` chains the events a request left pending (recorder._park): the request
asks for it when it commits, and every tick asks again while any are pending, so an enqueue lost
with Redis only delays them by a tick.
"""

import contextlib
import logging

import django_rq
from django.conf import settings
from rq.exceptions import DuplicateJobError

from audit import checkpoints, integrity, recorder
from audit.models import AuditPendingEvent

logger = logging.getLogger(__name__)

QUEUE = "default"
CHECKPOINT_JOB_ID = "audit-checkpoint"
VERIFY_JOB_ID = "audit-verify"
CHAIN_JOB_ID = recorder.CHAIN_JOB_ID
THROTTLE_KEY = recorder.THROTTLE_KEY


def audit_checkpoint_job() -> str:
    outcome = integrity.write_checkpoint()
    logger.info("Audit checkpoint: %s", outcome.message)
    return outcome.message


def audit_verify_job() -> bool:
    result = integrity.run_verification()
    if not result.ok:
        logger.error("Audit trail verification failed: %s", result.describe())
    return result.ok


def audit_chain_job() -> int:
    chained = recorder.chain_pending()
    if chained:
        logger.info("Audit: %d pending event(s) chained", chained)
    return chained


def _jobs():
    if checkpoints.enabled():
        yield CHECKPOINT_JOB_ID, "audit.jobs.audit_checkpoint_job", \
            int(settings.OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS)
    yield VERIFY_JOB_ID, "audit.jobs.audit_verify_job", int(settings.OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS)


def ensure_audit_jobs_enqueued() -> list[str]:
    """Enqueue whichever audit job's interval has passed; returns the names of those enqueued."""
    queue = django_rq.get_queue(QUEUE)
    enqueued = []
    for job_id, func, interval in _jobs():
        if interval <= 0:
            continue
        if not queue.connection.set(THROTTLE_KEY.format(job_id=job_id), "1", nx=True, ex=interval):
            continue
        with contextlib.suppress(DuplicateJobError):
            # A failed job's record stays failure_ttl in rq's failed registry: half an interval,
            # so the records of failed runs do not pile up (the next run has its slot's own id).
            queue.enqueue(func, job_id=recorder.slot_job_id(job_id, interval), unique=True, result_ttl=0,
                          failure_ttl=max(1, interval // 2))
            enqueued.append(job_id)
    if AuditPendingEvent.objects.exists() and recorder.enqueue_chaining(queue):
        enqueued.append(CHAIN_JOB_ID)
    return enqueued
