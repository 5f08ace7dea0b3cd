"""A start job begins its account's other waiting export starts beside its own (issue 19: at
10,000 transfers with an image each, one start after the other kept both workers busy), and each
export is still started exactly once, whichever job or worker gets to it."""

import pytest

from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import approve, make_transfer_world, request_share, seed_images
from transfers import jobs
from transfers.models import Export
from transfers.services import export_starts

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA = "111122223333"


def _exports_requested(world, cloud, n):
    """n approved shares of alpha's, each of an image of its own: n exports, each with its start
    job queued (none run yet), each export slow enough to stay running."""
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    names = [f"alpha-start-{k}" for k in range(n)]
    seed_images(cloud, "alpha", names)
    for name in names:
        approve(world, request_share(world, cloud, image=name, copy_name=f"copy-{name}"))
    exports = list(Export.objects.order_by("pk"))
    assert len(exports) == n and {e.state for e in exports} == {Export.State.STARTING}
    return exports


def _started_by() -> list[str]:
    return list(AuditEvent.objects.filter(action="export.started").values_list("request_id", flat=True))


def test_one_start_job_starts_the_waiting_exports_and_their_own_jobs_find_them_started(flow, cloud):
    exports = _exports_requested(flow, cloud, 6)
    assert not cloud.counters(ALPHA).get("CreateImageExportTask")

    jobs.export_start_job(str(exports[0].public_id))  # the first of the queued jobs

    rows = list(Export.objects.order_by("pk"))
    assert {e.state for e in rows} == {Export.State.RUNNING} and {e.attempts for e in rows} == {1}
    assert cloud.counters(ALPHA)["CreateImageExportTask"] == 6
    assert _started_by() == [f"export-start-{exports[0].public_id}"] * 6
    workers.run_jobs(until=lambda: True)  # the other five start jobs, queued at the approvals
    assert cloud.counters(ALPHA)["CreateImageExportTask"] == 6  # found started: nothing more
    assert {e.attempts for e in Export.objects.all()} == {1}


def test_only_never_tried_starts_go_along_and_at_most_the_companions_limit(flow, cloud, monkeypatch):
    monkeypatch.setattr(export_starts, "START_COMPANIONS", 2)
    exports = _exports_requested(flow, cloud, 5)
    # The second was tried and put off (throttled): it keeps the time its put-off gave it.
    Export.objects.filter(pk=exports[1].pk).update(attempts=1)

    jobs.export_start_job(str(exports[0].public_id))

    started = set(Export.objects.filter(state=Export.State.RUNNING).values_list("pk", flat=True))
    assert started == {exports[0].pk, exports[2].pk, exports[3].pk}  # its own and two companions
    assert cloud.counters(ALPHA)["CreateImageExportTask"] == 3


def test_two_worker_processes_start_each_export_once(cloud):
    """Two real workers take the queued start jobs at once, each with the others as companions:
    both claim from the same rows; each export is created once."""
    workers.flush()
    world = make_transfer_world(cloud)
    exports = _exports_requested(world, cloud, 8)
    env = workers.worker_env(cloud, OMIPORTAL_SWEEP_MIN_SECONDS=0.2, OMIPORTAL_SWEEP_MAX_SECONDS=0.5)
    procs = [workers.start_worker(env), workers.start_worker(env)]
    try:
        workers.wait_for(lambda: Export.objects.filter(state=Export.State.RUNNING).count() == 8, 60,
                         "every export to start")
    finally:
        for proc in procs:
            workers.kill_tree(proc)
        workers.flush()
    assert cloud.counters(ALPHA)["CreateImageExportTask"] == 8
    assert {e.attempts for e in Export.objects.all()} == {1}
    started_by = _started_by()
    assert len(started_by) == 8
    assert len(set(started_by)) < 8, started_by  # some started by another export's job
    assert {e.public_id for e in exports} == set(Export.objects.values_list("public_id", flat=True))
