"""Exactly once: a start still inside its cloud call is never started again (its lease), the
portal adopts only images it marked itself, and a late put-off never moves a row that another
run advanced. Real sandbox over HTTP (its `hold_seconds` switch holds a create before applying
it), real RQ jobs, two threads where a run must overlap another, real database commits."""

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from rq.worker import Worker

import outscale
from audit.models import AuditEvent
from audit.verify import verify_chain
from outscale import marks
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers import errors, jobs, scheduling
from transfers.models import Export, Recipient, Share
from transfers.services import (
    export_starts,
    import_ends,
    import_offers,
    import_starts,
    import_sweeps,
    polling,
    reconcile,
)

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, DELTA = "111122223333", "444455556666"
HOLD = 3.0  # seconds the sandbox holds a create before applying it: many times the grace below


@pytest.fixture
def leases(flow, cloud, settings):
    """A short grace and a fast reconciler, as in the issue's danger; the read timeout stays
    longer than the hold, so the held call is answered, not abandoned."""
    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0.3
    settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = HOLD + 5
    return flow


def _in_thread(func, *args):
    def run():
        try:
            func(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _reconcile_while(thread) -> list[dict]:
    """The reconciler ticks while the held start waits in the cloud, and whatever it enqueues is
    worked at once (a second worker, in effect)."""
    ticks = []
    while thread.is_alive():
        time.sleep(0.2)
        ticks.append(reconcile.reconcile())
        workers.run_jobs()
    thread.join()
    return ticks


def _wait(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _images_named(cloud, account_id, name):
    with cloud.world.lock:
        return [i for i in cloud.world.images.values()
                if i.account_id == account_id and i.name == name and i.state != "deleted"]


def _ready_share(flow, cloud, **kwargs):
    share = request_share(flow, cloud, **kwargs)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    return share


# --- 1. leases --------------------------------------------------------------------------------


def test_an_import_held_inside_create_image_past_the_grace_is_not_started_again(leases, cloud):
    share = _ready_share(leases, cloud)
    recipient = share.recipients.get()
    cloud.faults.configure(hold_seconds=HOLD, hold_actions={"CreateImage"})
    import_offers.recipient_accept(access=access(leases.dst_member, leases.dest), recipient=recipient)
    workers.flush()  # the start runs in the thread below; the reconciler is the only other run
    held = _in_thread(jobs.import_start_job, str(recipient.public_id))
    _wait(lambda: Recipient.objects.get(pk=recipient.pk).start_tries == 1, "the start to claim its row")
    claimed_at, leased = timezone.now(), Recipient.objects.get(pk=recipient.pk).next_poll_at

    ticks = _reconcile_while(held)

    cloud.faults.reset()
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state in Recipient.FINAL_STATES)
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.COMPLETED, recipient.state_message
    assert cloud.counters(DELTA)["CreateImage"] == 1
    assert len(_images_named(cloud, DELTA, "web-copy")) == 1
    assert leased > claimed_at + timedelta(seconds=HOLD)  # the lease outlasts the call
    assert len(ticks) >= 3 and not any(t["imports"] for t in ticks)  # never re-enqueued while held
    assert verify_chain().ok


def test_an_export_start_held_inside_the_cloud_past_the_grace_is_not_started_again(leases, cloud):
    leases.dest.auto_accept_incoming = True
    leases.dest.save()
    share = request_share(leases, cloud)
    cloud.faults.configure(hold_seconds=HOLD, hold_actions={"CreateImageExportTask"})
    approve(leases, share)
    workers.flush()
    export = Export.objects.get(shares=share)
    held = _in_thread(jobs.export_start_job, str(export.public_id))
    _wait(lambda: Export.objects.get(pk=export.pk).attempts == 1, "the export start to claim its row")

    ticks = _reconcile_while(held)

    cloud.faults.reset()
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state in Share.FINAL_STATES)
    assert Share.objects.get(pk=share.pk).state == Share.State.COMPLETED
    assert cloud.counters(ALPHA)["CreateImageExportTask"] == 1
    assert Recipient.objects.get(share=share).state == Recipient.State.COMPLETED
    assert not any(t["exports"] for t in ticks)


def test_a_copy_first_held_inside_create_image_past_the_grace_is_not_started_again(leases, cloud):
    share = request_share(leases, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    cloud.faults.configure(hold_seconds=HOLD, hold_actions={"CreateImage"})
    approve(leases, share)
    workers.flush()
    export = Export.objects.get(shares=share)
    assert export.state == Export.State.COPYING
    held = _in_thread(jobs.export_start_job, str(export.public_id))
    _wait(lambda: Export.objects.get(pk=export.pk).attempts == 1, "the copy to claim its row")

    ticks = _reconcile_while(held)

    cloud.faults.reset()
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state in (Share.State.READY, Share.State.FAILED))
    assert Share.objects.get(pk=share.pk).state == Share.State.READY
    assert cloud.counters(ALPHA)["CreateImage"] == 1
    assert cloud.counters(ALPHA)["CreateImageExportTask"] == 1
    assert not any(t["exports"] for t in ticks)


def test_a_copy_first_put_off_in_both_phases_gets_its_retry_job_each_time(leases, cloud):
    # A copy-first export counts its attempts again from 0 once the copy is made. Its copy's
    # first put-off queued retry "-1"; rq keeps that finished job's id for JOB_RESULT_TTL, so the
    # export task's first put-off, under the same id, was dropped as a duplicate and the export
    # waited for the reconciler (minutes at the shipped settings: a CI fault run's stuck export).
    share = request_share(leases, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    cloud.faults.configure(throttle_rate=1.0, actions={"CreateImage"})
    approve(leases, share)
    export = Export.objects.get(shares=share)
    workers.run_jobs(until=lambda: Export.objects.get(pk=export.pk).state_message.startswith(polling.WAITING_PREFIX))
    cloud.faults.configure(throttle_rate=1.0, actions={"CreateImageExportTask"})  # the copy goes, the task not
    workers.run_jobs(until=lambda: Export.objects.filter(
        pk=export.pk, state=Export.State.STARTING, attempts=1, state_message__startswith=polling.WAITING_PREFIX,
    ).exists())

    assert workers.pending_jobs() and any(
        job_id.startswith(f"export-start-{export.public_id}-")
        for q in workers.queues() for job_id in (*q.job_ids, *q.scheduled_job_registry.get_job_ids()))
    cloud.faults.reset()
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state in (Share.State.READY, Share.State.FAILED))
    assert Share.objects.get(pk=share.pk).state == Share.State.READY
    assert cloud.counters(ALPHA)["CreateImage"] == 1 and cloud.counters(ALPHA)["CreateImageExportTask"] == 1


def test_an_id_reused_after_its_job_ran_is_said_in_the_log_and_a_waiting_one_is_not(caplog):
    workers.flush()
    with caplog.at_level(logging.WARNING, logger="transfers.scheduling"):
        scheduling.enqueue("transfers.jobs.reconcile_job", job_id="twice-waiting")
        scheduling.enqueue("transfers.jobs.reconcile_job", job_id="twice-waiting")  # still queued: once is enough
        assert workers.pending_jobs() == 1 and not caplog.records
        workers.run_jobs()
        scheduling.enqueue("transfers.jobs.reconcile_job", job_id="twice-waiting")  # it ran: this one is lost
    assert workers.pending_jobs() == 0
    assert [r.getMessage() for r in caplog.records] == [
        "Not enqueued: job id twice-waiting was already used by a job that is finished."]


def test_a_start_whose_lease_ran_out_is_taken_over_and_looks_its_name_up_first(leases, cloud):
    # The run holding the lease died inside its call (here: it never came back to the row).
    share = _ready_share(leases, cloud)
    recipient = share.recipients.get()
    import_offers.recipient_accept(access=access(leases.dst_member, leases.dest), recipient=recipient)
    workers.flush()
    assert import_starts._claim([Recipient.objects.select_related(*import_starts._STARTING).get(pk=recipient.pk)])
    import_starts.import_start(recipient_id=recipient.public_id)  # a second run: the lease holds
    assert Recipient.objects.get(pk=recipient.pk).start_tries == 1 and not cloud.counters(DELTA).get("ReadImages")
    assert reconcile.reconcile()["imports"] == 0
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    assert reconcile.reconcile()["imports"] == 1
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state in Recipient.FINAL_STATES)
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.COMPLETED
    counters = cloud.counters(DELTA)
    assert counters["CreateImage"] == 1 and counters["ReadImages"] >= 2  # looked up, then watched


def test_the_lease_covers_the_worst_create_at_the_shipped_settings(settings):
    settings.OMIPORTAL_SWEEP_CONCURRENCY, settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND = 32, 10
    settings.OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT, settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = 5, 30
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS, settings.OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY = 3, 4
    settings.OMIPORTAL_SWEEP_BUDGET_SECONDS = 5
    # The pace is shared by every worker: a call may wait behind both workers' 32 threads.
    connection = scheduling._connection(settings.RQ_QUEUES["default"]["URL"])
    registered = [Worker([f"lease-{n}"], name=f"lease-test-{n}", connection=connection) for n in range(2)]
    for worker in registered:
        worker.register_birth()
    scheduling._workers_seen["at"] = float("-inf")
    try:
        assert scheduling.workers_running() == 2
        one_call = 3 * (2 * 32 / 10 + 5 + 30) + 2 * 4
        _assert_lease_seconds(one_call)
    finally:
        for worker in registered:
            worker.register_death()
        scheduling._workers_seen["at"] = float("-inf")
    settings.OMIPORTAL_OUTSCALE_PACE_SHARED = False  # each process's own pace: its own threads only
    _assert_lease_seconds(3 * (32 / 10 + 5 + 30) + 2 * 4)


def _assert_lease_seconds(one_call):
    assert polling.start_call_seconds(calls=1) == pytest.approx(5 + one_call)
    assert polling.start_call_seconds(calls=import_starts.IMPORT_START_CALLS) == pytest.approx(5 + 3 * one_call)
    # An export's start lets writes pass it for up to the pace's patience, at each attempt.
    assert polling.start_call_seconds(calls=export_starts.EXPORT_START_CALLS, starts=1) == pytest.approx(
        5 + export_starts.EXPORT_START_CALLS * one_call + 3 * outscale.START_PATIENCE)


# --- 2. adopt only our own images ------------------------------------------------------------


def test_an_image_made_by_hand_under_the_copy_name_is_never_adopted(leases, cloud, oapi):
    share = _ready_share(leases, cloud)
    recipient = share.recipients.get()
    # Between approval and import, a person in the recipient account makes an image of that name.
    gw = oapi("delta")
    own = cloud.account("delta")["images"][0]["image_id"]
    by_hand = gw.CreateImage(SourceImageId=own, SourceRegionName="us-east-2", ImageName="web-copy",
                             Description="made by hand")["Image"]["ImageId"]
    before = AuditEvent.objects.count()
    import_offers.recipient_accept(access=access(leases.dst_member, leases.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state in Recipient.FINAL_STATES)
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.FAILED and not recipient.image_id
    assert recipient.state_message == errors.NAME_NOT_OURS.format(name="web-copy")
    failures = AuditEvent.objects.filter(seq__gt=before, action="import.failed")
    assert [e.details["reason"] for e in failures] == [recipient.state_message]
    image = cloud.world.images[by_hand]  # untouched: no tags, not deleted, still the only one
    assert image.state != "deleted" and not image.tags and image.description == "made by hand"
    assert [i.image_id for i in _images_named(cloud, DELTA, "web-copy")] == [by_hand]
    assert not cloud.counters(DELTA).get("CreateTags") and not cloud.counters(DELTA).get("DeleteImage")


def test_a_lost_answer_adopts_our_own_image_and_makes_no_second(leases, cloud):
    share = _ready_share(leases, cloud)
    recipient = share.recipients.get()
    cloud.faults.configure(lost_response_rate=1.0, actions={"CreateImage"})
    import_offers.recipient_accept(access=access(leases.dst_member, leases.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).start_tries >= 1)  # one try, put off
    cloud.faults.reset()
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state in Recipient.FINAL_STATES)
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.COMPLETED, recipient.state_message
    assert cloud.counters(DELTA)["CreateImage"] == 1
    (image,) = _images_named(cloud, DELTA, "web-copy")
    assert image.image_id == recipient.image_id
    assert marks.is_marked(image.description, subject=import_starts.image_subject(recipient))


def test_a_duplicate_name_answer_for_our_own_create_adopts_it(leases, cloud):
    # The loser of a race (or a create whose answer was lost and is not yet visible to a lookup)
    # gets the cloud's duplicate-name answer: it looks the name up and adopts our own image.
    share = _ready_share(leases, cloud)
    recipient = share.recipients.get()
    import_offers.recipient_accept(access=access(leases.dst_member, leases.dest), recipient=recipient)
    workers.flush()
    row = Recipient.objects.select_related(*import_starts._STARTING).get(pk=recipient.pk)
    creds = outscale.Credentials(cloud.account("delta")["access_key"], cloud.account("delta")["secret_key"],
                                 "us-east-2")
    ours = outscale.copy_image(creds=creds, source_image_id=cloud.account("delta")["images"][0]["image_id"],
                               name="web-copy", subject=import_starts.image_subject(row))
    import_starts.import_start(recipient_id=recipient.public_id)  # a first try: no lookup, the create conflicts
    assert Recipient.objects.get(pk=recipient.pk).image_id == ours.image_id
    assert len(_images_named(cloud, DELTA, "web-copy")) == 1


def test_a_copy_first_name_taken_by_hand_fails_the_export_and_touches_nothing(leases, cloud, oapi):
    share = request_share(leases, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    approve(leases, share)
    workers.flush()
    export = Export.objects.get(shares=share)
    name = f"omiportal-copy-{export.public_id}"
    public = next(i["image_id"] for i in cloud.account("outscale-eu-west-2")["images"])
    by_hand = oapi("alpha").CreateImage(SourceImageId=public, SourceRegionName="eu-west-2",
                                        ImageName=name)["Image"]["ImageId"]
    export_starts.export_start(export_id=export.public_id)
    export.refresh_from_db()
    assert export.state == Export.State.FAILED and not export.copy_image_id
    assert export.state_message == errors.NAME_NOT_OURS.format(name=name)
    assert AuditEvent.objects.filter(action="export.failed", details__reason=export.state_message).count() == 1
    assert cloud.world.images[by_hand].state != "deleted" and not cloud.world.images[by_hand].tags


def test_a_mark_made_under_a_retired_secret_key_is_still_recognised(settings):
    settings.SECRET_KEY = "old-key-" + "x" * 50
    description = marks.marked("Copied by OMI Portal", subject="recipient:abc:1")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key-" + "y" * 50, ["old-key-" + "x" * 50]
    assert marks.is_marked(description, subject="recipient:abc:1")
    assert not marks.is_marked(description, subject="recipient:abc:2")
    assert not marks.is_marked(description.replace(description[-5], "0" if description[-5] != "0" else "1"),
                               subject="recipient:abc:1")
    settings.SECRET_KEY_FALLBACKS = []
    assert not marks.is_marked(description, subject="recipient:abc:1")


# --- 5. put-offs are conditional on what they were computed from -----------------------------


def test_a_late_put_off_start_does_not_move_a_row_another_run_advanced(leases, cloud):
    share = _ready_share(leases, cloud)
    recipient = share.recipients.get()
    import_offers.recipient_accept(access=access(leases.dst_member, leases.dest), recipient=recipient)
    workers.flush()
    (read,) = import_starts._claim([Recipient.objects.select_related(*import_starts._STARTING).get(pk=recipient.pk)])
    # Meanwhile (its lease ran out) another run took the row over and its import started.
    Recipient.objects.filter(pk=recipient.pk).update(start_tries=2, image_id="ami-12345678",
                                                     next_poll_at=timezone.now() + timedelta(seconds=5))
    before = Recipient.objects.get(pk=recipient.pk)
    exc = outscale.RetryLater(kind=outscale.RetryLater.THROTTLED, may_have_run=False)
    polling.put_off_start(read, exc, tries=polling.MAX_START_ATTEMPTS, fail=import_ends.import_failed,
                          claimed=import_starts._claimed(read), job="transfers.jobs.import_start_job", job_id="late")
    polling.put_off_start(read, exc, tries=1, fail=import_ends.import_failed,
                          claimed=import_starts._claimed(read), job="transfers.jobs.import_start_job", job_id="late")
    after = Recipient.objects.get(pk=recipient.pk)
    assert (after.state, after.next_poll_at, after.state_message) == (before.state, before.next_poll_at, "")
    assert workers.pending_jobs() == 0
    assert not AuditEvent.objects.filter(action="import.failed").exists()


def test_a_late_postpone_does_not_move_a_row_another_run_advanced(leases, cloud):
    leases.dest.auto_accept_incoming = True
    leases.dest.save()
    cloud.set_durations(import_seconds=1000)
    share = request_share(leases, cloud)
    approve(leases, share)
    workers.run_jobs(until=lambda: Recipient.objects.filter(share=share).exclude(image_id="").exists())
    recipient = Recipient.objects.get(share=share)
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now())
    (swept,) = polling.claim(Recipient, account=leases.delta, states=import_sweeps.WATCHED,
                             extra=import_sweeps.WATCHABLE, now=timezone.now())
    # Another run completed it between this sweep's read and its put-off.
    Recipient.objects.filter(pk=recipient.pk).update(state=Recipient.State.COMPLETED, next_poll_at=None)
    polling.postpone([swept], "OUTSCALE is busy.")
    after = Recipient.objects.get(pk=recipient.pk)
    assert (after.state, after.next_poll_at, after.state_message) == (Recipient.State.COMPLETED, None, "")
    # And one still importing but taken by another sweep since (a new lease): left alone too.
    lease = polling.lease_until(timezone.now() + timedelta(seconds=1))
    Recipient.objects.filter(pk=recipient.pk).update(state=Recipient.State.IMPORTING, next_poll_at=lease)
    polling.postpone([swept], "OUTSCALE is busy.")
    assert Recipient.objects.get(pk=recipient.pk).next_poll_at == lease
    # The row as it was read is put off.
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=swept.next_poll_at)
    polling.postpone([swept], "OUTSCALE is busy.")
    assert Recipient.objects.get(pk=recipient.pk).state_message.startswith(polling.WAITING_PREFIX)


# --- the sandbox switch the tests above (and the fault run) rely on ---------------------------


def test_the_sandbox_holds_a_create_before_applying_it(cloud, oapi):
    cloud.faults.configure(hold_seconds=1.0, hold_actions={"CreateImage"}, throttle_rate=0.0)
    gw = oapi("delta")
    entry = cloud.account("delta")
    creds = outscale.Credentials(entry["access_key"], entry["secret_key"], entry["region"])
    own = entry["images"][0]["image_id"]
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(gw.CreateImage(
        SourceImageId=own, SourceRegionName="us-east-2", ImageName="held-copy")))
    started = time.monotonic()
    thread.start()
    time.sleep(0.5)
    # Held and not yet applied: a lookup by name finds nothing.
    assert outscale.find_image_by_name(creds=creds, account_id=DELTA, name="held-copy") is None
    thread.join()
    assert time.monotonic() - started >= 1.0
    assert answer["Image"]["ImageName"] == "held-copy"
    assert cloud.faults.snapshot()["hold_actions"] == ["CreateImage"]
