"""More than one host: which host a scheduler runs on (OMIPORTAL_HOST_ID), and the multi-host fault
run's small form (bench/hosts.py: two process groups with their own state directories, one with
its clock skewed by libfaketime, sharing PostgreSQL, Redis and the checkpoint bucket)."""

import os
import socket
import subprocess
import sys

import django_rq
import pytest
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

from omiportal.worker import SCHEDULER_HOST_KEY, note_scheduler_host, release_dead_scheduler_locks
from tests import workers


@pytest.fixture
def redis_connection():
    workers.flush()
    yield django_rq.get_connection("default")
    workers.flush()


def _held_by(connection, queue, host, pid):
    name = f"scheduler-{queue}"
    connection.set(RQScheduler.get_locking_key(queue), name)
    connection.hset(SCHEDULER_KEY_TEMPLATE % name, mapping={"hostname": host, "pid": pid})
    return name


def test_a_dead_scheduler_of_another_host_id_on_this_machine_keeps_its_lock(redis_connection, settings):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # Two "hosts" on one machine: rq records the same machine name for both.
    settings.OMIPORTAL_HOST_ID = "host-2"
    name = _held_by(redis_connection, "default", socket.gethostname(), gone.pid)
    redis_connection.set(SCHEDULER_HOST_KEY % name, "host-1")
    assert release_dead_scheduler_locks(redis_connection, ["default"]) == []  # host-1's pids are not ours
    assert redis_connection.get(RQScheduler.get_locking_key("default")) == name.encode()
    # Its own host lets go of it at once.
    settings.OMIPORTAL_HOST_ID = "host-1"
    assert release_dead_scheduler_locks(redis_connection, ["default"]) == ["default"]


def test_a_scheduler_with_no_note_counts_as_on_the_machine_rq_recorded(redis_connection, settings):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _held_by(redis_connection, "default", socket.gethostname(), gone.pid)
    _held_by(redis_connection, "poll", socket.gethostname(), os.getpid())  # alive: kept
    settings.OMIPORTAL_HOST_ID = "host-2"  # set apart: an unnoted scheduler is not this host's
    assert release_dead_scheduler_locks(redis_connection, ["default", "poll"]) == []
    settings.OMIPORTAL_HOST_ID = socket.gethostname()  # the default
    assert release_dead_scheduler_locks(redis_connection, ["default", "poll"]) == ["default"]


def test_a_worker_notes_its_schedulers_host_id(redis_connection, settings):
    settings.OMIPORTAL_HOST_ID = "host-7"
    scheduler = RQScheduler(["default"], connection=redis_connection)
    note_scheduler_host(redis_connection, scheduler)
    assert redis_connection.get(SCHEDULER_HOST_KEY % scheduler.name) == b"host-7"
    assert 0 < redis_connection.ttl(SCHEDULER_HOST_KEY % scheduler.name) <= 7 * 24 * 3600
