"""A real `manage.py rqworker` process killed with SIGKILL in the middle of a step:
the transfer still completes, and the cloud sees exactly one export."""

import time

import pytest

from tests import workers
from tests.transfer_world import approve, make_transfer_world, request_share
from transfers.models import Export, Share

pytestmark = pytest.mark.django_db(transaction=True)


def _start_worker(cloud):
    # The step the first worker dies in is leased for the longest its cloud calls can take at
    # these settings (polling.start_call_seconds): kept short here (one attempt, short timeouts,
    # one thread) so that the second worker takes it over within the test's patience.
    return workers.start_worker(workers.worker_env(
        cloud, OMIPORTAL_SWEEP_MIN_SECONDS=0.2, OMIPORTAL_SWEEP_MAX_SECONDS=0.5, OMIPORTAL_RECONCILE_GRACE_SECONDS=1,
        OMIPORTAL_RECONCILE_EVERY_SECONDS=1, OMIPORTAL_OUTSCALE_READ_TIMEOUT=8, OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT=1,
        OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS=1, OMIPORTAL_SWEEP_CONCURRENCY=1, OMIPORTAL_OUTSCALE_CALLS_PER_SECOND=100,
        OMIPORTAL_SWEEP_BUDGET_SECONDS=0.5))


_wait = workers.wait_for

_kill = workers.kill_tree


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
