"""Hosts whose clocks differ by a few seconds: leases and due times hold (omiportal/clock.py).

Real `manage.py rqworker` processes run under libfaketime (LD_PRELOAD, Debian's `faketime`
package; `.ci/run` installs it), their own clock 8 s ahead of or behind this machine's, on the
test database, Redis and sandbox. The leases are made shorter than the skew (a start lease here
is about 6.5 s; at the shipped settings it is about 400 s, and a skew of a few seconds would only
move it by as much), so a worker that reads its own clock takes a lease it must not:

- a worker 8 s ahead finds a start this process holds (its lease runs 6.5 s more) and leaves it;
  the same worker with ``OMIPORTAL_CLOCK_FROM_DATABASE=false`` takes it and calls the cloud (the
  skew is real, and the test can fail);
- a worker 8 s behind starts an import, and every time it writes (the next look, the audit
  event) is the database's, so no other host sees its lease or look due 8 s early.
"""

import glob
import time
from datetime import timedelta

import django_rq
import pytest
from django.db import connection
from django.utils import timezone
from rq import Worker
from rq.serializers import JSONSerializer

from audit.models import AuditEvent
from omiportal import clock
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers.models import Recipient, Share
from transfers.services import import_offers, import_starts, polling

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]

DELTA = "444455556666"
SKEW = 8  # seconds; more than the start lease below, as a few seconds is more than a lease at some settings
# Shared by this process (which claims the start) and the workers: a start lease of about 6.5 s.
LEASE = {"OMIPORTAL_SWEEP_CONCURRENCY": 1, "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 100,
         "OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT": 0.5, "OMIPORTAL_OUTSCALE_READ_TIMEOUT": 1.5,
         "OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS": 1, "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY": 0.05,
         "OMIPORTAL_SWEEP_BUDGET_SECONDS": 0.5, "OMIPORTAL_SWEEP_MIN_SECONDS": 0.05,
         "OMIPORTAL_SWEEP_MAX_SECONDS": 0.2, "OMIPORTAL_RECONCILE_GRACE_SECONDS": 1.0}
NO_FAKETIME = "libfaketime is not installed (Debian: apt-get install faketime; .ci/run installs it)"


def libfaketime() -> str:
    found = sorted(path for pattern in ("/usr/lib/*/faketime", "/usr/lib/faketime", "/usr/local/lib/faketime")
                   for path in glob.glob(f"{pattern}/libfaketimeMT.so.1"))
    assert found, NO_FAKETIME
    return found[0]


def skewed_env(cloud, seconds: int, **overrides) -> dict:
    """A worker's environment whose clock reads ``seconds`` off this machine's (its monotonic clock
    moves by the same constant, which changes no interval; bench/hosts.py says why it is not left alone)."""
    return workers.worker_env(cloud, **LEASE, **overrides, LD_PRELOAD=libfaketime(), FAKETIME=f"{seconds:+d}s",
                              OMIPORTAL_LOG_LEVEL="WARNING")


def start(env, log_path):
    with open(log_path, "wb") as log:
        proc = workers.start_worker(env, stdout=log)
    deadline = time.monotonic() + 60
    while not any(w.pid == proc.pid for w in Worker.all(connection=django_rq.get_connection("default"))):
        assert proc.poll() is None, f"the worker stopped:\n{log_path.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, "the worker did not register within 60 s"
        time.sleep(0.2)
    return proc


def run_start_job(recipient, *, timeout=20.0):
    """Queue the recipient's start as the portal does, and wait for a worker to have run it."""
    queue = django_rq.get_queue("default", serializer=JSONSerializer)
    job = queue.enqueue("transfers.jobs.import_start_job", str(recipient.public_id),
                        job_id=f"import-start-{recipient.public_id}-skew-{time.monotonic_ns()}", result_ttl=60)
    deadline = time.monotonic() + timeout
    while job.get_status(refresh=True) not in ("finished", "failed"):
        assert time.monotonic() < deadline, f"the start job did not run within {timeout}s"
        time.sleep(0.05)
    return job


@pytest.fixture
def skew(flow, cloud, settings):
    if connection.vendor != "postgresql":
        pytest.skip("hosts share PostgreSQL, whose clock they keep; SQLite is one machine's (CI runs PostgreSQL)")
    for name, value in LEASE.items():
        setattr(settings, name, value)
    assert clock.installed(), "the test process keeps the database's clock too"
    return flow


def _accepted(flow, cloud, copy_name):
    share = request_share(flow, cloud, copy_name=copy_name)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    recipient = share.recipients.get()
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.flush()  # its start is run below, by the worker under test...
    # ...and only then: not due before, so no reconciler of the worker's enqueues it meanwhile.
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now() + timedelta(hours=1))
    return Recipient.objects.select_related(*import_starts._STARTING).get(pk=recipient.pk)


def _db_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_a_worker_whose_clock_runs_ahead_leaves_a_held_start_alone_and_takes_it_without_the_database_clock(
        skew, cloud, tmp_path):
    held, control = _accepted(skew, cloud, "held-copy"), _accepted(skew, cloud, "control-copy")
    assert held.next_poll_at > timezone.now() + timedelta(minutes=30)  # nobody's to start but the test's job
    call_seconds = polling.start_call_seconds(calls=import_starts.IMPORT_START_CALLS)
    assert call_seconds < SKEW, "the lease must be shorter than the skew for the test to mean anything"

    ahead = start(skewed_env(cloud, +SKEW), tmp_path / "ahead.log")
    try:
        # This process (a host on time) claims the start: its lease runs call_seconds more.
        assert import_starts._claim([held])
        leased_until = Recipient.objects.get(pk=held.pk).next_poll_at
        job = run_start_job(held)
        ran_at = _db_now()
    finally:
        workers.kill_tree(ahead)
    assert ran_at < leased_until - timedelta(seconds=polling._start_horizon()), \
        f"the machine was too slow: the job ran after the lease ran out ({ran_at} vs {leased_until})"
    row = Recipient.objects.get(pk=held.pk)
    assert job.get_status() == "finished"
    assert (row.start_tries, row.next_poll_at, row.image_id) == (1, leased_until, ""), \
        "a worker 8 s ahead took a start whose lease had not run out"
    assert not cloud.counters(DELTA).get("CreateImage")  # (a ReadImages may be the inventory's refresh)

    # The same worker reading its own clock: the lease looks run out, and it starts the copy.
    local = start(skewed_env(cloud, +SKEW, OMIPORTAL_CLOCK_FROM_DATABASE="false"), tmp_path / "local.log")
    try:
        assert import_starts._claim([control])
        leased_until = Recipient.objects.get(pk=control.pk).next_poll_at
        run_start_job(control)
        ran_at = _db_now()
    finally:
        workers.kill_tree(local)
    assert ran_at < leased_until - timedelta(seconds=polling._start_horizon()), "the machine was too slow"
    row = Recipient.objects.get(pk=control.pk)
    assert row.start_tries == 2 and row.image_id, "without the database clock the skewed worker should take it"
    # (Its reconciler may also start the first copy, whose lease has run out by now.)
    assert cloud.created(DELTA).get("CreateImage", {}).get("control-copy") == 1


def test_a_worker_whose_clock_runs_behind_writes_the_database_time(skew, cloud, tmp_path):
    recipient = _accepted(skew, cloud, "behind-copy")
    behind = start(skewed_env(cloud, -SKEW), tmp_path / "behind.log")
    try:
        before = _db_now()
        run_start_job(recipient)
        after = _db_now()
    finally:
        workers.kill_tree(behind)
    row = Recipient.objects.get(pk=recipient.pk)
    assert row.state == Recipient.State.IMPORTING and row.image_id and row.start_tries == 1
    # Its first look: the minimum interval (or the copy's own first look) after the database's now,
    # never SKEW seconds before it (every other host would see it overdue at once).
    assert before <= row.next_poll_at <= after + timedelta(seconds=5), (before, row.next_poll_at, after)
    started = AuditEvent.objects.filter(action="import.started").order_by("-seq").first()
    assert started is not None and before - timedelta(seconds=1) <= started.occurred_at <= after + timedelta(seconds=1)
    assert abs((timezone.now() - _db_now()).total_seconds()) < 1.0
