"""Fault runs: a batch of transfers between teams completes while everything goes wrong at once.

The sandbox throttles 30 % of OAPI calls, fails 5 % with a server error and loses the answer of
another 5 % (the action ran). Two real `manage.py rqworker poll default --with-scheduler`
processes do the work; during the run one of them is killed with SIGKILL in the middle of a step
(with its scheduler) and replaced, Redis is flushed, and on PostgreSQL the database server is
restarted. At the end every share and every recipient has completed, the cloud saw exactly one
export task per export and one CreateImage per copy and per import, and the audit chain verifies.
"""

import contextlib
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import InterfaceError, OperationalError, connection

from accounts.models import Role
from audit.verify import verify_chain
from tests import factories, workers
from tests.transfer_world import access, image_id, sandbox_account
from transfers.models import Export, Recipient, Share
from transfers.services import import_offers
from transfers.services import requests as share_requests

pytestmark = [pytest.mark.fault_run, pytest.mark.django_db(transaction=True)]

# Seconds for the whole batch to complete once approved. A step whose job died inside its calls (the
# worker killed, or PostgreSQL restarted under it) is retried when its lease runs out, never before:
# polling.start_lease_until is about 200 s at these workers' timeouts, and a lost create's settle window
# 120 s; the bound must outlast either, or the run fails on the very mechanism that keeps it exactly-once.
# `make test` runs it beside the rest of the suite on CI's two cores (Makefile, FAULT_DATABASE_URL), where
# the whole test took 119-327 s: twice the old 330 s leaves the waits on the cores room.
RUN_TIMEOUT = 660
SHARES = 54


# --- processes -------------------------------------------------------------------------------------


# Shared by the workers and this process: approvals and acceptances made here set the first
# "next look" of a step (now + grace), which is when the reconciler takes over a lost job.
PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 0.3, "OMIPORTAL_SWEEP_MAX_SECONDS": 1.0,
        "OMIPORTAL_RECONCILE_GRACE_SECONDS": 1.5, "OMIPORTAL_RECONCILE_EVERY_SECONDS": 1.0}


def _worker_env(cloud) -> dict:
    return workers.worker_env(
        cloud, **PACE, OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT=2, OMIPORTAL_OUTSCALE_READ_TIMEOUT=10,
        OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY=0.05, OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY=0.3,
        OMIPORTAL_OUTSCALE_CALLS_PER_SECOND=100, OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS=0,
        OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS=0)


class Workers:
    """The worker subprocesses of one run; their stderr goes to files shown when the run fails."""

    def __init__(self, cloud, log_dir: Path):
        self.env = _worker_env(cloud)
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{len(self.procs) + 1}.log", "wb")  # noqa: SIM115 - kept for the run
        proc = workers.start_worker(self.env, stdout=log)
        log.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.procs:
            kill_tree(proc)

    def logs_tail(self, lines: int = 25) -> str:
        out = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path.name} (last {lines} lines) ---")
            out.extend(text[-lines:])
        return "\n".join(out)


kill_tree = workers.kill_tree


def _current_job(proc: subprocess.Popen) -> str | None:
    """The id of the job this worker process is running, if any (rq's own bookkeeping)."""
    import django_rq
    from rq import Worker

    with contextlib.suppress(Exception):
        for w in Worker.all(connection=django_rq.get_connection("default")):
            if w.pid == proc.pid:
                return w.get_current_job_id()
    return None


# --- the database, which may be restarting ---------------------------------------------------------


def db_retry(read, *, timeout: float = 60.0):
    """Run a read on the test process's connection, reconnecting while the server restarts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except (OperationalError, InterfaceError):
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _pg_cluster() -> tuple[str, str]:
    """The local cluster serving the test database (`pg_lsclusters`, matched on the port), or
    FAULT_RUN_PG_CLUSTER="15/main". Only that cluster is restarted."""
    if os.environ.get("FAULT_RUN_PG_CLUSTER"):
        version, name = os.environ["FAULT_RUN_PG_CLUSTER"].split("/")
        return version, name
    port = str(connection.settings_dict.get("PORT") or 5432)
    listing = subprocess.run(["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return fields[0], fields[1]
    raise AssertionError(f"no local PostgreSQL cluster listens on port {port}:\n{listing}")


def restart_postgres() -> float:
    """Restart the PostgreSQL server under everyone's feet; returns how long it took."""
    version, cluster = _pg_cluster()
    started = time.monotonic()
    connection.close()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"], check=True,
                   timeout=60, capture_output=True)
    connection.close()
    db_retry(lambda: Share.objects.exists())
    return time.monotonic() - started


# --- the world: three teams, five source/recipient accounts in three Regions ------------------------


def _team(name, prefix):
    team = factories.make_team(name)
    people = {}
    for role in (Role.ADMIN, Role.APPROVER, Role.MEMBER):
        people[role.value] = factories.add_member(team, factories.make_user(f"{role.value}@{prefix}.fault.test"),
                                                  role).user
    return team, people


def make_fault_world(cloud):
    platform, p_people = _team("Platform", "platform")
    research, r_people = _team("Research", "research")
    gov, g_people = _team("Sovereign", "sovereign")
    teams = {"platform": (platform, p_people), "research": (research, r_people), "sovereign": (gov, g_people)}
    accounts = {
        "alpha": sandbox_account(cloud, platform, "alpha"),        # eu-west-2
        "delta": sandbox_account(cloud, platform, "delta"),        # us-east-2
        "beta": sandbox_account(cloud, research, "beta"),          # eu-west-2
        "gamma": sandbox_account(cloud, research, "gamma"),        # eu-west-2
        "epsilon": sandbox_account(cloud, gov, "epsilon"),         # cloudgouv-eu-west-1
    }
    owner = {"alpha": "platform", "delta": "platform", "beta": "research", "gamma": "research",
             "epsilon": "sovereign"}
    # (source account, image): owned images export directly, shared and public ones are copied first.
    sources = [
        ("alpha", "alpha-web-2025.01"), ("alpha", "alpha-db-base"), ("alpha", "Ubuntu-24.04-2025.01.15-0"),
        ("delta", "delta-api-2.3"), ("delta", "Debian-12-2025.01.15-0"),
        ("beta", "beta-app-1.0"), ("beta", "alpha-db-base"),
        ("gamma", "gamma-ci-runner"),
        ("epsilon", "epsilon-secure-base"),
    ]
    return teams, accounts, owner, sources


def request_batch(cloud, teams, accounts, owner, sources, count):
    """`count` share requests between teams (every one needs an approval), distinct copy names."""
    shares = []
    for i in range(count):
        src_name, image = sources[i % len(sources)]
        src_team_key = owner[src_name]
        others = [name for name in accounts if owner[name] != src_team_key]
        # One or two recipients in other teams, rotating through Regions.
        first = others[i % len(others)]
        recipients = [accounts[first]]
        if i % 3 == 0:
            second = others[(i + 1) % len(others)]
            if second != first:
                recipients.append(accounts[second])
        team, people = teams[src_team_key]
        shares.append(share_requests.share_request(
            access=access(people["member"], team), source_account=accounts[src_name],
            image_id=image_id(cloud, src_name, image), accounts=recipients, externals=[],
            copy_name=f"fault-copy-{i:03d}", description="fault run", reason="fault run",
            licence_confirmed=True))
    return shares


def approve_all(teams, shares):
    for share in shares:
        team, people = next(t for t in teams.values() if t[0].pk == share.team_id)
        share_requests.share_approve(access=access(people["approver"], team), share=share, digest=share.digest,
                                     comment="fault run")


def accept_offered(teams) -> int:
    """Every offered recipient accepted by a member of its team (the inbox, in bulk)."""
    by_team = {t.pk: (t, people) for t, people in teams.values()}
    accepted = 0
    for recipient in Recipient.objects.filter(state=Recipient.State.OFFERED, kind=Recipient.Kind.TEAM):
        team, people = by_team[recipient.team_id]
        with contextlib.suppress(Exception):  # a concurrent change or a restarting database: next round
            import_offers.recipient_accept(access=access(people["member"], team), recipient=recipient)
            accepted += 1
    return accepted


# --- reports ---------------------------------------------------------------------------------------


def stuck_report() -> str:
    lines = []
    for share in Share.objects.exclude(state=Share.State.COMPLETED).select_related("export", "source_account"):
        export = share.export
        lines.append(f"share {share.copy_name} from {share.source_account.label}: {share.state} "
                     f"{share.state_message!r}; export "
                     + (f"{export.state} {export.state_message!r} next_poll_at={export.next_poll_at}"
                        if export else "none"))
    for r in Recipient.objects.exclude(state=Recipient.State.COMPLETED).select_related("share", "target_account"):
        lines.append(f"recipient {r.share.copy_name} -> {r.target_account.label}: {r.state} {r.state_message!r} "
                     f"image_id={r.image_id!r} next_poll_at={r.next_poll_at}")
    return "\n".join(lines) or "(nothing stuck)"


def progress() -> dict:
    return dict(Counter(Recipient.objects.values_list("state", flat=True)))


def _wait(predicate, timeout, what, report=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        if db_retry(predicate):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{report()}")
        time.sleep(0.2)


# --- the run ---------------------------------------------------------------------------------------


def test_a_batch_of_transfers_completes_through_throttling_lost_answers_killed_workers_and_restarts(
        cloud, tmp_path, settings):
    for name, value in PACE.items():
        setattr(settings, name, value)
    workers.flush()
    cloud.set_durations(export_seconds=3.0, import_seconds=2.0, copy_seconds=1.0)
    teams, accounts, owner, sources = make_fault_world(cloud)
    # Requests validate against the live cloud from this process: made before the faults start.
    shares = request_batch(cloud, teams, accounts, owner, sources, SHARES)
    assert len(shares) >= 50
    cloud.faults.configure(throttle_rate=0.3, error_rate=0.05, lost_response_rate=0.05, latency=0.02)

    pool = Workers(cloud, tmp_path)
    events: list[str] = []
    started = time.monotonic()

    def elapsed() -> str:
        return f"{time.monotonic() - started:5.1f}s"

    def report() -> str:
        return (f"events: {events}\nrecipients: {db_retry(progress)}\n{db_retry(stuck_report)}\n"
                f"{pool.logs_tail()}")

    try:
        first, _second = pool.start(), pool.start()
        approve_all(teams, shares)
        events.append(f"{elapsed()} approved {len(shares)} shares")

        # (b) Kill a worker in the middle of a step: it is running a job (not the reconciler).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = _current_job(first)
            if job and not job.startswith("reconcile"):
                break
            time.sleep(0.02)
        else:
            job = None
        kill_tree(first)
        events.append(f"{elapsed()} SIGKILLed worker 1 (tree) while running {job or 'an unknown step'}")
        pool.start()
        events.append(f"{elapsed()} started worker 3")

        # (c) Flush Redis once imports are under way (some transfers mid-import, others mid-export).
        _wait(lambda: accept_offered(teams) >= 0 and Recipient.objects.filter(
            state=Recipient.State.IMPORTING).exists(), 90, "a first import to start", report)
        workers.flush()
        events.append(f"{elapsed()} FLUSHDB on Redis with recipients {db_retry(progress)}")

        # (d) Restart the database server while transfers are still in flight (PostgreSQL only).
        if connection.vendor == "postgresql":
            _wait(lambda: accept_offered(teams) >= 0 and Recipient.objects.filter(
                state=Recipient.State.COMPLETED).count() >= 5, 90, "a few imports to complete", report)
            before = db_retry(progress)
            took = restart_postgres()
            events.append(f"{elapsed()} restarted PostgreSQL ({took:.1f}s) with recipients {before}")

        # Keep accepting what becomes offered until everything has completed.
        last = [0.0]

        def all_done() -> bool:
            accept_offered(teams)
            if time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                events.append(f"{elapsed()} recipients {progress()}, exports "
                              f"{dict(Counter(Export.objects.values_list('state', flat=True)))}")
            return not Share.objects.exclude(state=Share.State.COMPLETED).exists() and \
                not Recipient.objects.exclude(state=Recipient.State.COMPLETED).exists()

        _wait(all_done, RUN_TIMEOUT, "every share and recipient to complete", report)
        events.append(f"{elapsed()} all completed")
        print("\n".join(["fault run:", *events]))  # shown with -s, and with the output of a failure
        assert pool.alive(), f"no worker left alive\n{report()}"
    finally:
        cloud.faults.reset()
        pool.stop_all()
        connection.close()

    _check_the_cloud_saw_each_create_once(cloud, accounts)
    verification = db_retry(verify_chain)
    assert verification.ok, f"the audit chain does not verify after the fault run: {verification}"
    workers.flush()


def _check_the_cloud_saw_each_create_once(cloud, accounts):
    by_id = {a.account_id: name for name, a in accounts.items()}
    exports = list(Export.objects.select_related("account"))
    recipients = list(Recipient.objects.select_related("share", "target_account"))
    assert {e.state for e in exports} == {Export.State.COMPLETED}
    problems = []
    for account_id, name in by_id.items():
        counters = cloud.counters(account_id)
        own_exports = [e for e in exports if e.account.account_id == account_id]
        copies = [e for e in own_exports if e.copy_image_id]
        imports_in = [r for r in recipients if r.target_account.account_id == account_id]
        if counters.get("CreateImageExportTask", 0) != len(own_exports):
            problems.append(f"{name}: {counters.get('CreateImageExportTask', 0)} CreateImageExportTask "
                            f"for {len(own_exports)} export(s)")
        if counters.get("CreateImage", 0) != len(copies) + len(imports_in):
            problems.append(f"{name}: {counters.get('CreateImage', 0)} CreateImage for {len(copies)} copy-first "
                            f"copies + {len(imports_in)} imports")
        # Tell copies from imports by name in the sandbox's world: one OMI per deterministic name.
        with cloud.world.lock:
            names = Counter(i.name for i in cloud.world.images.values() if i.account_id == account_id)
            tasks = Counter(t.prefix.split("/")[1] for t in cloud.world.tasks.values() if t.account_id == account_id)
        # Copies are deleted once their export completed: count the creates that succeeded instead.
        made = cloud.created(account_id).get("CreateImage", {})
        for export in copies:
            n = made.get(f"omiportal-copy-{export.public_id}", 0)
            if n != 1:
                problems.append(f"{name}: {n} copy-first OMI(s) for export {export.public_id}")
        for export in own_exports:
            n = tasks.get(str(export.public_id), 0)
            if n != 1:
                problems.append(f"{name}: {n} export task(s) under the prefix of export {export.public_id}")
        for r in imports_in:
            n = names.get(r.share.copy_name, 0)
            if n != 1:
                problems.append(f"{name}: {n} imported OMI(s) named {r.share.copy_name}")
    assert not problems, "the cloud saw duplicate or missing creates:\n" + "\n".join(problems)
