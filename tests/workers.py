"""Running the portal's RQ jobs in tests: a real Redis, a real burst SimpleWorker.

Scheduled jobs (polls, retries) are moved to their queues at once instead of
waiting for their time: the sweeps compare with the database's next_poll_at
themselves, so running early only means finding nothing due yet.
"""

import time

import django_rq
from rq import SimpleWorker
from rq.serializers import JSONSerializer

QUEUES = ("default", "poll")


def queues():
    return [django_rq.get_queue(name) for name in QUEUES]


def flush() -> None:
    django_rq.get_connection("default").flushdb()


def pending_jobs() -> int:
    return sum(q.count + q.scheduled_job_registry.count for q in queues())


def release_scheduled() -> None:
    for q in queues():
        registry = q.scheduled_job_registry
        for job_id in registry.get_job_ids():
            job = q.fetch_job(job_id)
            registry.remove(job_id)
            if job is not None:
                q.enqueue_job(job)


def run_jobs(until=None, *, timeout: float = 30.0, pause: float = 0.05) -> None:
    """Work the queues (in this process) until ``until()`` holds, or until nothing is left."""
    qs = queues()
    worker = SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer)
    deadline = time.monotonic() + timeout
    while True:
        release_scheduled()
        worker.work(burst=True, logging_level="WARNING")
        if until is not None and until():
            return
        if until is None and pending_jobs() == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not reach the expected state within {timeout}s "
                                 f"({pending_jobs()} job(s) pending)")
        time.sleep(pause)
