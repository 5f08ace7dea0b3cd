"""Running the portal's RQ jobs in tests: a real Redis, a real burst SimpleWorker.

Scheduled jobs (polls, retries) are moved to their queues at once instead of
waiting for their time: the sweeps compare with the database's next_poll_at
themselves, so running early only means finding nothing due yet.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import django_rq
import psutil
from rq import SimpleWorker
from rq.serializers import JSONSerializer

QUEUES = ("poll", "default", "background")


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


def killed_mid_run(queue_name: str = "default"):
    """Take the next job as a worker does and never finish it: what a SIGKILL leaves in rq (the
    job "started", in the started registry, until rq declares it abandoned)."""
    queue = django_rq.get_queue(queue_name)
    worker = SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer)
    job, _queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.prepare_execution(job)  # as SimpleWorker.execute_job, then perform_job up to the call
    worker.prepare_job_execution(job)
    return job


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


# --- real worker processes (`manage.py rqworker`) for the kill and fault tests -------------------

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The test database, as a URL a worker subprocess can open."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(cloud, **overrides) -> dict:
    """The environment of a worker subprocess: this test's database, Redis and sandbox."""
    from django.conf import settings

    return {**os.environ, "OMIPORTAL_ENV_FILE": "", "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL, "OMIPORTAL_OUTSCALE_ENDPOINTS": json.dumps(cloud.endpoints()),
            **{name: str(value) for name, value in overrides.items()}}


def start_worker(env: dict, *, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "rqworker", "poll", "default",
                             "--with-scheduler"], env=env, cwd=ROOT, start_new_session=True,
                            stdout=stdout, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, what: str) -> None:
    """Until ``predicate()`` holds, for real workers to get somewhere; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and its scheduler (a forked child that moves due jobs to their queues)."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
