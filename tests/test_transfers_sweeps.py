"""How the sweeps pace their looks: an export's next look where its progress says it ends, and
the account's other in-flight rows riding along in a call made anyway. Real sandbox over HTTP,
real jobs to get there, then one sweep called directly so its effect can be read exactly."""

import logging
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.verify import verify_chain
from tests import workers
from tests.transfer_world import approve, imports_started, request_share
from transfers import scheduling
from transfers.models import Export, Recipient
from transfers.services import exports, import_sweeps, laps, polling

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = "444455556666"
ALPHA = "111122223333"


@pytest.mark.parametrize(("before", "after", "elapsed", "left"), [
    (40, 60, 20.0, 40.0),  # 1 %/s, 40 % to go
    (70, 80, 100.0, 200.0),
    (0, 30, 10.0, None),  # the first progress: the time queued says nothing about the pace
    (50, 50, 10.0, None),  # no progress since the last look
    (60, 50, 10.0, None),  # went backwards
    (50, 60, 0.0, None),  # no time between the looks
    (50, 100, 10.0, None),  # done: nothing to predict
])
def test_the_time_left_comes_from_the_pace_between_two_looks(before, after, elapsed, left):
    assert scheduling.seconds_to_finish(before, after, elapsed) == left


def _running_export(flow, cloud, settings, *, copies=1):
    """Shares of one image from alpha to delta, approved; returns the export once it runs."""
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    shares = [request_share(flow, cloud, copy_name=f"web-copy-{k}") for k in range(copies)]
    for share in shares:
        approve(flow, share)
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").exists())
    return Export.objects.get(), shares


def _move_task(cloud, task_id: str, *, fraction: float) -> None:
    """Make the sandbox's export task that far through its run (progress follows on the next read)."""
    with cloud.world.lock:
        task = cloud.world.tasks[task_id]
        task.started = time.monotonic() - fraction * task.duration


def _sweep_exports(flow):
    workers.flush()  # only this sweep runs; what it schedules is read from the database
    exports.export_sweep(account_id=flow.alpha.public_id)


@pytest.mark.parametrize(("seen_before", "next_look"), [
    # The last look saw 70 % a hundred seconds ago and the task is at 80 %: 0.1 % a second, so
    # 200 s to go, sooner than the backed-off interval (1.5 x 400 s): the look goes there.
    (70, 200),
    # It saw 80 % already: no pace to go by, the looks keep backing off.
    (80, 600),
])
def test_an_exports_next_look_goes_where_its_progress_says_it_ends(flow, cloud, settings, seen_before, next_look):
    settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 1, 1000
    export, _ = _running_export(flow, cloud, settings)
    _move_task(cloud, export.task_id, fraction=0.8)
    Export.objects.filter(pk=export.pk).update(progress=seen_before, poll_interval=400, next_poll_at=timezone.now(),
                                               updated_at=timezone.now() - timedelta(seconds=100))
    _sweep_exports(flow)
    export.refresh_from_db()
    assert export.progress == 80 and export.poll_interval == 600
    assert abs((export.next_poll_at - timezone.now()).total_seconds() - next_look) < 10


def _finish_import(cloud, image_id: str) -> None:
    with cloud.world.lock:
        cloud.world.images[image_id].ready_at = time.monotonic()


def test_an_import_that_ended_before_its_own_look_rides_along_in_its_accounts_call(flow, cloud, settings):
    due, early, pending = imports_started(flow, cloud, 3)
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 100  # a look a minute away is a scheduled one, not a lease
    later = timezone.now() + timedelta(seconds=60)
    Recipient.objects.filter(pk=due.pk).update(next_poll_at=timezone.now())
    Recipient.objects.filter(pk__in=[early.pk, pending.pk]).update(next_poll_at=later)
    _finish_import(cloud, early.image_id)
    before = cloud.counters(DELTA)

    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    after = cloud.counters(DELTA)
    # (the request itself reads nothing in the recipient team's account: its keys are its own, INS-09)
    assert after["ReadImages"] - before.get("ReadImages", 0) == 1  # one look for all three
    states = dict(Recipient.objects.values_list("pk", "state"))
    assert states == {due.pk: "importing", early.pk: "completed", pending.pk: "importing"}
    assert after["CreateTags"] - before.get("CreateTags", 0) == 1  # only the one that ended
    # A rider still importing keeps its own pace; the due row backed off.
    assert Recipient.objects.get(pk=pending.pk).next_poll_at == later
    assert Recipient.objects.get(pk=due.pk).next_poll_at < later
    assert verify_chain().ok


def test_nothing_due_means_no_call_even_with_rows_in_flight(flow, cloud, settings):
    rows = imports_started(flow, cloud, 2)
    Recipient.objects.filter(pk__in=[r.pk for r in rows]).update(next_poll_at=timezone.now() + timedelta(seconds=60))
    _finish_import(cloud, rows[0].image_id)
    before = cloud.counters(DELTA).get("ReadImages", 0)
    import_sweeps.import_sweep(account_id=flow.delta.public_id)
    assert cloud.counters(DELTA).get("ReadImages", 0) == before
    assert set(Recipient.objects.values_list("state", flat=True)) == {"importing"}


def test_a_rider_another_sweep_took_meanwhile_is_left_to_it(flow, cloud, settings):
    due, taken = imports_started(flow, cloud, 2)
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 100
    Recipient.objects.filter(pk=taken.pk).update(next_poll_at=timezone.now() + timedelta(seconds=60))
    riders = polling.riders(Recipient, account=flow.delta, states=import_sweeps.WATCHED, extra=import_sweeps.WATCHABLE,
                            taken=[due])
    assert [r.pk for r in riders] == [taken.pk]
    # Another sweep leases it between this sweep's read and its claim.
    Recipient.objects.filter(pk=taken.pk).update(next_poll_at=polling.lease_until(timezone.now()))
    assert polling.claim_riders(Recipient, riders, {taken.pk}) == []
    assert polling.riders(Recipient, account=flow.delta, states=import_sweeps.WATCHED, extra=import_sweeps.WATCHABLE,
                          taken=[due]) == []  # and held, it no longer rides
    # Back to waiting for its look and untouched between read and claim, it is claimed.
    Recipient.objects.filter(pk=taken.pk).update(next_poll_at=timezone.now() + timedelta(seconds=60))
    riders = polling.riders(Recipient, account=flow.delta, states=import_sweeps.WATCHED, extra=import_sweeps.WATCHABLE,
                            taken=[due])
    assert [r.pk for r in polling.claim_riders(Recipient, riders, {taken.pk})] == [taken.pk]
    leased = Recipient.objects.get(pk=taken.pk).next_poll_at - timezone.now()
    expected = settings.OMIPORTAL_RECONCILE_GRACE_SECONDS + settings.OMIPORTAL_SWEEP_MAX_SECONDS
    assert abs(leased.total_seconds() - expected) < 5


def test_rows_another_sweep_holds_do_not_ride_along(flow, cloud, settings):
    # Two sweeps of one account can overlap (a long one, and the next slot's on another worker):
    # the second must not take the first one's rows as riders, or both would tag the same OMIs.
    first, second, waiting = imports_started(flow, cloud, 3)
    Recipient.objects.filter(pk__in=[first.pk, second.pk]).update(next_poll_at=timezone.now())
    Recipient.objects.filter(pk=waiting.pk).update(next_poll_at=timezone.now() + timedelta(seconds=30))
    held = polling.claim(Recipient, account=flow.delta, states=import_sweeps.WATCHED, extra=import_sweeps.WATCHABLE,
                         now=timezone.now())
    assert {r.pk for r in held} == {first.pk, second.pk}
    for recipient in (first, second, waiting):
        _finish_import(cloud, recipient.image_id)
    before = cloud.counters(DELTA).get("CreateTags", 0)
    Recipient.objects.filter(pk=waiting.pk).update(next_poll_at=timezone.now())  # the next slot's sweep
    import_sweeps.import_sweep(account_id=flow.delta.public_id)
    assert cloud.counters(DELTA)["CreateTags"] == before + 1  # only its own row
    states = dict(Recipient.objects.values_list("pk", "state"))
    assert states == {first.pk: "importing", second.pk: "importing", waiting.pk: "completed"}


def test_an_export_that_ended_early_rides_along_and_hands_off(flow, cloud, settings, caplog):
    settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 1, 1000
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    first, _ = _running_export(flow, cloud, settings)
    # A second image of alpha, exported too: its own export, its own task.
    second_share = request_share(flow, cloud, image="alpha-db-base", copy_name="db-copy")
    approve(flow, second_share)
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").count() == 2)
    second = Export.objects.exclude(pk=first.pk).get()
    Export.objects.filter(pk=first.pk).update(next_poll_at=timezone.now())
    Export.objects.filter(pk=second.pk).update(next_poll_at=timezone.now() + timedelta(seconds=600))
    _move_task(cloud, second.task_id, fraction=1.0)
    before = cloud.counters(ALPHA).get("ReadImageExportTasks", 0)

    with CaptureQueriesContext(connection) as queries, caplog.at_level(logging.INFO, logger=laps.__name__):
        _sweep_exports(flow)

    assert cloud.counters(ALPHA)["ReadImageExportTasks"] == before + 1
    # The sweep logged where its hand-off's time went, part by part (bench_transfers reads it back).
    (timed,) = [laps.parse(r.getMessage()) for r in caplog.records if r.name == laps.__name__]
    assert timed["imports"] == 1
    assert [p for p in timed if p not in ("imports", "at")] == [
        "claim", "look", "manifests", "completions", "import_claim", "first_start_done", "starts", "written"]
    assert timed["manifests"] > 0 and timed["first_start_done"] >= timed["claim"] + timed["look"]
    assert Export.objects.get(pk=first.pk).state == Export.State.RUNNING
    assert Export.objects.get(pk=second.pk).state == Export.State.COMPLETED
    # Its share's import was started by the same sweep, before the running export's progress was
    # written: an end seen among hundreds of running exports does not wait for a write each.
    assert Recipient.objects.get(share=second_share).image_id
    sql = [q["sql"] for q in queries.captured_queries]
    started = next(i for i, q in enumerate(sql) if q.startswith('UPDATE "transfers_recipient"') and '"image_id"' in q)
    progress = next(i for i, q in enumerate(sql) if q.startswith('UPDATE "transfers_export"') and '"progress"' in q
                    and f'"id" = {first.pk}' in q)
    assert started < progress
    assert Export.objects.get(pk=first.pk).updated_at > first.updated_at  # written all the same
    assert verify_chain().ok

