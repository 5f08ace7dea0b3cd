"""A real `manage.py rqworker` process killed with SIGKILL in the middle of a step:
the transfer still completes, and the cloud sees exactly one export."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.db import connection

from tests import workers
from tests.transfer_world import approve, make_transfer_world, request_share
from transfers.models import Export, Share

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_worker(cloud) -> subprocess.Popen:
    env = {**os.environ, "OMIPORTAL_ENV_FILE": "", "DATABASE_URL": _database_url(), "REDIS_URL": settings.REDIS_URL,
           "OMIPORTAL_OUTSCALE_ENDPOINTS": json.dumps(cloud.endpoints()),
           "OMIPORTAL_SWEEP_MIN_SECONDS": "0.2", "OMIPORTAL_SWEEP_MAX_SECONDS": "0.5",
           "OMIPORTAL_RECONCILE_GRACE_SECONDS": "1", "OMIPORTAL_RECONCILE_EVERY_SECONDS": "1",
           "OMIPORTAL_OUTSCALE_READ_TIMEOUT": "60"}
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "rqworker", "default", "poll",
                             "--with-scheduler"], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _kill(proc):
    """SIGKILL the worker and its work horse (rq runs each job in a child of its own group)."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_worker_killed_mid_export_loses_nothing_and_duplicates_nothing(cloud, settings):
    workers.flush()
    world = make_transfer_world(cloud)
    share = request_share(world, cloud)
    # The export call hangs inside OUTSCALE: that is where the worker dies.
    cloud.faults.configure(hang_seconds=60, actions={"CreateImageExportTask"})
    approve(world, share)
    first = _start_worker(cloud)
    try:
        # The step counts its attempt in the database, then calls CreateImageExportTask and hangs.
        _wait(lambda: Export.objects.filter(shares=share, attempts__gte=1).exists(), 60, "the export step to start")
        time.sleep(1.0)
        assert not cloud.counters("111122223333").get("CreateImageExportTask")
    finally:
        _kill(first)
    cloud.faults.reset()
    second = _start_worker(cloud)
    try:
        _wait(lambda: Share.objects.get(pk=share.pk).state == Share.State.READY, 90, "the share to be ready")
    finally:
        _kill(second)
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 1
    workers.flush()
