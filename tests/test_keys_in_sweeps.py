"""Keys opened in a sweep (accounts/keys.py): each account's once, and a release to many accounts
not queued behind its own audit trail.

- A hand-off opens the keys of every account it will call before its threads start, and records
  those uses in one append: a release to hundreds of accounts otherwise had its threads record one
  `credential.used` each, every one waiting for the audit chain's lock in turn (bench_transfers
  --workload export-fleet: 54-64 % of the workers' samples waited there).
- Threads wait only for the opening of the account they need, never for another account's.
"""

import contextlib
import contextvars
import threading
import time

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import keys
from audit.models import AuditChainHead, AuditEvent
from audit.verify import verify_chain
from tests import workers
from tests.pg import own_connection
from tests.transfer_world import approve, request_share, sandbox_account
from transfers.models import Export, Recipient
from transfers.services import exports

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 10.0


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite locks the whole database")


def _task_ended(cloud, task_id):
    with cloud.world.lock:
        task = cloud.world.tasks[task_id]
        task.started = time.monotonic() - task.duration


def test_a_hand_off_into_several_accounts_records_each_accounts_keys_once_in_one_append(flow, cloud):
    # One share of alpha's image to delta (us-east-2) and epsilon (cloudgouv-eu-west-1), both
    # auto-accepted: its export's end hands off two imports into two accounts.
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    epsilon = sandbox_account(cloud, flow.dest, "epsilon")
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    share = request_share(flow, cloud, accounts=[flow.delta, epsilon])
    approve(flow, share)
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").exists())
    export = Export.objects.get()
    _task_ended(cloud, export.task_id)
    Export.objects.filter(pk=export.pk).update(next_poll_at=timezone.now())
    workers.flush()
    before = AuditEvent.objects.filter(action="credential.used").count()

    with CaptureQueriesContext(connection) as queries:
        exports.export_sweep(account_id=flow.alpha.public_id)

    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"importing"}
    assert all(Recipient.objects.filter(share=share).values_list("image_id", flat=True))
    used = AuditEvent.objects.filter(action="credential.used").order_by("seq")[before:]
    assert sorted((e.details["account_id"], e.details["purpose"]) for e in used) == sorted([
        (flow.alpha.account_id, "watch exports"), (flow.delta.account_id, "start import"),
        (epsilon.account_id, "start import")])
    assert {e.details["scope"] for e in used} == {"this sweep's calls"}
    # Recorded by the sweep itself: alpha's for its look, then the two recipients' together in
    # one statement, before its threads called OUTSCALE. Without the opening ahead, each thread
    # recorded its account's use on its own connection, and the sweep's connection only alpha's.
    appends = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith("INSERT") and "credential.used" in q["sql"]]
    assert [a.count("credential.used") for a in appends] == [1, 2], appends
    assert verify_chain().ok


@contextlib.contextmanager
def _chain_head_held():
    """Hold the audit chain head's row lock from a connection of the test's own: every append
    waits until the block ends."""
    AuditChainHead.objects.get_or_create(pk=AuditChainHead.SINGLETON_ID)
    gate = own_connection()
    try:
        gate.execute("BEGIN")
        gate.execute(f'SELECT 1 FROM "{AuditChainHead._meta.db_table}" WHERE id = %s FOR UPDATE',
                     [AuditChainHead.SINGLETON_ID])
        yield
    finally:
        gate.execute("ROLLBACK")
        gate.close()


def _waiting_on_locks(monitor) -> int:
    return monitor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()[0]


@pytest.mark.needs_postgres
def test_a_thread_opening_one_accounts_keys_holds_up_no_other_account(flow, cloud, postgres):
    # In one sweep's scope: delta's keys already opened. A thread opening epsilon's waits in its
    # audit append (the chain head held); a thread needing delta's again must not wait for it.
    # With one lock for the whole scope, it waited for epsilon's append: a release to hundreds of
    # accounts queued every thread behind each account's opening in turn.
    epsilon = sandbox_account(cloud, flow.dest, "epsilon")
    monitor, results = own_connection(), {}

    def in_scope(name, account):
        def run():
            try:
                results[name] = keys.credentials_for(account, purpose="start import")
            finally:
                connections.close_all()
        return threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)

    with keys.opened_once():
        delta_keys = keys.credentials_for(flow.delta, purpose="start import")
        try:
            with _chain_head_held():
                opening = in_scope("epsilon", epsilon)
                opening.start()
                deadline = time.monotonic() + WAIT
                while _waiting_on_locks(monitor) < 1:
                    assert time.monotonic() < deadline, "the opening of epsilon's keys never waited for the chain"
                    time.sleep(0.02)
                again = in_scope("delta", flow.delta)
                again.start()
                again.join(timeout=WAIT)
                assert not again.is_alive(), "delta's keys waited for epsilon's opening"
                assert results["delta"] is delta_keys
                assert "epsilon" not in results  # still in its append
            opening.join(timeout=WAIT)
        finally:
            monitor.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
            monitor.close()
    assert results["epsilon"].access_key == cloud.account("epsilon")["access_key"]
    assert verify_chain().ok
