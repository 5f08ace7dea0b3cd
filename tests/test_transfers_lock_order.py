"""One lock order (issue 14, item 4): business rows, then the audit chain head.

Appending an audit event locks the chain head until the transaction ends. A service that
recorded its event and then locked a share or an export (approving, declining, failing or
refusing an import, revealing a link) held the head while waiting for a sweep that held that row
and was about to append in turn: on PostgreSQL, a deadlock. ``recorder.atomic()`` appends the
events of a service's transaction at its end, so the head is its last lock.

Two kinds of tests:

- the interleavings, on PostgreSQL: a person's service and a sweep on two real connections, made
  to meet at the dangerous point by a third connection (the gate) that holds the row they both
  need, then lets go. Each must finish; before the fix PostgreSQL broke the cycle with a
  deadlock error (a 500 for the person, a failed sweep for the worker);
- the order itself, on both databases: every statement of a whole copy's transactions is
  watched, and none may write or lock a business row once the chain head was touched.
"""

import contextlib
import re
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import CloudAccount
from audit.models import AuditChainHead, AuditEvent, AuditPendingEvent
from audit.verify import verify_chain
from tests import workers
from tests.pg import WAIT, Run, gate, own_connection, wait_for_waiters
from tests.transfer_world import access, approve, image_id, request_share
from transfers import errors
from transfers.models import Export, Recipient, Share
from transfers.services import exports, external_links, import_offers, import_sweeps, reconcile
from transfers.services import requests as share_requests
from transfers.services.requests import ExternalRecipient

pytestmark = pytest.mark.django_db(transaction=True)

EXTERNAL = ExternalRecipient(account_id="999988887777", region="us-west-1")


# --- Two connections at the dangerous point (PostgreSQL) ------------------------------------------

@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("row locks and deadlock detection are PostgreSQL's; SQLite locks the whole database")


def _meet(gate_model, gate_pk, *, sweep, person):
    """``sweep`` runs first and queues on the gated row, having locked what it locks before it;
    then ``person`` runs until it queues too (on the gate, or on a row the sweep holds); then the
    gate opens. Returns the two runs, both finished."""
    monitor = own_connection()
    first, second = Run("sweep", sweep), Run("person", person)
    try:
        with gate(gate_model, gate_pk):
            first.start()
            wait_for_waiters(monitor, 1, "the sweep")
            second.start()
            wait_for_waiters(monitor, 2, "the person's service")
        for run in (first, second):
            run.join(timeout=WAIT + 5)
        stuck = [run.name for run in (first, second) if run.is_alive()]
        assert not stuck, f"still waiting after {WAIT + 5}s: {stuck}"
    finally:
        # Whatever happened, leave no backend waiting behind the test (the flush would wait for it).
        monitor.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        monitor.close()
    return first, second


def _move_task_to_its_end(cloud, task_id):
    with cloud.world.lock:
        task = cloud.world.tasks[task_id]
        task.started = time.monotonic() - task.duration


def _end_import(cloud, image_id, *, fail=""):
    with cloud.world.lock:
        image = cloud.world.images[image_id]
        image.ready_at, image.fail_with = time.monotonic(), fail


@pytest.mark.needs_postgres
def test_approving_a_share_that_reuses_an_export_meets_the_sweep_that_completes_it(flow, cloud, postgres):
    # One export of the image running for a first share; a second share of it waits for approval.
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    first = request_share(flow, cloud, copy_name="web-copy-1")
    approve(flow, first)
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").exists())
    export = Export.objects.get()
    second = request_share(flow, cloud, copy_name="web-copy-2")
    workers.flush()
    _move_task_to_its_end(cloud, export.task_id)
    Export.objects.filter(pk=export.pk).update(next_poll_at=timezone.now())

    # The sweep locks the export (completed), then waits for the first share (offered): the gate.
    # The approval locks its share, then the export it reuses, which the sweep holds.
    sweep, person = _meet(Share, first.pk,
                          sweep=lambda: exports.export_sweep(account_id=flow.alpha.public_id),
                          person=lambda: approve(flow, second))

    assert (sweep.error, person.error) == (None, None)
    assert dict(Share.objects.values_list("pk", "state")) == {first.pk: "ready", second.pk: "ready"}
    assert Share.objects.get(pk=second.pk).export_id == export.pk
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_two_approvals_of_one_image_at_once_make_one_export_that_both_use(flow, cloud, postgres):
    # Two shares of one image wait for approval and no export of it exists. The first approval is
    # held after making its export, its transaction open; the second runs meanwhile. Its look for
    # an export to reuse locks nothing (there is none yet): without the export lock it made a
    # second export of the same image, committed once the first let go.
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    first = request_share(flow, cloud, copy_name="web-copy-1")
    second = request_share(flow, cloud, copy_name="web-copy-2")
    workers.flush()
    made, release = threading.Event(), threading.Event()

    def first_approval():
        with transaction.atomic():
            approve(flow, first)
            made.set()
            release.wait(WAIT)

    monitor = own_connection()
    one, two = Run("first", first_approval), Run("second", lambda: approve(flow, second))
    try:
        one.start()
        assert made.wait(WAIT), one.error
        two.start()
        wait_for_waiters(monitor, 1, "the second approval")
        release.set()
        for run in (one, two):
            run.join(timeout=WAIT + 5)
        assert not one.is_alive() and not two.is_alive()
    finally:
        release.set()
        monitor.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        monitor.close()

    assert (one.error, two.error) == (None, None)
    (export,) = Export.objects.all()
    assert set(Share.objects.values_list("export_id", flat=True)) == {export.pk}
    assert sorted(AuditEvent.objects.filter(action__startswith="export.").values_list("action", flat=True)) == [
        "export.requested", "export.reused"]
    assert verify_chain().ok


def _offered(flow, cloud, *, externals=()):
    """A ready share to gamma and delta (and ``externals``); gamma's import is accepted and running."""
    cloud.set_durations(export_seconds=0.2, import_seconds=1000)
    share = request_share(flow, cloud, accounts=[flow.gamma, flow.delta], externals=externals)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    running = Recipient.objects.get(share=share, target_account=flow.gamma)
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=running)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=running.pk).image_id)
    workers.flush()
    return share, Recipient.objects.get(pk=running.pk)


def _completing(cloud, recipient):
    """The recipient's import has ended in the cloud and its look is due: the gamma sweep completes it."""
    _end_import(cloud, recipient.image_id)
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now())


@pytest.mark.needs_postgres
def test_declining_meets_the_sweep_that_completes_another_import_of_the_share(flow, cloud, postgres):
    share, running = _offered(flow, cloud)
    offered = Recipient.objects.get(share=share, target_account=flow.delta)
    _completing(cloud, running)

    # Both lock the share last among the business rows (share_refresh): the sweep first, at the gate.
    sweep, person = _meet(Share, share.pk,
                          sweep=lambda: import_sweeps.import_sweep(account_id=flow.gamma.public_id),
                          person=lambda: import_offers.recipient_decline(access=access(flow.dst_member, flow.dest),
                                                                   recipient=offered, reason="not needed"))

    assert (sweep.error, person.error) == (None, None)
    assert dict(Recipient.objects.filter(share=share).values_list("pk", "state")) == {
        running.pk: "completed", offered.pk: "declined"}
    assert Share.objects.get(pk=share.pk).state == Share.State.COMPLETED
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_an_accept_refused_for_a_moved_account_meets_the_sweep(flow, cloud, postgres):
    share, running = _offered(flow, cloud)
    offered = Recipient.objects.get(share=share, target_account=flow.delta)
    CloudAccount.objects.filter(pk=flow.delta.pk).update(account_id="000011112222")  # re-keyed since approval
    _completing(cloud, running)
    refused = []

    def accept():
        try:
            import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=offered)
        except errors.ShareError as exc:  # the refusal the person is shown; the import failed
            refused.append(str(exc))

    sweep, person = _meet(Share, share.pk, sweep=lambda: import_sweeps.import_sweep(account_id=flow.gamma.public_id),
                          person=accept)

    assert (sweep.error, person.error) == (None, None)
    assert refused and "000011112222" in refused[0]
    assert Recipient.objects.get(pk=offered.pk).state == Recipient.State.FAILED
    assert AuditEvent.objects.filter(action="import.refused", outcome="denied").count() == 1
    assert verify_chain().ok


@pytest.mark.needs_postgres
def test_revealing_a_link_meets_the_sweep_that_completes_an_import_of_the_share(flow, cloud, postgres):
    share, running = _offered(flow, cloud, externals=[EXTERNAL])
    external = Recipient.objects.get(share=share, kind=Recipient.Kind.EXTERNAL)
    Recipient.objects.filter(share=share, target_account=flow.delta).update(
        state=Recipient.State.DECLINED)  # only the external recipient and gamma's import are left
    _completing(cloud, running)
    revealed = []

    sweep, person = _meet(Share, share.pk, sweep=lambda: import_sweeps.import_sweep(account_id=flow.gamma.public_id),
                          person=lambda: revealed.append(external_links.link_reveal(
                              access=access(flow.src_member, flow.source), share=share, recipient=external)))

    assert (sweep.error, person.error) == (None, None)
    assert revealed and revealed[0].url.startswith("http")
    assert dict(Recipient.objects.filter(share=share).exclude(state="declined").values_list("pk", "state")) == {
        running.pk: "completed", external.pk: "completed"}
    assert Share.objects.get(pk=share.pk).state == Share.State.COMPLETED
    assert verify_chain().ok


# --- The order itself, statement by statement (PostgreSQL and SQLite) -----------------------------

_HEAD = AuditChainHead._meta.db_table
_AUDIT = {_HEAD, AuditEvent._meta.db_table, AuditPendingEvent._meta.db_table}
_TABLE = re.compile(r'^\s*(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+"([^"]+)"', re.IGNORECASE)
_LOCKING_SELECT = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE)\b", re.IGNORECASE)
_FROM = re.compile(r'\bFROM\s+"([^"]+)"', re.IGNORECASE)


class LockOrderWatch:
    """Watches the statements of one connection: within a transaction, once the chain head has
    been touched (locked, or read to be locked), no statement may write or lock a business row
    before the transaction ends. On PostgreSQL the head is locked ``FOR UPDATE``; SQLite ignores
    that, but the order of the statements is the same."""

    def __init__(self, conn):
        self.conn, self.head, self.violations, self.transactions = conn, None, [], 0

    def _business(self, sql: str) -> str | None:
        written = _TABLE.match(sql)
        if written:
            return None if written.group(1) in _AUDIT else written.group(1)
        if _LOCKING_SELECT.search(sql):
            tables = set(_FROM.findall(sql)) - _AUDIT
            return ", ".join(sorted(tables)) or None
        return None

    def __call__(self, execute, sql, params, many, context):
        if not self.conn.in_atomic_block:
            self.head = None  # autocommit: each statement is its own transaction
        if f'"{_HEAD}"' in sql:
            if self.conn.in_atomic_block and self.head is None:
                self.head = sql
        elif self.head is not None:
            table = self._business(sql)
            if table:
                self.violations.append(f"{table} after the chain head: {sql[:160]}")
        return execute(sql, params, many, context)

    def ended(self):
        self.head = None
        self.transactions += 1


@contextlib.contextmanager
def lock_order_watched():
    """Yield a LockOrderWatch of this thread's connection (services and in-process jobs)."""
    watch = LockOrderWatch(connection)
    commit, rollback = connection.commit, connection.rollback

    def committed():
        watch.ended()
        commit()

    def rolled_back():
        watch.ended()
        rollback()

    connection.commit, connection.rollback = committed, rolled_back
    try:
        with connection.execute_wrapper(watch):
            yield watch
    finally:
        del connection.commit, connection.rollback


def test_the_watch_sees_a_business_row_written_after_the_chain_head():
    # The watch itself: a transaction that records first and writes after is reported.
    from django.db import transaction

    from audit.recorder import record
    from tests import factories

    team = factories.make_team("Watched")
    with lock_order_watched() as watch, transaction.atomic():
        record(action="team.settings_changed", actor=None, team=team, target=team)
        type(team).objects.filter(pk=team.pk).update(name="Watched too")
    assert len(watch.violations) == 1 and "after the chain head" in watch.violations[0]


def test_every_transaction_of_a_whole_copy_takes_the_chain_head_last(flow, cloud):
    """Request, reject, approve, export with its hand-off, accept, a failed import retried, decline,
    a refusal, a link revealed and imported, a re-export, a cancel, a failed export: no business
    row after the head."""
    cloud.set_durations(export_seconds=0.2, import_seconds=0.2)
    src, dst = access(flow.src_member, flow.source), access(flow.dst_member, flow.dest)
    with lock_order_watched() as watch:
        rejected = request_share(flow, cloud, copy_name="walk-reject")
        share_requests.share_reject(access=access(flow.src_approver, flow.source), share=rejected,
                                    digest=rejected.digest, comment="no")
        main = request_share(flow, cloud, copy_name="walk-main", accounts=[flow.gamma, flow.delta],
                             externals=[EXTERNAL])
        approve(flow, main)
        workers.run_jobs(until=lambda: Share.objects.get(pk=main.pk).state == Share.State.READY)
        # A second share of the same image while the export is fresh: it reuses it (export_begin).
        reuse = request_share(flow, cloud, copy_name="walk-reuse")
        approve(flow, reuse)

        gamma_in = Recipient.objects.get(share=main, target_account=flow.gamma)
        delta_in = Recipient.objects.get(share=main, target_account=flow.delta)
        external = Recipient.objects.get(share=main, kind=Recipient.Kind.EXTERNAL)
        cloud.faults.fail_import("walk-main", comment="corrupt")
        import_offers.recipient_accept(access=dst, recipient=gamma_in)
        workers.run_jobs(until=lambda: Recipient.objects.get(pk=gamma_in.pk).state == Recipient.State.FAILED)
        cloud.faults.reset()
        import_offers.recipient_retry(access=dst, recipient=Recipient.objects.get(pk=gamma_in.pk))
        workers.run_jobs(until=lambda: Recipient.objects.get(pk=gamma_in.pk).state == Recipient.State.COMPLETED)
        import_offers.recipient_decline(access=dst, recipient=delta_in, reason="not needed")
        link = external_links.link_reveal(access=src, share=main, recipient=external)
        pasted = external_links.link_import_create(access=dst, account=flow.gamma, url=link.url, image_name="walk-link")
        workers.run_jobs(until=lambda: Recipient.objects.get(pk=pasted.pk).state == Recipient.State.COMPLETED)

        reuse_in = Recipient.objects.get(share=reuse)
        CloudAccount.objects.filter(pk=flow.delta.pk).update(account_id="000011112222")
        with pytest.raises(errors.ShareError):
            import_offers.recipient_accept(access=dst, recipient=reuse_in)  # refused: delta moved
        CloudAccount.objects.filter(pk=flow.delta.pk).update(account_id=flow.delta.account_id)
        Share.objects.filter(pk=reuse.pk).update(state=Share.State.EXPIRED)
        reconcile.share_reexport(access=src, share=Share.objects.get(pk=reuse.pk))
        workers.run_jobs()

        # A request withdrawn, and an export that fails under a share waiting on it.
        share_requests.share_cancel(access=src, share=request_share(flow, cloud, copy_name="walk-cancel"))
        cloud.faults.fail_export(image_id(cloud, "alpha", "alpha-db-base"))
        failed = request_share(flow, cloud, image="alpha-db-base", copy_name="walk-fail")
        approve(flow, failed)
        workers.run_jobs(until=lambda: Share.objects.get(pk=failed.pk).state == Share.State.FAILED)

    assert watch.transactions > 20  # the watch saw them
    assert watch.violations == []
    assert Share.objects.get(pk=main.pk).state == Share.State.COMPLETED
    assert AuditEvent.objects.filter(action="import.refused").count() == 1
    assert verify_chain().ok


def test_a_service_with_nothing_to_lock_after_its_event_still_fails_closed(flow, cloud, monkeypatch):
    """The events of a recorder.atomic block are appended at its end: an audit failure there
    (AUD-11) still rolls the business change back."""
    from audit import recorder

    cloud.set_durations(export_seconds=0.2, import_seconds=1000)
    share, _ = _offered(flow, cloud)
    offered = Recipient.objects.get(share=share, target_account=flow.delta)

    def broken(events):
        raise recorder.AuditError("the trail is unavailable")

    monkeypatch.setattr(recorder, "_append", broken)
    with pytest.raises(recorder.AuditError):
        import_offers.recipient_decline(access=access(flow.dst_member, flow.dest), recipient=offered, reason="no")
    assert Recipient.objects.get(pk=offered.pk).state == Recipient.State.OFFERED
    assert Share.objects.get(pk=share.pk).state == Share.State.IMPORTING
