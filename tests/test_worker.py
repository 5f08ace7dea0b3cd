"""The portal's worker class: JSON only, and a reconciler on every maintenance tick."""

import django_rq
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from omiportal.worker import PortalWorker
from tests import workers


@pytest.fixture
def queues():
    workers.flush()
    yield [django_rq.get_queue("default"), django_rq.get_queue("poll")]
    workers.flush()


def test_the_worker_reads_jobs_as_json_whatever_the_command_line_says(queues):
    worker = PortalWorker(queues, connection=queues[0].connection, serializer="rq.serializers.DefaultSerializer")
    assert worker.serializer is JSONSerializer


def test_each_maintenance_tick_enqueues_the_reconciler_once(queues):
    worker = PortalWorker(queues, connection=queues[0].connection)
    worker.run_maintenance_tasks()
    worker.run_maintenance_tasks()
    [job_id] = django_rq.get_queue("poll").job_ids
    assert job_id.startswith("reconcile-")
    job = Job.fetch(job_id, connection=queues[0].connection, serializer=JSONSerializer)
    assert job.func_name == "transfers.jobs.reconcile_job" and list(job.args) == []


def test_a_pickled_payload_planted_in_redis_is_not_run(queues):
    from rq.exceptions import DeserializationError

    connection = queues[0].connection
    job = Job.create("os.system", args=("echo pwned",), connection=connection)  # rq's default: pickle
    job.save()
    with pytest.raises(DeserializationError):
        Job.fetch(job.id, connection=connection, serializer=JSONSerializer).func_name  # noqa: B018


def test_a_failed_reconcile_does_not_switch_the_safety_net_off(queues, settings):
    settings.OMIPORTAL_RECONCILE_EVERY_SECONDS = 1
    worker = PortalWorker(queues, connection=queues[0].connection)
    worker.run_maintenance_tasks()
    [first] = django_rq.get_queue("poll").job_ids
    job = Job.fetch(first, connection=queues[0].connection, serializer=JSONSerializer)
    django_rq.get_queue("poll").remove(job)
    job.set_status("failed")  # what a crashed run leaves behind for failure_ttl seconds
    import time

    time.sleep(1.1)
    worker.run_maintenance_tasks()
    [second] = django_rq.get_queue("poll").job_ids
    assert second != first


def test_a_scheduler_lock_left_by_a_worker_killed_on_this_machine_is_let_go(queues):
    """rq keeps a killed scheduler's lock 61 s, and no delayed job (every sweep) moves meanwhile."""
    import os
    import socket
    import subprocess
    import sys

    from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

    from omiportal.worker import release_dead_scheduler_locks

    connection = queues[0].connection
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def held_by(queue, host, pid):
        connection.set(RQScheduler.get_locking_key(queue), f"scheduler-{queue}")
        connection.hset(SCHEDULER_KEY_TEMPLATE % f"scheduler-{queue}", mapping={"hostname": host, "pid": pid})

    held_by("default", socket.gethostname(), gone.pid)  # its process is gone: let go at once
    held_by("poll", socket.gethostname(), os.getpid())  # alive: kept
    assert release_dead_scheduler_locks(connection, ["default", "poll"]) == ["default"]
    assert connection.get(RQScheduler.get_locking_key("default")) is None
    assert connection.get(RQScheduler.get_locking_key("poll")) == b"scheduler-poll"
    held_by("default", "another-machine", gone.pid)  # cannot be checked from here: it expires as rq intends
    assert release_dead_scheduler_locks(connection, ["default", "poll"]) == []
    for queue in ("default", "poll"):
        connection.delete(RQScheduler.get_locking_key(queue), SCHEDULER_KEY_TEMPLATE % f"scheduler-{queue}")
