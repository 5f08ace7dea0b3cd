"""Issue 16's same-Region goal: a copy is seen soon after it ends, and the grant job starts it.

- The first look at a copy goes where similar copies ended (transfers/services/copy_looks.py),
  bounded, then a look every step around that end, then the usual backoff; with too little
  history, the grid's looks stand.
- The grant job goes straight on to the copy (no start job in between), takes other shares'
  waiting grants along, and every exactly-once rule holds: one CreateImage per recipient, one
  UpdateImage addition per share, the permission removed once.

Real sandbox over HTTP, real database commits; the timing test runs a real worker process with its
scheduler, at a sweep_min (20 s) that the grid's first look could not hide behind.
alpha (the source) and gamma are in eu-west-2 (tests/transfer_world.py).
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import approve, request_share
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import copy_looks, grants, reconcile

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, GAMMA = "111122223333", "333344445555"


@pytest.fixture
def shipped_looks(flow, settings):
    """The looks' settings as shipped (the flow fixture makes them fast), and no history read yet."""
    settings.OMIPORTAL_SWEEP_MIN_SECONDS = 5.0
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 60.0
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    copy_looks.forget()
    yield
    copy_looks.forget()


def _past_copies(flow, cloud, seconds, *, size, interval=1.0):
    """Copies by launch permission completed a while ago, each ``seconds`` from its create to its
    completion, the last look ``interval`` after the one before (as the portal leaves them)."""
    share = request_share(flow, cloud, accounts=[flow.gamma], copy_name="past-copies")
    Share.objects.filter(pk=share.pk).update(source_facts={**share.source_facts, "size_gib": size})
    past = Recipient.objects.get(share=share)
    done = timezone.now() - timedelta(hours=1)
    Recipient.objects.bulk_create([
        Recipient(share=share, kind=past.kind, team=past.team, target_account=past.target_account,
                  bound_account_id=past.bound_account_id, bound_region=past.bound_region, method=past.method,
                  state=Recipient.State.COMPLETED, started_at=done - timedelta(seconds=s), completed_at=done,
                  poll_interval=interval) for s in seconds])
    past.delete()
    copy_looks.forget()


def _size(share) -> int:
    return share.source_facts["size_gib"]


def _scheduled_sweeps() -> list[str]:
    queue = workers.queues()[0]  # poll
    return [job_id for job_id in queue.scheduled_job_registry.get_job_ids() if job_id.startswith("import-sweep-")]


def _queued(prefix: str) -> list[str]:
    ids = []
    for queue in workers.queues():
        ids += [i for i in queue.job_ids + queue.scheduled_job_registry.get_job_ids() if i.startswith(prefix)]
    return ids


def _first_look_after_create(recipient) -> float:
    recipient.refresh_from_db()
    return (recipient.next_poll_at - recipient.started_at).total_seconds()


# --- where the first look goes -------------------------------------------------------------------


def test_a_copy_without_enough_similar_history_is_looked_at_on_the_grid(flow, cloud, shipped_looks):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    # Two similar copies, and plenty of another size (half to twice is similar): not enough to say.
    _past_copies(flow, cloud, [30, 31], size=_size(share))
    _past_copies(flow, cloud, [30] * 5, size=_size(share) * 5)
    assert copy_looks.plan_for(_size(share)) is None
    approve(flow, share)
    grants.grants_add(share_id=share.public_id)
    recipient = Recipient.objects.get(share=share)
    assert _first_look_after_create(recipient) == pytest.approx(5.0, abs=0.01)
    assert recipient.poll_interval == 5.0
    assert all(not job_id.endswith("s") for job_id in _scheduled_sweeps())  # the 5 s grid's cells


def test_the_first_look_goes_where_similar_copies_ended(flow, cloud, shipped_looks):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    # Seen 41-51 s after their creates, a second after the look before: they ended after 40-50 s.
    _past_copies(flow, cloud, [41, 42, 44, 46, 51], size=_size(share))
    plan = copy_looks.plan_for(_size(share))
    assert (plan.expected, plan.count) == (43.0, 5)
    assert plan.step == pytest.approx(43 / 20)  # a twentieth of the expected time
    assert plan.first == pytest.approx(40)  # where the fastest tenth had ended
    assert plan.last == pytest.approx(50 + 43 / 20)  # a step after the slowest tenth ended
    approve(flow, share)
    grants.grants_add(share_id=share.public_id)  # grants, then copies in the same job
    recipient = Recipient.objects.get(share=share)
    created = AuditEvent.objects.get(action="import.started").occurred_at
    assert abs((recipient.started_at - created).total_seconds()) < 1  # a copy's clock starts at its create
    assert _first_look_after_create(recipient) == pytest.approx(plan.first, abs=0.01)
    # What a copy seen then counts back to: a step before that look, not its create (which would
    # say it took no time, and pull the next first looks down to the floor).
    assert recipient.poll_interval == pytest.approx(plan.step)
    # Its sweep is booked on a grid of whole seconds as fine as the step, at the start of the cell.
    sweeps = [job_id for job_id in _scheduled_sweeps() if job_id.endswith("-2s")]
    due = (recipient.next_poll_at.timestamp() // 2)
    assert sweeps == [f"import-sweep-{flow.gamma.public_id}-{int(due)}-2s"]


def test_the_first_look_stays_within_bounds(flow, cloud, shipped_looks):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    _past_copies(flow, cloud, [0.2, 0.3, 0.3], size=_size(share), interval=0.1)
    fast = copy_looks.plan_for(_size(share))
    assert (fast.first, fast.step) == (copy_looks.LOOK_FLOOR, copy_looks.LOOK_FLOOR)  # not below rq's second
    Recipient.objects.filter(state=Recipient.State.COMPLETED).delete()
    _past_copies(flow, cloud, [20 * 3600, 21 * 3600, 22 * 3600], size=_size(share))
    slow = copy_looks.plan_for(_size(share))
    assert slow.first == copy_looks.FIRST_LOOK_MAX  # a history of stuck copies does not put it off for a day
    assert slow.step == 60.0  # never more than sweep_max apart
    # Widely spread copies widen the step, so the window holds at most WINDOW_LOOKS looks.
    Recipient.objects.filter(state=Recipient.State.COMPLETED).delete()
    _past_copies(flow, cloud, [10, 20, 300, 600, 900], size=_size(share))
    spread = copy_looks.plan_for(_size(share))
    assert (spread.last - spread.first) / spread.step <= copy_looks.WINDOW_LOOKS + 2


def test_a_pending_look_keeps_to_the_plan_then_backs_off(flow, cloud, shipped_looks):
    cloud.set_durations(copy_seconds=300)  # the copy stays pending throughout
    share = request_share(flow, cloud, accounts=[flow.gamma])
    _past_copies(flow, cloud, [41, 42, 44, 46, 51], size=_size(share))
    plan = copy_looks.plan_for(_size(share))
    approve(flow, share)
    grants.grants_add(share_id=share.public_id)
    recipient = Recipient.objects.get(share=share)

    def look_at(elapsed):
        # As if ``elapsed`` seconds had passed since the create, and the row were due now.
        now = timezone.now()
        Recipient.objects.filter(pk=recipient.pk).update(started_at=now - timedelta(seconds=elapsed), next_poll_at=now)
        from transfers.services import import_sweeps
        import_sweeps.import_sweep(account_id=flow.gamma.public_id)
        recipient.refresh_from_db()
        assert recipient.state == Recipient.State.IMPORTING
        return recipient.poll_interval, (recipient.next_poll_at - timezone.now()).total_seconds()

    # Looked at early (riding with another row's look): its first look stays where it was.
    interval, ahead = look_at(10)
    assert interval == pytest.approx(plan.step) and ahead == pytest.approx(plan.first - 10, abs=1)
    interval, ahead = look_at(45)  # inside the window: a step later
    assert interval == pytest.approx(plan.step) and ahead == pytest.approx(plan.step, abs=1)
    interval, ahead = look_at(60)  # past it: the usual backoff, from the step
    assert interval == pytest.approx(plan.step * 1.5) and ahead == pytest.approx(plan.step * 1.5, abs=1)
    interval, _ = look_at(70)
    assert interval == pytest.approx(plan.step * 1.5 * 1.5)


# --- the grant job starts the copy --------------------------------------------------------------


def test_the_grant_job_starts_the_copy_itself_once(flow, cloud, oapi, shipped_looks):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    grants.grants_add(share_id=share.public_id)
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.IMPORTING and recipient.image_id
    assert _queued("import-start-") == []  # no job between the grant and the copy
    assert cloud.counters(GAMMA).get("CreateImage") == 1
    # The share's own job again, and a start job a reconciler might have queued: nothing more.
    grants.grants_add(share_id=share.public_id)
    from transfers import jobs
    jobs.import_start_job(str(recipient.public_id))
    assert cloud.counters(GAMMA).get("CreateImage") == 1 and cloud.counters(ALPHA).get("UpdateImage") == 1
    cloud.set_durations(copy_seconds=0.1)
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now())
    workers.run_jobs(until=lambda: LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.COMPLETED
    assert cloud.counters(GAMMA).get("CreateImage") == 1 and cloud.counters(ALPHA).get("UpdateImage") == 2
    assert AuditEvent.objects.filter(action="grant.added").count() == 1
    assert AuditEvent.objects.filter(action="grant.removed").count() == 1
    assert oapi("alpha").ReadImages(Filters={"ImageIds": [share.source_image_id]})["Images"][0][
        "PermissionsToLaunch"]["AccountIds"] == []


def test_a_burst_of_approvals_is_granted_and_copied_once_each_by_jobs_racing(flow, cloud, shipped_looks):
    shares = [request_share(flow, cloud, accounts=[flow.gamma], copy_name=f"burst-{i}") for i in range(4)]
    for share in shares:
        approve(flow, share)
    # Two workers take two of the shares' jobs at once; each takes the other waiting grants along.
    cloud.faults.configure(hold_seconds=0.5, hold_actions={"UpdateImage"})
    start = threading.Barrier(2)

    def job(share):
        try:
            start.wait()
            grants.grants_add(share_id=share.public_id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=job, args=(share,)) for share in shares[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cloud.faults.reset()
    for share in shares:  # the shares' own jobs, when their turn comes: nothing left to do
        grants.grants_add(share_id=share.public_id)
    copies = Recipient.objects.filter(share__in=shares)
    assert set(copies.values_list("state", flat=True)) == {Recipient.State.IMPORTING}
    assert all(copies.values_list("image_id", flat=True))
    assert cloud.counters(GAMMA).get("CreateImage") == 4  # one per recipient
    # At most one addition per racing job, not per share: the shares of one image ride in one
    # UpdateImage (one job may claim them all before the other claims its own).
    assert cloud.counters(ALPHA).get("UpdateImage") in (1, 2)
    assert AuditEvent.objects.filter(action="grant.added").count() == 4
    assert set(LaunchGrant.objects.filter(share__in=shares).values_list("attempts", flat=True)) == {1}
    assert _queued("import-start-") == []


# The rider's thread ending in SystemExit is the simulated crash, not an accident of the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_dying_in_a_job_that_took_riders_is_put_back_by_the_reconciler(
        flow, cloud, oapi, shipped_looks, settings, monkeypatch):
    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0
    shares = [request_share(flow, cloud, accounts=[flow.gamma], copy_name=f"crash-{i}") for i in range(2)]
    for share in shares:
        approve(flow, share)
    from transfers.services import import_starts

    added = grants._added

    def dies_recording_the_riders_grant(share, rows, request_ids):
        if share.pk == shares[1].pk:
            raise SystemExit("killed")  # claimed and granted in the cloud, never recorded
        return added(share, rows, request_ids)

    # The first share's job takes the second along (the same image: one UpdateImage for both); the
    # worker dies after the first share's grant is recorded (before its copy starts) and before the
    # second's is.
    monkeypatch.setattr(grants, "_added", dies_recording_the_riders_grant)
    monkeypatch.setattr(import_starts, "copies_start", lambda **_: None)
    with pytest.raises(SystemExit):
        grants.grants_add(share_id=shares[0].public_id)
    monkeypatch.undo()
    workers.flush()
    assert LaunchGrant.objects.get(share=shares[0]).state == LaunchGrant.State.GRANTED
    assert LaunchGrant.objects.get(share=shares[1]).state == LaunchGrant.State.GRANTING
    assert cloud.counters(GAMMA).get("CreateImage") is None and cloud.counters(ALPHA).get("UpdateImage") == 1
    reconcile.reconcile()  # the copy never started is put back at once (its grace is over)
    # The rider's grant is held by the lease the dead job claimed it with, as any start a killed
    # worker was inside: once that has run out, the reconciler puts it back too (its addition is
    # made again: a set operation, the permission already there).
    LaunchGrant.objects.filter(share=shares[1]).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    reconcile.reconcile()
    cloud.set_durations(copy_seconds=0.1)
    workers.run_jobs(until=lambda: set(LaunchGrant.objects.filter(share__in=shares).values_list("state", flat=True))
                     == {LaunchGrant.State.REVOKED}, timeout=60)
    assert set(Recipient.objects.filter(share__in=shares).values_list("state", flat=True)) == {
        Recipient.State.COMPLETED}
    assert cloud.counters(GAMMA).get("CreateImage") == 2  # one per recipient
    assert AuditEvent.objects.filter(action="grant.added").count() == 2
    assert oapi("alpha").ReadImages(Filters={"ImageIds": [shares[0].source_image_id]})["Images"][0][
        "PermissionsToLaunch"]["AccountIds"] == []


# --- a thread of the process that made the copy looks at it (copy_watch.py) -----------------------


def _noting_ends(cloud, monkeypatch) -> tuple[dict, dict]:
    """(when the sandbox makes each copy available, when a ReadImages first showed it available),
    in time.monotonic(), the sandbox's clock."""
    seen: dict[str, float] = {}
    ready: dict[str, float] = {}
    call = cloud.oapi.call

    def noting(account, action, params, *args, **kwargs):
        body = call(account, action, params, *args, **kwargs)
        if action == "CreateImage":
            image_id = body["Image"]["ImageId"]
            ready[image_id] = cloud.world.images[image_id].ready_at
        elif action == "ReadImages":
            for image in body.get("Images") or []:
                if image.get("State") == "available":
                    seen.setdefault(image["ImageId"], time.monotonic())
        return body

    monkeypatch.setattr(cloud.oapi, "call", noting)
    return ready, seen


def _watched_copy(flow, cloud, *, copy_seconds=2.0):
    """A share whose copy should end ``copy_seconds`` after its create (as its similar copies did),
    approved, its queued jobs dropped: the test runs the grant job itself."""
    cloud.set_durations(copy_seconds=copy_seconds)
    share = request_share(flow, cloud, accounts=[flow.gamma])
    _past_copies(flow, cloud, [copy_seconds + 1.0] * 5, size=_size(share))  # seen a second after they ended
    plan = copy_looks.plan_for(_size(share))
    assert plan.first == pytest.approx(copy_seconds) and plan.first <= copy_looks.WATCH_AHEAD
    approve(flow, share)
    workers.flush()
    return share, plan


@pytest.fixture
def watcher():
    """This process's watcher; its thread is over (and its connection closed) after the test."""
    from transfers.services import copy_watch

    yield copy_watch.watcher()
    assert copy_watch.watcher().wait_idle(30)


def test_the_job_hands_its_copy_to_a_thread_that_sees_it_end(flow, cloud, shipped_looks, watcher, monkeypatch):
    ready, seen = _noting_ends(cloud, monkeypatch)
    share, plan = _watched_copy(flow, cloud)
    # A job waits in the queue all along: the watch takes no worker, so it never gives one away.
    workers.queues()[1].enqueue("transfers.jobs.reconcile_job", job_id="waiting-job")
    started = time.monotonic()
    grants.grants_add(share_id=share.public_id)  # grants, copies, hands the copy over and returns
    assert time.monotonic() - started < plan.first  # the job did not wait for the copy's end
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.IMPORTING and recipient.image_id
    assert watcher.copies() == {recipient.pk}
    assert watcher.wait_idle(30)  # the thread ends once its copy has
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.COMPLETED  # without a worker, without rq's scheduler
    lag = seen[recipient.image_id] - ready[recipient.image_id]
    assert 0 <= lag < plan.fine + 0.4, lag  # a fine step, not rq's second
    assert cloud.counters(GAMMA).get("CreateImage") == 1
    assert AuditEvent.objects.filter(action="import.completed").count() == 1
    assert AuditEvent.objects.get(action="import.completed").request_id == f"copy-watch-{flow.gamma.public_id}"
    # rq's sweep was booked at the end of the watch only: a fallback, which finds nothing to do.
    sweeps = _scheduled_sweeps()
    assert len(sweeps) == 1
    due = int(sweeps[0].split("-")[-2]) * int(plan.step)
    assert due >= (recipient.started_at.timestamp() + plan.first + copy_looks.WATCH_SPAN) // 1
    reads = cloud.counters(GAMMA).get("ReadImages", 0)
    workers.run_jobs()
    assert cloud.counters(GAMMA).get("ReadImages", 0) == reads
    assert AuditEvent.objects.filter(action="import.completed").count() == 1
    assert not _queued("copy-watch-")


def test_a_watched_copy_is_tagged_while_it_is_made_and_completed_without_a_call(
        flow, cloud, shipped_looks, watcher, monkeypatch):
    ready, _ = _noting_ends(cloud, monkeypatch)
    tagged_at = []
    call = cloud.oapi.call

    def noting_tags(account, action, params, *args, **kwargs):
        if action == "CreateTags":
            tagged_at.append(time.monotonic())
        return call(account, action, params, *args, **kwargs)

    monkeypatch.setattr(cloud.oapi, "call", noting_tags)
    share, plan = _watched_copy(flow, cloud)
    grants.grants_add(share_id=share.public_id)
    assert watcher.wait_idle(30)
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.COMPLETED
    # One CreateTags, made while the copy was still being made; the look that saw it available
    # found its tags on the image and completed it without another.
    assert len(tagged_at) == 1 and tagged_at[0] < ready[recipient.image_id]
    assert cloud.counters(GAMMA).get("CreateTags") == 1
    tagged = AuditEvent.objects.get(action="import.tagged")
    completed = AuditEvent.objects.get(action="import.completed")
    assert tagged.cloud_request_ids and tagged.details["image_id"] == recipient.image_id
    assert completed.details["tags"] == tagged.details["tags"]
    assert completed.details["tags"]["omiportal:source-account"] == share.source_account.account_id


def test_a_copy_whose_tagging_ahead_failed_is_tagged_when_seen(flow, cloud, shipped_looks, watcher, oapi,
                                                                 monkeypatch):
    import outscale
    from transfers.services import import_ends

    share, plan = _watched_copy(flow, cloud)
    tag = outscale.tag_resources
    refused = []

    def refused_once(**kwargs):
        if not refused:
            refused.append(kwargs["resource_ids"])
            raise outscale.RetryLater("Too many requests.", kind=outscale.RetryLater.BUSY, may_have_run=False)
        return tag(**kwargs)

    monkeypatch.setattr(import_ends.outscale, "tag_resources", refused_once)
    grants.grants_add(share_id=share.public_id)
    assert watcher.wait_idle(30)
    recipient = Recipient.objects.get(share=share)
    assert refused == [[recipient.image_id]]  # the tag ahead, refused
    assert recipient.state == Recipient.State.COMPLETED
    assert not AuditEvent.objects.filter(action="import.tagged").exists()
    assert AuditEvent.objects.filter(action="import.completed").count() == 1
    image = oapi("gamma").ReadImages(Filters={"ImageIds": [recipient.image_id]})["Images"][0]
    assert {"Key": "omiportal:source-account", "Value": share.source_account.account_id} in image["Tags"]


def test_while_its_account_has_copies_to_create_the_watcher_looks_at_most_once_a_second(
        flow, cloud, shipped_looks, watcher, monkeypatch):
    from transfers.services import copy_watch

    share, plan = _watched_copy(flow, cloud)
    assert plan.fine < copy_watch.BUSY_STEP.total_seconds()
    cloud.set_durations(copy_seconds=60)  # still being made when the watch is over
    # Another share's copy into gamma waits for its create (a burst): gamma's calls are its creates'.
    other = request_share(flow, cloud, accounts=[flow.gamma], copy_name="waiting")
    Recipient.objects.filter(share=other).update(state=Recipient.State.IMPORTING)
    looks = []
    call = cloud.oapi.call

    def noting_looks(account, action, params, *args, **kwargs):
        if action == "ReadImages" and account.account_id == GAMMA:
            looks.append(time.monotonic())
        return call(account, action, params, *args, **kwargs)

    monkeypatch.setattr(cloud.oapi, "call", noting_looks)
    grants.grants_add(share_id=share.public_id)
    assert watcher.wait_idle(30)
    assert looks  # it did look, from its first look on
    assert not AuditEvent.objects.filter(action="import.tagged").exists()  # nor tagged ahead while busy
    assert all(b - a >= copy_watch.BUSY_STEP.total_seconds() - 0.05 for a, b in zip(looks, looks[1:], strict=False)), \
        looks


def test_the_watcher_makes_no_look_at_a_copy_another_look_has_just_seen_pending(
        flow, cloud, shipped_looks, watcher, monkeypatch):
    from transfers.services import import_sweeps

    share, plan = _watched_copy(flow, cloud)
    sweep, swept = import_sweeps.import_sweep, []

    def counted(**kwargs):
        swept.append(kwargs["account_id"])
        return sweep(**kwargs)

    monkeypatch.setattr(import_sweeps, "import_sweep", counted)
    grants.grants_add(share_id=share.public_id)
    # As if another process's watcher looked at it less than a step before each of this one's looks
    # (a look notes when it was made in updated_at): this watcher leaves every look to it.
    Recipient.objects.filter(share=share).update(updated_at=timezone.now() + timedelta(hours=1))
    assert watcher.wait_idle(30)
    assert swept == []
    # Its watch over, rq's sweep comes as booked and sees the copy end.
    monkeypatch.undo()
    workers.run_jobs(until=lambda: Recipient.objects.get(share=share).state == Recipient.State.COMPLETED)
    assert AuditEvent.objects.filter(action="import.completed").count() == 1


def test_copies_of_several_jobs_are_watched_by_one_thread_each_end_once(flow, cloud, shipped_looks, watcher):
    shares = [_watched_copy(flow, cloud)[0]]
    shares.append(request_share(flow, cloud, accounts=[flow.gamma], copy_name="second"))
    approve(flow, shares[1])
    workers.flush()
    jobs = [threading.Thread(target=lambda s=s: (grants.grants_add(share_id=s.public_id), connections.close_all()))
            for s in shares]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    threads = [t for t in threading.enumerate() if t.name == "copy-watch"]
    assert len(threads) <= 1  # one per process (none left if both copies were seen already)
    assert watcher.wait_idle(30)
    copies = Recipient.objects.filter(share__in=shares)
    assert set(copies.values_list("state", flat=True)) == {Recipient.State.COMPLETED}
    assert cloud.counters(GAMMA).get("CreateImage") == 2
    assert AuditEvent.objects.filter(action="import.completed").count() == 2


def test_a_look_that_raises_leaves_the_copy_to_rqs_sweep(flow, cloud, shipped_looks, watcher, monkeypatch):
    share, plan = _watched_copy(flow, cloud)
    from transfers.services import import_sweeps

    def broken(**_):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(import_sweeps, "import_sweep", broken)
    grants.grants_add(share_id=share.public_id)
    assert watcher.wait_idle(30)  # the watch is over, the thread ended
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.IMPORTING
    monkeypatch.undo()
    # Its account's next look is booked through rq, as a sweep books it: rq's sweep sees the copy end.
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == Recipient.State.COMPLETED)
    assert cloud.counters(GAMMA).get("CreateImage") == 1
    assert AuditEvent.objects.filter(action="import.completed").count() == 1


def _start_worker(cloud, queues: list[str], log, **env):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, str(workers.ROOT / "manage.py"), "rqworker", *queues, "--with-scheduler"],
                            env=workers.worker_env(cloud, **env), cwd=workers.ROOT, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)


def test_a_worker_killed_while_its_thread_watches_its_copy_leaves_it_to_the_fallback_sweep(
        flow, cloud, shipped_looks, tmp_path, wait_for):
    """Two real workers: the one that grants and copies is killed (SIGKILL) once its job is done,
    while its thread waits for the copy's end; the other one's scheduler moves the sweep booked at
    the end of the watch, and the copy is seen then, created once and completed once."""
    from rq import Worker

    cloud.set_durations(copy_seconds=3.0)
    share = request_share(flow, cloud, accounts=[flow.gamma])
    _past_copies(flow, cloud, [4.0] * 5, size=_size(share))
    env = {"OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0,
           "OMIPORTAL_RECONCILE_GRACE_SECONDS": 600}  # the reconciler would come far too late
    log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed below
    # The survivor takes only sweeps (and holds the scheduler: it starts first); the other takes the grant.
    survivor = _start_worker(cloud, ["poll"], log, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "a", **env)
    try:
        connection = workers.queues()[0].connection
        wait_for(lambda: len(Worker.all(connection=connection)), lambda n: n == 1, timeout=30)
        watcher = _start_worker(cloud, ["default"], log, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "b", **env)
        wait_for(lambda: len(Worker.all(connection=connection)), lambda n: n == 2, timeout=30)
        wait_for(lambda: workers.pending_jobs(), lambda n: n == 0, timeout=30)  # the pre-flight checks ran
        approve(flow, share)
        recipient = wait_for(lambda: Recipient.objects.get(share=share), lambda r: bool(r.image_id), timeout=30,
                             interval=0.05)
        # The copy has started, and the job that started it is done: the worker's thread watches.
        wait_for(lambda: [w.get_current_job_id() for w in Worker.all(connection=connection) if w.pid == watcher.pid],
                 lambda current: current == [None], timeout=10, interval=0.05)
        assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.IMPORTING
        workers.kill_tree(watcher)
        done = wait_for(lambda: Recipient.objects.get(pk=recipient.pk),
                        lambda r: r.state == Recipient.State.COMPLETED, timeout=20, interval=0.1)
        # Seen by the fallback: after the watch would have ended, within a few seconds of it.
        after = (done.completed_at - done.started_at).total_seconds()
        assert 3.0 + copy_looks.WATCH_SPAN - 1 <= after < 3.0 + copy_looks.WATCH_SPAN + 3, after
        assert cloud.counters(GAMMA).get("CreateImage") == 1
        assert AuditEvent.objects.filter(action="import.completed").count() == 1
    finally:
        workers.kill_tree(survivor)
        if "watcher" in locals():
            workers.kill_tree(watcher)
        log.close()


# --- with a real worker and its scheduler -------------------------------------------------------


@pytest.fixture
def slow_grid_worker(flow, cloud, tmp_path):
    """A real worker whose grid's first look would come 20 s after a create."""
    pace = {"OMIPORTAL_SWEEP_MIN_SECONDS": 20, "OMIPORTAL_SWEEP_MAX_SECONDS": 60,
            "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = workers.start_worker(workers.worker_env(
            cloud, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "worker-checkpoints", **pace), stdout=out)
        try:
            yield log
        finally:
            workers.kill_tree(proc)


def test_a_real_worker_sees_the_copy_within_a_second_or_two_of_its_end(
        flow, cloud, shipped_looks, slow_grid_worker, monkeypatch, wait_for):
    cloud.set_durations(copy_seconds=3.0)
    share = request_share(flow, cloud, accounts=[flow.gamma])
    _past_copies(flow, cloud, [4.0] * 5, size=_size(share))  # ended 3 s after their creates
    ready, seen = _noting_ends(cloud, monkeypatch)
    wait_for(lambda: workers.pending_jobs(), lambda n: n == 0, timeout=30)  # the pre-flight checks ran
    approve(flow, share)
    recipient = wait_for(lambda: Recipient.objects.get(share=share),
                         lambda r: r.state == Recipient.State.COMPLETED, timeout=30, interval=0.1)
    lag = seen[recipient.image_id] - ready[recipient.image_id]
    # The grid would have looked 20 s after the create; the plan looks a second apart from 2 s on.
    assert 0 <= lag < 2.5, lag
    wait_for(lambda: LaunchGrant.objects.get(share=share).state, lambda s: s == LaunchGrant.State.REVOKED,
             timeout=30, interval=0.1)
    assert cloud.counters(GAMMA).get("CreateImage") == 1 and cloud.counters(ALPHA).get("UpdateImage") == 2
    assert "import-start-" not in slow_grid_worker.read_text()  # the grant job started the copy
