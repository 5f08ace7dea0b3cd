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


# --- the multi-host fault run, small form ------------------------------------------------------


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_hosts_one_clock_five_seconds_ahead_run_the_fault_run_with_each_transfer_created_once(tmp_path):
    from django.db import connection

    from bench import faults

    if connection.vendor != "postgresql":
        pytest.skip("hosts share PostgreSQL, whose clock they keep; SQLite is one machine's (CI runs PostgreSQL)")
    workers.flush()
    try:
        result = faults.run(faults.hosts_small(out_dir=tmp_path, logs_dir=tmp_path, yes=True), log=print)
    finally:
        workers.flush()
    report = faults.table(result)
    print(report)  # shown with -s, and with a failure's output

    assert result["hosts"] == 2 and result["skews"] == [0.0, 5.0]
    # The skew is real: the second host measured its clock 5 s ahead of the database's.
    first, second = result["clock_offsets"]
    assert abs(first) < 0.5 and abs(second + 5.0) < 0.5, result["clock_offsets"]
    assert result["events"], f"no worker was killed\n{report}"
    assert all(result["jobs_by_host"].get(f"host-{h}") for h in (1, 2)), f"a host did no work\n{report}"
    failed = [name for name, check in result["checks"].items() if not check["met"]]
    assert not failed, f"checks failed: {failed}\n{report}"
    assert {"checkpoints_verify_from_every_host", "a_host_directory_is_caught"} <= set(result["checks"])
