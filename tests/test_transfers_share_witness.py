"""A share's state follows its recipients' (transfers/services/share_state.py): while one of them
still imports, ending another does not lock the share. The transaction locks a recipient that
still imports instead (its witness, ``SKIP LOCKED``), so whoever ends that one waits for this
commit and then sees it. A release's thousand sweeps ended imports of the same ten shares, and
each locked them and read the states of all their 10,000 recipients.

On PostgreSQL, with services on connections of their own (tests/pg.py): the two transactions
that end a share's last imports at once, and what the share's lock is still taken for.
"""

import contextlib
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from tests import workers
from tests.pg import WAIT, Run, gate, lock_waiters, own_connection, wait_for_waiters
from tests.transfer_world import access, approve, request_share
from transfers import events
from transfers.models import Recipient, Share
from transfers.services import import_offers, polling
from transfers.services.import_ends import import_failed, imports_complete

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]


@pytest.fixture(autouse=True)
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("row locks and SKIP LOCKED are PostgreSQL's; SQLite locks the whole database")


def _importing(flow, cloud):
    """A share to gamma and delta whose two imports run in the cloud, neither due for a look."""
    cloud.set_durations(export_seconds=0.2, import_seconds=1000)
    share = request_share(flow, cloud, accounts=[flow.gamma, flow.delta])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    for recipient in Recipient.objects.filter(share=share):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: all(Recipient.objects.filter(share=share).values_list("image_id", flat=True)))
    workers.flush()
    assert Share.objects.get(pk=share.pk).state == Share.State.IMPORTING
    # Their next looks a minute away: neither is due (test_an_import_due_for_a_look_is_never_the_witness).
    Recipient.objects.filter(share=share).update(next_poll_at=timezone.now() + timedelta(minutes=1))
    return (share, Recipient.objects.get(share=share, target_account=flow.gamma),
            Recipient.objects.get(share=share, target_account=flow.delta))


def _complete(recipient):
    return lambda: imports_complete([(recipient, {}, [])], [])


@contextlib.contextmanager
def _first_paused(monkeypatch):
    """The thread named "first" stops in its transaction after the share's refresh (a sink runs
    there: transfers/events.py) until the block ends or ``go_on`` is set."""
    paused, go_on = threading.Event(), threading.Event()

    def pause_the_first(kind, pks, occasion):
        if threading.current_thread().name == "first":
            paused.set()
            go_on.wait(WAIT)

    monkeypatch.setattr(events, "_sinks", [*events._sinks, pause_the_first])
    try:
        yield paused, go_on
    finally:
        go_on.set()


def test_the_two_transactions_ending_a_shares_last_imports_at_once_end_the_share(flow, cloud, monkeypatch):
    share, gamma, delta = _importing(flow, cloud)
    monitor = own_connection()
    first, second = Run("first", _complete(gamma)), Run("second", lambda: import_failed(delta, "corrupt manifest"))
    try:
        with _first_paused(monkeypatch) as (paused, go_on):
            first.start()
            assert paused.wait(WAIT), first.error
            # The first has ended gamma and, delta still importing, left the share as it is. The
            # failure of delta must not do the same before the first commits: it waits for delta,
            # the first's witness. Without the witness's lock both would leave the share importing.
            second.start()
            deadline = time.monotonic() + WAIT
            while second.is_alive() and not lock_waiters(monitor) and time.monotonic() < deadline:
                second.join(0.02)
        for run in (first, second):
            run.join(WAIT + 5)
        assert not first.is_alive() and not second.is_alive()
    finally:
        monitor.close()

    assert (first.error, second.error) == (None, None)
    assert dict(Recipient.objects.filter(share=share).values_list("pk", "state")) == {
        gamma.pk: "completed", delta.pk: "failed"}
    share.refresh_from_db()
    assert (share.state, share.state_message) == (Share.State.COMPLETED, "Some recipients failed to import.")


def test_ending_an_import_while_another_of_its_share_imports_leaves_the_share_unlocked(flow, cloud):
    share, gamma, delta = _importing(flow, cloud)
    with gate(Share, share.pk):  # another transaction holds the share: this completion must not wait for it
        run = Run("completion", _complete(gamma))
        run.start()
        run.join(WAIT / 2)
        assert not run.is_alive(), "the completion queued on the share's lock"
    assert run.error is None
    assert Recipient.objects.get(pk=gamma.pk).state == Recipient.State.COMPLETED
    assert Share.objects.get(pk=share.pk).state == Share.State.IMPORTING


def test_a_witness_another_transaction_holds_is_skipped_and_the_share_is_locked_instead(flow, cloud):
    share, gamma, delta = _importing(flow, cloud)
    monitor = own_connection()
    # Other transactions hold delta (one may be ending it) and the share: the completion of gamma
    # may not take delta as its witness, nor wait for it; it waits for the share, the old way.
    try:
        with gate(Recipient, delta.pk), gate(Share, share.pk):
            run = Run("completion", _complete(gamma))
            run.start()
            wait_for_waiters(monitor, 1, "the completion")
            (waiting,) = monitor.execute("SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND wait_event_type = 'Lock'").fetchone()
            assert waiting.startswith(f'SELECT "{Share._meta.db_table}"."id"'), waiting[:200]
        run.join(WAIT)
    finally:
        monitor.close()
    assert run.error is None
    assert Share.objects.get(pk=share.pk).state == Share.State.IMPORTING  # delta still imports


def test_an_import_due_for_a_look_is_never_the_witness(flow, cloud, monkeypatch):
    """A look's claim skips a locked row (two sweeps of one account never take the same rows): a
    witness due for a look would wait for the account's next one. In a release the completions of
    one account locked imports of other accounts due that moment, and their sweeps found nothing."""
    share, gamma, delta = _importing(flow, cloud)
    Recipient.objects.filter(pk=delta.pk).update(next_poll_at=timezone.now())  # delta's look is due
    first = Run("first", _complete(gamma))
    with _first_paused(monkeypatch) as (paused, go_on):
        first.start()
        assert paused.wait(WAIT), first.error
        claimed = polling.claim(Recipient, account=flow.delta, states=[Recipient.State.IMPORTING],
                                extra=Q(image_id__gt=""), now=timezone.now())
    first.join(WAIT + 5)
    assert first.error is None
    assert [row.pk for row in claimed] == [delta.pk]
    assert Share.objects.get(pk=share.pk).state == Share.State.IMPORTING
