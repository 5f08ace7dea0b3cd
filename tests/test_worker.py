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


# --- Turns between queues: poll first, but a later queue never starves -----------------------------

RAN = "test-worker:ran"


def note(name: str) -> None:  # a job: what ran, in order
    django_rq.get_connection("default").rpush(RAN, name)


def slow_note(name: str) -> None:  # a job that takes a while (a paced, throttled step)
    import time

    time.sleep(1.2)
    note(name)


def _enqueue(queue, name: str, *, waited: float = 0.0, job: str = "note") -> None:
    from datetime import UTC, datetime, timedelta

    from rq.utils import utcformat

    job = queue.enqueue(f"tests.test_worker.{job}", name, job_id=name)
    if waited:  # as if it had been waiting that long at the head of its queue
        at = datetime.now(UTC) - timedelta(seconds=waited)
        queue.connection.hset(job.key, "enqueued_at", utcformat(at))


def _run(queues) -> list[str]:
    connection = queues[0].connection
    connection.delete(RAN)
    PortalWorker(queues, connection=connection).work(burst=True, logging_level="WARNING")
    return [name.decode() for name in connection.lrange(RAN, 0, -1)]


@pytest.mark.django_db(transaction=True)  # the worker reads the database clock; enqueues are not held for a commit
def test_a_busy_poll_queue_goes_first_but_a_job_past_its_patience_in_default_gets_a_turn(queues, settings):
    """rq alone takes from the first non-empty queue for as long as it has jobs: with poll kept
    busy, `default` (export starts, grants, mail) starved (the two-host fault run: 131 export
    starts untouched for minutes). A later queue whose head waited past the patience now gets a
    turn (its jobs for up to a second) between jobs taken in the listed order."""
    settings.OMIPORTAL_QUEUE_PATIENCE_SECONDS = 10
    default, poll = queues
    for n in range(3):
        _enqueue(poll, f"look-{n}")
    _enqueue(default, "start-0", waited=60)
    _enqueue(default, "start-1", waited=59)
    assert _run([poll, default]) == ["start-0", "start-1", "look-0", "look-1", "look-2"]


@pytest.mark.django_db(transaction=True)
def test_a_job_in_default_within_its_patience_waits_for_the_poll_queue_as_listed(queues, settings):
    settings.OMIPORTAL_QUEUE_PATIENCE_SECONDS = 10
    default, poll = queues
    _enqueue(default, "start-0", waited=5)
    for n in range(2):
        _enqueue(poll, f"look-{n}")
    assert _run([poll, default]) == ["look-0", "look-1", "start-0"]


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_takes_default_takes_background_too_after_the_others_unless_it_waited_past_its_patience(
        queues, settings):
    """`rqworker poll default`, the command deployments run, also sends the mail and runs the
    checks that moved to `background`; they come last, and get their turn once they waited."""
    settings.OMIPORTAL_QUEUE_PATIENCE_SECONDS = 10
    default, poll = queues
    background = django_rq.get_queue("background")
    _enqueue(background, "mail-0")
    _enqueue(default, "start-0")
    _enqueue(poll, "look-0")
    assert _run([poll, default]) == ["look-0", "start-0", "mail-0"]
    _enqueue(background, "mail-1", waited=30)
    _enqueue(default, "start-1", waited=20)
    _enqueue(poll, "look-1")
    _enqueue(poll, "look-2")
    assert _run([poll, default]) == ["start-1", "look-1", "mail-1", "look-2"]
    assert "background" not in PortalWorker([poll], connection=poll.connection).queue_names()


@pytest.mark.django_db(transaction=True)
def test_late_queues_take_the_turns_poll_leaves_in_rotation_not_the_eldest_head_every_time(queues, settings):
    """With poll busy, a backlog of mail older than the export starts took every turn meant for a
    late queue (the eldest head first), and `default` starved again behind `background`."""
    settings.OMIPORTAL_QUEUE_PATIENCE_SECONDS = 10
    default, poll = queues
    background = django_rq.get_queue("background")
    for n in range(2):
        _enqueue(background, f"mail-{n}", waited=120 - n)
    for n in range(2):
        _enqueue(default, f"start-{n}", waited=60 - n)
    for n in range(4):
        _enqueue(poll, f"look-{n}")
    assert _run([poll, default]) == ["start-0", "start-1", "look-0", "mail-0", "mail-1", "look-1", "look-2",
                                     "look-3"]


@pytest.mark.django_db(transaction=True)
def test_a_late_queues_turn_is_a_second_of_its_jobs_so_slow_steps_give_poll_its_turn_and_mail_drains_fast(
        queues, settings, monkeypatch):
    """Counting jobs, a turn of mail (10 ms each) was worth a turn of grants (seconds each): 4,600
    mails waited behind the steps. A turn is now time: many quick jobs, or one or two slow ones."""
    from omiportal import worker

    settings.OMIPORTAL_QUEUE_PATIENCE_SECONDS = 10
    monkeypatch.setattr(worker, "LATE_TURN_SECONDS", 2.0)  # wide margins for a loaded machine
    default, poll = queues
    for n in range(3):
        _enqueue(default, f"slow-{n}", waited=60, job="slow_note")
    for n in range(2):
        _enqueue(poll, f"look-{n}")
    # slow-1 starts 1.2 s into the 2 s turn, slow-2 would start at 2.4 s: past it, a look first.
    assert _run([poll, default]) == ["slow-0", "slow-1", "look-0", "slow-2", "look-1"]
