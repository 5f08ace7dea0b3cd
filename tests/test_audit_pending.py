"""A web request never queues for the audit chain head (issue 19): its events wait to be chained.

Jobs append all the time; a page whose event waited behind each of them was several times slower
under load than alone. When another transaction holds the head, a request's events are written to
the pending table in the request's own transaction, and the next writer that holds the head (or
``audit_chain_job``) chains them, oldest first, before its own. These tests put two or three real
PostgreSQL connections at the dangerous moments: the head held while a request records, a pending
event not yet committed while another writer chains, a rollback, a denial kept aside. Every wait
is bounded by ``lock_timeout``: a request that queued for the head fails the test, never hangs it.
"""

import datetime
import threading
import time
import uuid

import django_rq
import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test import RequestFactory
from django.utils import timezone
from rq.job import JobStatus

from audit import jobs, recorder, verify
from audit.context import job_context, request_context
from audit.models import AuditChainHead, AuditEvent, AuditPendingEvent
from audit.recorder import record
from audit.verify import verify_chain
from tests import workers
from tests.pg import own_connection

pytestmark = [pytest.mark.django_db(transaction=True)]

WAIT = 10.0  # seconds any step may take before the test gives up
REFUSED = "audit trail is append-only"


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("row locks (and SKIP LOCKED) are PostgreSQL's; SQLite has none to wait for")


class _HeadHeld:
    """Another transaction (a job in the middle of its commit) holding the chain head."""

    def __enter__(self):
        self.conn = own_connection()
        self.conn.execute("BEGIN")
        self.conn.execute(f'SELECT 1 FROM "{AuditChainHead._meta.db_table}" FOR UPDATE')
        return self

    def __exit__(self, *exc):
        self.conn.execute("ROLLBACK")
        self.conn.close()


class _Thread(threading.Thread):
    """``func`` on a connection of its own that gives up on any lock after WAIT seconds."""

    def __init__(self, func):
        super().__init__(daemon=True)
        self.func, self.error, self.result = func, None, None

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = '{int(WAIT * 1000)}ms'")
            self.result = self.func()
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            connections.close_all()

    def finish(self):
        self.join(timeout=WAIT + 5)
        assert not self.is_alive(), "still waiting"
        assert self.error is None, self.error
        return self.result


def _in_thread(func):
    thread = _Thread(func)
    thread.start()
    return thread.finish()


def _as_request(func):
    """``func`` inside a web request's audit context, on a connection of its own."""
    def run():
        with request_context(request=RequestFactory().get("/audit/")):
            return func()
    return run


def _page_reads(n):
    return lambda: record(action="audit.read", actor=None, details={"page": n})


def _chain_actions():
    return list(AuditEvent.objects.order_by("seq").values_list("action", "details"))


def _times_never_go_back():
    times = list(AuditEvent.objects.order_by("seq").values_list("occurred_at", flat=True))
    return all(a <= b for a, b in zip(times, times[1:], strict=False))


@pytest.mark.needs_postgres
def test_a_request_records_while_another_transaction_holds_the_head(postgres):
    record(action="share.approved", actor=None, details={"n": 0})
    with _HeadHeld():
        event = _in_thread(_as_request(_page_reads(1)))  # before: it queued, and lock_timeout failed it
        assert event.seq is None
        assert AuditChainHead.objects.get().seq == 1
        assert list(AuditPendingEvent.objects.values_list("public_id", flat=True)) == [event.public_id]
    # The next writer that holds the head, here a job, chains it before its own event.
    _in_thread(lambda: record(action="share.approved", actor=None, details={"n": 2}))
    assert _chain_actions() == [("share.approved", {"n": 0}), ("audit.read", {"page": 1}),
                                ("share.approved", {"n": 2})]
    assert AuditEvent.objects.get(seq=2).public_id == event.public_id
    assert not AuditPendingEvent.objects.exists()
    assert _times_never_go_back()
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_a_job_still_waits_for_the_head(postgres):
    # Only requests park: a job's event takes its place in the chain in its own transaction.
    with _HeadHeld():
        waiting = _Thread(lambda: record(action="share.approved", actor=None))
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive()  # queued on the head
    waiting.finish()
    assert not AuditPendingEvent.objects.exists()
    assert AuditEvent.objects.count() == 1


@pytest.mark.needs_postgres
def test_a_job_run_side_by_side_parks_its_events_while_another_transaction_holds_the_head(postgres):
    def sweep_event():
        with job_context(job_id="import-sweep-x-1", park=True), recorder.atomic():
            return record(action="share.approved", actor=None, details={"n": 1})

    record(action="share.approved", actor=None, details={"n": 0})
    with _HeadHeld():
        event = _in_thread(sweep_event)  # without park it queues, and lock_timeout fails it
        assert event.seq is None
        assert list(AuditPendingEvent.objects.values_list("fields__request_id", flat=True)) == ["import-sweep-x-1"]
    _in_thread(lambda: record(action="share.approved", actor=None, details={"n": 2}))
    assert _chain_actions() == [("share.approved", {"n": k}) for k in range(3)]
    assert not AuditPendingEvent.objects.exists()
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_a_pending_event_committed_after_a_writer_looked_is_chained_by_the_next(postgres):
    """The dangerous moment: a request has parked its event but not committed it, and a writer
    that holds the head chains meanwhile. The writer neither waits for that row nor sees it; the
    event is chained by the writer after, never lost, and the chain stays gapless."""
    parked, go_on = threading.Event(), threading.Event()

    def request_that_commits_late():
        with transaction.atomic():
            event = record(action="audit.read", actor=None, details={"page": "late"})
            parked.set()
            assert go_on.wait(WAIT)
        return event

    with _HeadHeld():
        late = _Thread(_as_request(request_that_commits_late))
        late.start()
        assert parked.wait(WAIT)
    # The head is free; the late row is written but not committed.
    _in_thread(lambda: record(action="share.approved", actor=None, details={"n": 1}))
    assert _chain_actions() == [("share.approved", {"n": 1})]
    go_on.set()
    event = late.finish()
    assert list(AuditPendingEvent.objects.values_list("public_id", flat=True)) == [event.public_id]
    assert _in_thread(recorder.chain_pending) == 1
    assert _chain_actions() == [("share.approved", {"n": 1}), ("audit.read", {"page": "late"})]
    assert _times_never_go_back()
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_pending_events_are_chained_in_the_order_they_were_recorded(postgres):
    with _HeadHeld():
        for n in range(3):
            _in_thread(_as_request(_page_reads(n)))
    with job_context(job_id="audit-chain"):
        assert recorder.chain_pending() == 3
    assert _chain_actions() == [("audit.read", {"page": n}) for n in range(3)]
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_a_request_that_rolls_back_leaves_nothing_pending(postgres):
    def fails_after_recording():
        with transaction.atomic():
            record(action="audit.read", actor=None)
            raise RuntimeError("the page failed")

    with _HeadHeld():
        failing = _Thread(_as_request(fails_after_recording))
        failing.start()
        failing.join(timeout=WAIT + 5)
    assert isinstance(failing.error, RuntimeError)
    assert not AuditPendingEvent.objects.exists()
    assert recorder.chain_pending() == 0
    assert AuditEvent.objects.count() == 0


@pytest.mark.needs_postgres
def test_a_denial_kept_aside_is_not_written_twice_when_it_is_pending(postgres):
    """A denial is kept aside per request and written again at the request's end unless it is in
    the trail; a pending one is in the trail too."""
    def denied():
        with transaction.atomic():
            return record(action="access.denied", outcome="denied", actor=None,
                          details={"permission": "transfers.approve"})

    with _HeadHeld():
        event = _in_thread(_as_request(denied))  # before: the keeper wrote it again, a duplicate id
    assert recorder.chain_pending() == 1
    assert list(AuditEvent.objects.values_list("public_id", flat=True)) == [event.public_id]


@pytest.mark.needs_postgres
def test_the_request_asks_for_the_chaining_job(postgres):
    workers.flush()
    with _HeadHeld():
        _in_thread(_as_request(_page_reads(1)))
    queue = django_rq.get_queue("default")
    (job,) = (queue.fetch_job(i) for i in queue.job_ids if i.startswith(f"{jobs.CHAIN_JOB_ID}-"))
    assert job.func_name == "audit.jobs.audit_chain_job"
    assert jobs.audit_chain_job() == 1
    assert AuditEvent.objects.get().action == "audit.read"


@pytest.mark.needs_postgres
def test_pages_and_jobs_recording_at_once_put_every_event_in_the_chain_once(postgres):
    """Pages park whenever the head is busy, jobs queue for it and chain what is parked: in the
    end every event is in the chain exactly once, gapless, and the chain verifies."""
    threads, per_thread = 8, 6
    barrier, errors = threading.Barrier(threads), []

    def recorder_thread(worker):
        def records():
            for index in range(per_thread):
                record(action="audit.read" if worker % 2 else "share.approved", actor=None,
                       details={"worker": worker, "index": index})
        try:
            barrier.wait(timeout=WAIT)
            (_as_request(records) if worker % 2 else records)()
        except Exception as exc:  # reported below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    running = [threading.Thread(target=recorder_thread, args=(n,)) for n in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in running) and errors == []
    recorder.chain_pending()  # what the last pages parked after the last job looked
    total = threads * per_thread
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, total + 1))
    assert sorted(AuditEvent.objects.values_list("details__worker", "details__index")) == sorted(
        (worker, index) for worker in range(threads) for index in range(per_thread))
    assert not AuditPendingEvent.objects.exists()
    assert _times_never_go_back()
    assert verify_chain().ok


# --- The table keeps what it holds (both databases) ---------------------------------------------


def _pending_row(*, age: float = 0.0) -> AuditPendingEvent:
    return AuditPendingEvent.objects.create(
        public_id=uuid.uuid4(), recorded_at=timezone.now() - datetime.timedelta(seconds=age),
        fields={"actor_id": None, "actor_name": "", "team_id": None, "team_name": "", "action": "audit.read",
                "outcome": "success", "target_type": "", "target_id": "", "target_label": "", "details": {},
                "request_id": "r", "ip": None, "user_agent": "", "cloud_request_ids": []})


def _refused(sql, params=None):
    with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_the_database_refuses_dropping_or_changing_a_pending_event():
    row = _pending_row()
    _refused("DELETE FROM audit_auditpendingevent WHERE id = %s", [row.pk])
    _refused("UPDATE audit_auditpendingevent SET fields = '{}' WHERE id = %s", [row.pk])
    if connection.vendor == "postgresql":
        _refused("TRUNCATE audit_auditpendingevent")
    assert AuditPendingEvent.objects.filter(pk=row.pk).exists()
    # Chained, it leaves (the trigger finds its event in the chain).
    assert recorder.chain_pending() == 1
    assert AuditEvent.objects.get().public_id == row.public_id
    assert not AuditPendingEvent.objects.exists()


def test_verification_reports_young_pending_events_and_fails_on_old_ones(settings):
    settings.OMIPORTAL_AUDIT_PENDING_GRACE_SECONDS = 60
    record(action="share.approved", actor=None)
    _pending_row(age=5)
    result = verify_chain()
    assert (result.ok, result.pending) == (True, 1), result
    assert "1 waiting to be chained" in result.message
    _pending_row(age=120)
    result = verify_chain()
    assert (result.ok, result.reason, result.pending) == (False, verify.PENDING_STALE, 2), result
    assert "is a worker running" in result.describe()
    recorder.chain_pending()
    assert verify_chain().ok


def test_the_tick_enqueues_the_chaining_job_while_events_wait(settings):
    settings.OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS = 0
    settings.OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS = 0
    workers.flush()
    assert jobs.ensure_audit_jobs_enqueued() == []  # nothing waits
    _pending_row()
    assert jobs.ensure_audit_jobs_enqueued() == [jobs.CHAIN_JOB_ID]
    assert jobs.ensure_audit_jobs_enqueued() == []  # asked already (and queued): once


def test_a_chaining_job_killed_mid_run_blocks_chaining_for_its_slot_only(settings, monkeypatch):
    """A killed run's record stays "started" for the job's timeout plus a minute (16 minutes on the
    default queue): with one fixed id, the events waited that long to be chained."""
    settings.OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS = 0
    settings.OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS = 0
    monkeypatch.setattr(recorder, "CHAIN_SLOT_SECONDS", 1)
    workers.flush()
    _pending_row()
    assert jobs.ensure_audit_jobs_enqueued() == [jobs.CHAIN_JOB_ID]
    killed = workers.killed_mid_run()
    time.sleep(1.1)  # the ask's throttle (a second) and the slot have both passed
    assert jobs.ensure_audit_jobs_enqueued() == [jobs.CHAIN_JOB_ID]
    assert killed.get_status() == JobStatus.STARTED
    workers.run_jobs()
    assert not AuditPendingEvent.objects.exists()
    assert verify_chain().ok
