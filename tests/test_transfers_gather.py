"""Gathered looks (polling.gather_until): at an account where more looks fall due soon, a look due
now waits for them, up to scheduling.gather_seconds(), and one call then sees every row. Real
sandbox over HTTP, real jobs to start the rows, then one sweep called directly at the shipped sweep
settings so its calls and what it books can be read exactly."""

import math
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.verify import verify_chain
from tests import workers
from tests.transfer_world import approve, imports_started, request_share, seed_images
from transfers import scheduling
from transfers.models import Export, Recipient
from transfers.services import exports, import_sweeps, polling

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = "444455556666"
ALPHA = "111122223333"
WINDOW = 45.0  # the shipped OMIPORTAL_SWEEP_GATHER_SECONDS, within the shipped sweep_max and grace


@pytest.fixture
def shipped(settings):
    """The sweep settings that ship (the flow fixture makes them fast for the jobs that start rows)."""
    def apply():
        settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 5.0, 60.0
        settings.OMIPORTAL_RECONCILE_GRACE_SECONDS, settings.OMIPORTAL_SWEEP_GATHER_SECONDS = 60.0, WINDOW
        assert scheduling.gather_seconds() == WINDOW
    return apply


def _due_in(rows, offsets, *, now=None) -> None:
    now = now or timezone.now()
    for row, offset in zip(rows, offsets, strict=True):
        type(row).objects.filter(pk=row.pk).update(next_poll_at=now + timedelta(seconds=offset))


def _finish_import(cloud, image_id: str) -> None:
    with cloud.world.lock:
        cloud.world.images[image_id].ready_at = time.monotonic()


def _booked(kind: str, account) -> list[str]:
    """The grid slots of the account's booked sweeps."""
    prefix = f"{kind}-sweep-{account.public_id}-"
    return [j[len(prefix):] for j in scheduling.get_queue("poll").scheduled_job_registry.get_job_ids()
            if j.startswith(prefix)]


def _slot(when) -> str:
    return str(math.ceil(when.timestamp() / scheduling.slot_seconds()))


def _gather(flow, now=None):
    return polling.gather_until(Recipient, account=flow.delta, states=import_sweeps.WATCHED,
                                extra=import_sweeps.WATCHABLE, now=now or timezone.now(), prompt=import_sweeps.PROMPT)


def test_a_look_due_where_more_fall_due_soon_waits_for_them_and_one_call_sees_all(flow, cloud, shipped):
    rows = imports_started(flow, cloud, 4)
    shipped()
    now = timezone.now()
    _due_in(rows, [0, 10, 20, 30], now=now)
    for row in rows:  # all ended: only a look can tell, and one look is enough
        _finish_import(cloud, row.image_id)
    workers.flush()
    before = cloud.counters(DELTA)

    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    assert cloud.counters(DELTA).get("ReadImages", 0) == before.get("ReadImages", 0)  # no call yet
    assert set(Recipient.objects.values_list("state", flat=True)) == {"importing"}
    # Nothing claimed: each row still says when its own look is due.
    assert [r.next_poll_at for r in Recipient.objects.order_by("pk")] == \
        [now + timedelta(seconds=s) for s in (0, 10, 20, 30)]
    # The sweep is booked where the last of them falls due.
    assert _booked("import", flow.delta) == [_slot(now + timedelta(seconds=30))]

    # That time comes (the looks moved 30 s back): one call sees all four and completes them.
    _due_in(rows, [-30, -20, -10, 0])
    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    after = cloud.counters(DELTA)
    assert after["ReadImages"] == before.get("ReadImages", 0) + 1
    assert after["CreateTags"] == before.get("CreateTags", 0) + 1  # copies of one source: one tag call
    assert set(Recipient.objects.values_list("state", flat=True)) == {"completed"}
    assert verify_chain().ok


@pytest.mark.parametrize(("offsets", "look_at"), [
    ([0, 10, 20, 30], 30),  # a stream: wait for the last one due within the window
    ([0, 10, 20, 50], 20),  # never past the window of the earliest due look
    ([0, 10], None),  # one more look is not worth a wait
    ([0, 10, 50, 60], None),  # nor is one within the window
    ([0, 1, 2, 3], None),  # due together (within this grid cell): the claim takes them all now
    ([-46, 10, 20, 30], None),  # the earliest due look waited the whole window: look now
    ([20, 30, 40, 50], None),  # nothing due: the claim finds nothing and makes no call
])
def test_a_look_waits_only_for_looks_due_within_its_window(flow, cloud, shipped, offsets, look_at):
    rows = imports_started(flow, cloud, len(offsets))
    shipped()
    now = timezone.now()
    _due_in(rows, offsets, now=now)
    assert _gather(flow, now) == (None if look_at is None else now + timedelta(seconds=look_at))


def test_a_row_the_reconciler_put_back_is_looked_at_at_once(flow, cloud, shipped):
    # The reconciler puts a lost look back at "now" (its next_poll_at no longer says how late it
    # is); its last look, long ago, does: it is not made to wait a window more.
    rows = imports_started(flow, cloud, 3)
    shipped()
    now = timezone.now()
    _due_in(rows, [0, 10, 20], now=now)
    assert _gather(flow, now) == now + timedelta(seconds=20)
    Recipient.objects.filter(pk=rows[0].pk).update(updated_at=now - timedelta(seconds=60 + WINDOW + 1))
    assert _gather(flow, now) is None


def test_a_due_same_region_copy_is_never_put_off(flow, cloud, shipped):
    rows = imports_started(flow, cloud, 3)
    shipped()
    now = timezone.now()
    _due_in(rows, [0, 10, 20], now=now)
    Recipient.objects.filter(pk=rows[0].pk).update(method=Recipient.Method.DIRECT)
    assert _gather(flow, now) is None
    # A copy due later does not hold back its account's due import either way: it is only counted.
    Recipient.objects.filter(pk=rows[0].pk).update(method=Recipient.Method.EXPORT)
    Recipient.objects.filter(pk=rows[2].pk).update(method=Recipient.Method.DIRECT)
    assert _gather(flow, now) == now + timedelta(seconds=20)


def test_no_gathering_when_it_is_off(flow, cloud, shipped, settings):
    rows = imports_started(flow, cloud, 4)
    shipped()
    settings.OMIPORTAL_SWEEP_GATHER_SECONDS = 0
    now = timezone.now()
    _due_in(rows, [0, 10, 20, 30], now=now)
    assert _gather(flow, now) is None


def test_the_window_stays_within_a_backed_off_look_and_the_reconcilers_grace(settings):
    settings.OMIPORTAL_SWEEP_GATHER_SECONDS = 45
    settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 1, 5  # bench_transfers --tuned
    assert scheduling.gather_seconds() == 5
    settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 5, 60
    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 40
    assert scheduling.gather_seconds() == 30  # a gathered sweep a cell late and a cell of queue: within 40 s


def test_exports_are_gathered_too(flow, cloud, shipped):
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    seed_images(cloud, "alpha", ["alpha-gather-3"])
    for image in ("alpha-web-2025.01", "alpha-db-base", "alpha-gather-3"):
        approve(flow, request_share(flow, cloud, image=image, copy_name=f"copy-{image}"))
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").count() == 3)
    shipped()
    rows = list(Export.objects.order_by("pk"))
    with cloud.world.lock:  # every task ended: only a look can tell
        for export in rows:
            task = cloud.world.tasks[export.task_id]
            task.started = time.monotonic() - task.duration
    now = timezone.now()
    _due_in(rows, [0, 10, 20], now=now)
    workers.flush()
    before = cloud.counters(ALPHA).get("ReadImageExportTasks", 0)

    exports.export_sweep(account_id=flow.alpha.public_id)

    assert cloud.counters(ALPHA).get("ReadImageExportTasks", 0) == before
    assert _booked("export", flow.alpha) == [_slot(now + timedelta(seconds=20))]
    _due_in(rows, [-20, -10, 0])
    exports.export_sweep(account_id=flow.alpha.public_id)
    assert cloud.counters(ALPHA)["ReadImageExportTasks"] == before + 1
    assert set(Export.objects.values_list("state", flat=True)) == {Export.State.COMPLETED}
    assert verify_chain().ok
