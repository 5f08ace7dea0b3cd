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
