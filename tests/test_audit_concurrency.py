"""Many writers, one chain (AUD-10), and the flush plugin that lets transactional tests coexist with triggers.

These tests commit for real, on separate connections, so they are transactional;
tests/fixtures_audit.py lifts the triggers for the flush that follows each one.
"""

import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction

from audit import triggers
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import record
from audit.verify import verify_chain

THREADS, PER_THREAD = 20, 5


def _append_many(barrier, errors, worker):
    try:
        barrier.wait(timeout=30)
        for index in range(PER_THREAD):
            # Each append is its own transaction on this thread's own connection.
            record(action="share.approved", actor=None, details={"worker": worker, "index": index})
    except Exception as exc:  # reported by the main thread
        errors.append(repr(exc))
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_the_chain_gapless_and_valid():
    barrier, errors = threading.Barrier(THREADS), []
    workers = [threading.Thread(target=_append_many, args=(barrier, errors, n)) for n in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "an append is stuck (deadlock?)"
    assert errors == []
    total = THREADS * PER_THREAD
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, total + 1))
    assert sorted(AuditEvent.objects.values_list("details__worker", "details__index")) == sorted(
        (worker, index) for worker in range(THREADS) for index in range(PER_THREAD))
    result = verify_chain()
    assert (result.ok, result.count) == (True, total), result
    assert AuditChainHead.objects.get().seq == total


def _assert_fresh_armed_chain():
    # Whatever ran before (the concurrency test, or the other of these two), the
    # flush emptied the trail and the plugin put back a genesis head and the triggers.
    assert triggers.installed(connection) == triggers.names(connection)
    assert AuditChainHead.objects.values_list("seq", "hash").get() == (0, "0" * 64)
    assert record(action="share.approved", actor=None).seq == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent._base_manager.filter(seq=1).update(action="share.rejected")


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_starts_with_a_fresh_armed_chain():
    _assert_fresh_armed_chain()


def test_a_test_using_transactional_db_also_starts_with_a_fresh_armed_chain(transactional_db):
    _assert_fresh_armed_chain()


@pytest.mark.django_db(transaction=True)
def test_and_so_does_the_next_one():
    _assert_fresh_armed_chain()
