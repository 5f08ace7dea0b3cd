"""OMIPORTAL_WORKER_NICE: a worker takes the CPU the web tier leaves, where the kernel weighs it.

With autogroups (on here and on CI), a worker in a session of its own at nice 10 gets a whole
session's share: the kernel weighs sessions first (omiportal/priority.py). The worker started
as the benchmark and service managers start it (a session of its own) must lower its session's
autogroup; one started beside others in a session must leave the session's autogroup alone.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from tests.workers import ROOT, database_url, kill_tree

pytestmark = pytest.mark.django_db(transaction=True)


def _autogroup_nice(pid: int) -> int | None:
    """The nice of the process's autogroup; None when it is in the kernel's default group (a
    process tree that never started a session of its own, as on CI), which is no autogroup and
    reads as an empty file."""
    text = Path(f"/proc/{pid}/autogroup").read_text()
    return int(text.split("nice")[-1]) if text.strip() else None


def test_a_worker_in_a_session_of_its_own_lowers_its_nice_and_its_sessions_autogroup_and_its_scheduler_inherits_both():
    env = {**os.environ, "OMIPORTAL_ENV_FILE": "", "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL,
           "OMIPORTAL_WORKER_NICE": "10"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "rqworker", "poll", "default",
                             "--with-scheduler"], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        worker = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (worker.nice() == 10 and worker.children()):
            assert proc.poll() is None, "the worker stopped"
            time.sleep(0.2)
        scheduler = worker.children()
        assert worker.nice() == 10 and _autogroup_nice(proc.pid) == 10
        assert scheduler and all(child.nice() == 10 and _autogroup_nice(child.pid) == 10 for child in scheduler)
    finally:
        kill_tree(proc)


def test_a_worker_sharing_a_session_lowers_only_itself_and_says_so():
    mine = _autogroup_nice(os.getpid())
    code = ("import os; from omiportal.priority import yield_cpu; "
            "print(yield_cpu(7)); print(os.getpriority(os.PRIO_PROCESS, 0))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    said, nice = out.splitlines()
    assert nice == "7"
    assert "nice 7" in said and "its session holds other processes" in said
    assert _autogroup_nice(os.getpid()) == mine  # the shared session's autogroup is not the worker's to lower


def test_nothing_is_changed_at_the_shipped_setting_or_raised_past_what_it_is(tmp_path):
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-1 nice 12\n")
    code = ("import os, sys; from pathlib import Path; from omiportal.priority import yield_cpu; "
            "os.setpriority(os.PRIO_PROCESS, 0, 12); "
            "print(yield_cpu(0, autogroup=Path(sys.argv[1])), yield_cpu(10, autogroup=Path(sys.argv[1])), "
            "os.getpriority(os.PRIO_PROCESS, 0))")
    out = subprocess.run([sys.executable, "-c", code, str(autogroup)], cwd=ROOT, capture_output=True, text=True,
                         check=True, start_new_session=True).stdout
    assert out.split() == ["[]", "[]", "12"]
    assert autogroup.read_text() == "/autogroup-1 nice 12\n"
