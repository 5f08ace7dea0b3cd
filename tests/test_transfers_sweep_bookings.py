"""At most one waiting sweep per account (transfers/sweep_bookings.py): looks asked for at an
account where an earlier sweep already waits add no job, and nothing is lost for it. Real Redis
and rq queues, real jobs run by a burst worker, the sandbox over HTTP."""

import math
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from tests import workers
from tests.transfer_world import imports_started
from transfers import scheduling, sweep_bookings
from transfers.models import Recipient
from transfers.services import polling, reconcile

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = "444455556666"


@pytest.fixture
def shipped(settings):
    """The shipped sweep grid (5 s) and back-off; gathering off, so each sweep looks when it runs."""
    def apply():
        settings.OMIPORTAL_SWEEP_MIN_SECONDS, settings.OMIPORTAL_SWEEP_MAX_SECONDS = 5.0, 60.0
        settings.OMIPORTAL_RECONCILE_GRACE_SECONDS, settings.OMIPORTAL_SWEEP_GATHER_SECONDS = 60.0, 0.0
    return apply


def _booked(account) -> list[str]:
    """The ids of the account's import sweeps waiting (scheduled or queued)."""
    q = scheduling.get_queue("poll")
    prefix = f"import-sweep-{account.public_id}-"
    return sorted(j for j in [*q.scheduled_job_registry.get_job_ids(), *q.get_job_ids()] if j.startswith(prefix))


def _ask(account, *offsets: float, now=None) -> None:
    """Ask for a look at each offset (seconds from now), each in its own transaction, as imports
    started one after another do (import_starts._started)."""
    now = now or timezone.now()
    for offset in offsets:
        with transaction.atomic():
            scheduling.schedule_sweep("import", account.public_id, now + timedelta(seconds=offset))


def _run_waiting() -> None:
    """Run the jobs waiting now (scheduled ones at once), as a worker would; the looks they book
    stay scheduled."""
    workers.release_scheduled()
    qs = workers.queues()
    SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer).work(burst=True, logging_level="WARNING")


def _slot_id(account, when) -> str:
    return f"import-sweep-{account.public_id}-{math.ceil(when.timestamp() / scheduling.slot_seconds())}"


def test_looks_asked_for_after_a_waiting_sweep_add_no_job_an_earlier_one_does(flow, shipped):
    shipped()
    now = timezone.now()
    _ask(flow.delta, *[10 + 5 * k for k in range(10)], now=now)  # ten starts, ten grid cells
    # Only the earliest waits (ten before: one per cell, nine of them finding nothing to do).
    assert _booked(flow.delta) == [_slot_id(flow.delta, now + timedelta(seconds=10))]
    _ask(flow.delta, 2, now=now)  # earlier than the one waiting: it is booked, and named by the key
    assert _slot_id(flow.delta, now + timedelta(seconds=2)) in _booked(flow.delta)
    assert len(_booked(flow.delta)) == 2
    assert sweep_bookings.booked(scheduling.get_queue("poll").connection, "import", flow.delta.public_id)[1] == \
        _slot_id(flow.delta, now + timedelta(seconds=2))
    _ask(flow.alpha, 30, now=now)  # another account books its own
    assert len(_booked(flow.alpha)) == 1


def test_the_waiting_sweep_looks_at_the_rows_whose_looks_it_stood_for_then_books_the_next(flow, cloud, shipped):
    rows = imports_started(flow, cloud, 3)  # importing, queues empty, nothing booked
    shipped()
    now = timezone.now()
    # Started a few seconds apart: their first looks fall in three grid cells.
    for row, offset in zip(rows, (0.5, 3, 30), strict=True):
        Recipient.objects.filter(pk=row.pk).update(next_poll_at=now + timedelta(seconds=offset), poll_interval=5.0)
    _ask(flow.delta, 0.5, 3, 30, now=now)
    assert _booked(flow.delta) == [_slot_id(flow.delta, now + timedelta(seconds=0.5))]
    for row in rows[:2]:  # the first two are done; the third still imports
        with cloud.world.lock:
            cloud.world.images[row.image_id].ready_at = time.monotonic()
    time.sleep(max(0.0, (now + timedelta(seconds=1) - timezone.now()).total_seconds()))

    _run_waiting()

    # The one sweep claimed the second row too (due within its cell, its own booking skipped)...
    assert [r.state for r in Recipient.objects.order_by("pk")] == ["completed", "completed", "importing"]
    # ...and, having cleared the key as it began, booked the third row's look: without that, its
    # own booking would have been taken for one already waiting, and nothing would look again.
    assert _booked(flow.delta) == [_slot_id(flow.delta, now + timedelta(seconds=30))]


def test_a_look_asked_for_while_the_sweep_runs_is_booked(flow, cloud, shipped, monkeypatch):
    """The moment after a sweep's last read of the account: a look asked for then gets a job of
    its own, before the one the sweep books (the sweep will not read the row again)."""
    rows = imports_started(flow, cloud, 3)
    shipped()
    now = timezone.now()
    for row, offset in zip(rows, (0, 40, 100), strict=True):
        Recipient.objects.filter(pk=row.pk).update(next_poll_at=now + timedelta(seconds=offset), poll_interval=5.0)
    with cloud.world.lock:
        cloud.world.images[rows[0].image_id].ready_at = time.monotonic()
    _ask(flow.delta, 0, now=now)
    asked = []
    schedule_next = polling.schedule_next

    def a_start_lands_after_the_sweep_read(*args, **kwargs):
        schedule_next(*args, **kwargs)  # books the second row's look, 40 s on
        # Another worker's start commits now: its look, 20 s on, comes before that one.
        Recipient.objects.filter(pk=rows[2].pk).update(next_poll_at=now + timedelta(seconds=20))
        _ask(flow.delta, 20, now=now)
        asked.append(True)

    monkeypatch.setattr(polling, "schedule_next", a_start_lands_after_the_sweep_read)
    _run_waiting()
    assert asked and Recipient.objects.get(pk=rows[0].pk).state == "completed"
    assert _booked(flow.delta) == sorted([_slot_id(flow.delta, now + timedelta(seconds=20)),
                                          _slot_id(flow.delta, now + timedelta(seconds=40))])


def test_a_waiting_sweep_that_is_lost_is_replaced_by_the_reconciler(flow, cloud, shipped):
    rows = imports_started(flow, cloud, 1)
    shipped()
    now = timezone.now()
    _ask(flow.delta, 1, now=now)
    lost = _booked(flow.delta)
    assert len(lost) == 1
    scheduling.get_queue("poll").scheduled_job_registry.remove(lost[0], delete_job=True)  # lost
    Recipient.objects.filter(pk=rows[0].pk).update(next_poll_at=now - timedelta(seconds=61))
    _ask(flow.delta, 2, now=now)  # a look asked for meanwhile still defers to the key: no job
    assert _booked(flow.delta) == []

    assert reconcile.reconcile()["imports"] == 1
    # The reconciler does not defer to a key naming a sweep it has found lost.
    assert len(_booked(flow.delta)) == 1
    workers.release_scheduled()
    with cloud.world.lock:
        cloud.world.images[rows[0].image_id].ready_at = time.monotonic()
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=rows[0].pk).state == "completed")
    assert Recipient.objects.get(pk=rows[0].pk).state == "completed"


def test_a_sweep_that_could_not_be_enqueued_leaves_no_key(flow, shipped, monkeypatch):
    shipped()
    monkeypatch.setattr(scheduling, "_send", lambda *a, **k: False)  # Redis refused the enqueue
    _ask(flow.delta, 10)
    monkeypatch.undo()
    assert sweep_bookings.booked(scheduling.get_queue("poll").connection, "import", flow.delta.public_id) is None
    _ask(flow.delta, 12)
    assert len(_booked(flow.delta)) == 1


# --- Due sweeps of many accounts run side by side (scheduling.take_waiting_sweeps) ----------------

def _imports_in_accounts(flow, cloud, accounts=None) -> list:
    """One share from alpha to ``accounts`` (by default delta, an import, and gamma, a same-Region
    copy), every one started and still pending; queues empty."""
    from tests.transfer_world import approve, request_share

    accounts = accounts or [flow.delta, flow.gamma]

    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    cloud.set_durations(export_seconds=0.2, import_seconds=1000, copy_seconds=1000)
    share = request_share(flow, cloud, accounts=accounts)
    approve(flow, share)
    workers.run_jobs(until=lambda: not Recipient.objects.filter(share=share, image_id="").exists())
    workers.flush()
    return list(Recipient.objects.filter(share=share).select_related("target_account").order_by("pk"))


def _ended_and_due(flow, cloud, shipped, accounts=None) -> list:
    """Every import (``_imports_in_accounts``) ended in the cloud, its look due and its sweep
    queued, at the shipped grid."""
    rows = _imports_in_accounts(flow, cloud, accounts)
    shipped()
    now = timezone.now()
    for row in rows:
        Recipient.objects.filter(pk=row.pk).update(next_poll_at=now, poll_interval=5.0)
        with cloud.world.lock:
            cloud.world.images[row.image_id].ready_at = time.monotonic()
        _ask(row.target_account, 0, now=now)
    workers.release_scheduled()  # their time has come
    return rows


def test_a_worker_taking_one_due_sweep_runs_the_others_waiting_beside_it(flow, cloud, shipped):
    """A release into 1,000 accounts queued a due sweep per account; one after another (a look, a
    tag and the completions each) they were taken 1.5 a second by two workers, and imports ended
    minutes before anyone saw them."""
    rows = _ended_and_due(flow, cloud, shipped)
    poll = scheduling.get_queue("poll")
    assert poll.count == 2

    qs = workers.queues()
    SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer).work(
        burst=True, max_jobs=1, logging_level="WARNING")  # the worker takes one job

    assert poll.count == 0  # the other was taken off the queue with it...
    assert [r.state for r in Recipient.objects.order_by("pk")] == ["completed", "completed"]  # ...and run
    for row in rows:  # each key let go as its sweep began: nothing waits, nothing is left to look at
        assert sweep_bookings.booked(poll.connection, "import", row.target_account.public_id) is None


def test_a_thread_done_with_its_sweep_takes_the_next_ones_waiting_within_the_budget(flow, cloud, shipped, settings):
    """Taken 32 at a time, a worker's sweeps waited for the slowest of each 32, then gave the late
    queues a turn: a third of its time in a release into 1,000 accounts. A thread that is done now
    takes the next sweeps waiting, for the sweep budget."""
    from tests.transfer_world import sandbox_account

    epsilon = sandbox_account(cloud, flow.dest, "epsilon")
    _ended_and_due(flow, cloud, shipped, [flow.delta, flow.gamma, epsilon])
    settings.OMIPORTAL_SWEEP_CONCURRENCY = 2  # the job's sweep and one beside it: the third is taken after
    poll = scheduling.get_queue("poll")
    assert poll.count == 3

    qs = workers.queues()
    SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer).work(
        burst=True, max_jobs=1, logging_level="WARNING")

    assert poll.count == 0
    assert [r.state for r in Recipient.objects.order_by("pk")] == ["completed"] * 3


def test_run_each_asks_for_more_items_only_within_its_time_and_runs_every_item_it_got(flow):
    from transfers.services import polling

    batches, done = [[2, 3], [4], []], []

    def more():
        return batches.pop(0) if batches else []

    polling.run_each(done.append, [1], what="count", threads=2, more=more, more_for=30.0)
    assert sorted(done) == [1, 2, 3, 4] and not batches  # asked until it got none
    batches[:], done[:] = [[2]], []
    polling.run_each(done.append, [1], what="count", threads=2, more=more, more_for=0.0)
    assert done == [1] and batches == [[2]]  # its time was up: not asked


def test_a_sweep_left_pending_by_a_sweep_run_beside_another_books_its_next_look(flow, cloud, shipped):
    """A sweep run in another job's thread stands for its own job: as it begins it lets go of the
    key that names that job, so its next look is booked (rq's current job, in that thread, is the
    job that took it)."""
    delta, gamma = _imports_in_accounts(flow, cloud)
    shipped()
    now = timezone.now()
    Recipient.objects.filter(pk=delta.pk).update(next_poll_at=now, poll_interval=5.0)
    # gamma's row is due, but its sweep was booked for later (here released early, as rq's
    # scheduler may by a second); once looked at, its next look comes after that time.
    Recipient.objects.filter(pk=gamma.pk).update(next_poll_at=now, poll_interval=60.0)
    _ask(delta.target_account, 0, now=now)
    _ask(gamma.target_account, 30, now=now)
    first = {row.pk: _booked(row.target_account) for row in (delta, gamma)}
    workers.release_scheduled()
    assert scheduling.get_queue("poll").get_job_ids() == [*first[delta.pk], *first[gamma.pk]]
    qs = workers.queues()
    SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer).work(
        burst=True, max_jobs=1, logging_level="WARNING")  # delta's job, which takes gamma's
    assert scheduling.get_queue("poll").count == 0
    for row in Recipient.objects.order_by("pk"):
        assert row.state == "importing" and row.next_poll_at > now + timedelta(seconds=5)  # looked at, pending
        booked = _booked(row.target_account)
        assert len(booked) == 1 and booked != first[row.pk], row.target_account  # its next look


def test_two_workers_never_take_the_same_waiting_sweep_and_leave_other_jobs_in_place(flow):
    """LREM gives each queued id to one caller: run side by side by two workers at once, every
    sweep is taken exactly once, and the hand-offs among them stay queued, in their order."""
    import threading
    import uuid

    poll = scheduling.get_queue("poll")
    sweeps = [f"import-sweep-{uuid.uuid4()}-{k}" for k in range(120)]
    others = [f"import-handoff-{uuid.uuid4()}-{k}" for k in range(6)]
    for k, job_id in enumerate(sweeps):
        if k % 20 == 0:
            other = others[k // 20]
            poll.enqueue("transfers.jobs.import_handoff_job", other, job_id=other)
        poll.enqueue("transfers.jobs.import_sweep_job", job_id[len("import-sweep-"):-len(f"-{k}")], job_id=job_id)
    taken: list[list] = [[], []]
    start = threading.Barrier(2)

    def take(into: list) -> None:
        start.wait()
        while batch := scheduling.take_waiting_sweeps("import", limit=7):
            into.extend(batch)

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [job_id for batch in taken for job_id, _ in batch]
    assert sorted(ids) == sorted(sweeps)  # each once: none twice, none left
    assert taken[0] and taken[1]  # both took part
    assert all(account == job_id[len("import-sweep-"):len("import-sweep-") + 36] for batch in taken
               for job_id, account in batch)
    assert poll.get_job_ids() == others  # the other jobs untouched, in order
    assert not any(poll.connection.exists(f"rq:job:{job_id}") for job_id in sweeps)  # ids free again


def test_inside_side_by_side_work_run_each_opens_no_thread(flow):
    import threading

    from transfers.services import polling

    seen = []
    with polling.in_line():
        polling.run_each(lambda item: seen.append(threading.get_ident()), list(range(40)), what="count",
                         threads=40)
    assert set(seen) == {threading.get_ident()}
    seen.clear()
    polling.run_each(lambda item: seen.append(threading.get_ident()), list(range(40)), what="count", threads=40)
    assert threading.get_ident() not in seen


def test_sweeps_run_side_by_side_do_not_queue_on_the_audit_chain_head(flow, cloud, shipped):
    """Their completions' events wait in the pending table while another transaction holds the
    head (py-spy: 43% of the sweep threads' time queued on it in a release into 1,000 accounts),
    and are chained by the next writer."""
    import threading

    from audit.models import AuditChainHead, AuditPendingEvent
    from audit.recorder import record
    from audit.verify import verify_chain
    from tests.pg import own_connection

    _ended_and_due(flow, cloud, shipped)
    holder = own_connection()  # another transaction, holding the head for 20 s at most
    holder.execute("BEGIN")
    holder.execute(f'SELECT 1 FROM "{AuditChainHead._meta.db_table}" FOR UPDATE')
    released = threading.Event()

    def release():
        holder.execute("ROLLBACK")
        released.set()

    timer = threading.Timer(20.0, release)
    timer.start()
    try:
        qs = workers.queues()
        SimpleWorker(qs, connection=qs[0].connection, serializer=JSONSerializer).work(
            burst=True, max_jobs=1, logging_level="WARNING")
        assert not released.is_set()  # done while the head was held
    finally:
        timer.cancel()
        if not released.is_set():
            release()
        holder.close()
    assert [r.state for r in Recipient.objects.order_by("pk")] == ["completed", "completed"]
    parked = set(AuditPendingEvent.objects.values_list("fields__action", flat=True))
    assert "import.completed" in parked
    record(action="share.approved", actor=None)  # the next writer chains them
    assert not AuditPendingEvent.objects.exists()
    assert verify_chain().ok
