"""`manage.py bench_load`: the pages under load, on loopback, for a bounded time.

1. Refuses a database holding anything but earlier benchmark data (unless told `yes`), migrates it.
2. Starts the OUTSCALE sandbox in this process (fast exports and imports) and the portal under
   gunicorn exactly as the README's "Production" recommends (``GUNICORN``; an override is printed).
3. Seeds teams, people and cloud accounts (the sandbox's seeded accounts), then requests and
   approves the transfers through the services, as people would, with no worker running yet.
4. Baseline: one person, nobody else on the machine, visits every page kind in turn (Locust,
   `bench/locustfile.py`, in a process of its own).
5. Load: N RQ worker processes start on the approved transfers and U people arrive, each signing
   in and clicking what a person of its role does with a few seconds' thought between clicks.
6. After: the workers stop and one person is alone again, on the data the run left (a share's
   timeline and the audit list have grown), which tells the load's part from the data's.
7. Stops everything and reports, per page kind, p50/p95/p99 alone and under load, the ratio of the
   p95s (goal: at most 2× the p95 before the run), the ratio to the p95 after it, errors (goal:
   none) and the transfers completed; writes ``<out>/load.json`` and ``load.png`` (`bench/people.py`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psutil
import requests
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection, connections

import outscale
from accounts import services
from accounts.models import CloudAccount, Membership, Role, Team
from accounts.models import User as PortalUser
from accounts.selectors import TeamAccess
from bench import in_force, people
from bench.users import Persona
from omiportal.apps import configure_cloud
from sandbox.server import Sandbox
from transfers.models import Recipient, Share
from transfers.scheduling import BACKGROUND, get_queue
from transfers.services import requests as share_requests

BASE_DIR = Path(settings.BASE_DIR) if hasattr(settings, "BASE_DIR") else Path(__file__).resolve().parents[1]
BENCH_DOMAIN = "bench.test"
TEAM_PREFIX = "Bench "
PASSWORD = "bench-load-password"  # noqa: S105 - throwaway people in a throwaway database
SANDBOX_ACCOUNTS = ("alpha", "beta", "gamma", "delta", "epsilon")
NEVER_EXPORT = {"alpha-legacy-broken"}  # its export always fails, by design of the sandbox
# The web command the README recommends (section "Production"), flags after the bind address;
# tests/test_bench_load.py holds the two equal. Sync workers, 2 × cores + 1: a request goes to
# a process that is free (only an idle sync worker accepts), where a gthread process took every
# connection it was offered and its requests then shared one core (the GIL) while the other core
# could be idle; five processes keep both cores busy while some wait on PostgreSQL. The timeout
# outlasts a page that waits on the cloud (a 30 s read, retried) or streams a large export.
GUNICORN = ("--worker-class", "sync", "--workers", "5", "--timeout", "120")
# The README's worker setting on a host shared with the web tier: transfers wait minutes on the
# cloud anyway, people wait on the page, so the workers yield the cores (OMIPORTAL_WORKER_NICE:
# their nice and, in a session of their own as here, their session's autogroup).
WORKER_NICE = 10

# The tuned set (`--tuned`, what the load benchmark ran with until 2026-12-06), one pace for every
# process: the first "next look" of a step is set by whoever enqueues it. By default it runs at the
# settings that ship: the workers then look as often as they would in production, where a faster
# pace would only add their CPU to what the people feel.
PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 1.0, "OMIPORTAL_SWEEP_MAX_SECONDS": 5.0,
        "OMIPORTAL_RECONCILE_GRACE_SECONDS": 15.0, "OMIPORTAL_RECONCILE_EVERY_SECONDS": 5.0}
# Off in every form: a checkpoint or a verification of the whole (growing) bench trail inside a
# worker is not part of a transfer, and would land in the middle of the figures.
QUIET_AUDIT = {"OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
# What `--tuned` sets besides PACE, the settings a deployment would not have.
TUNED = {"OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 50}
# The bench process requests and approves the transfers before the clock starts; at the shipped
# pace, thousands of requests (each reads its source) would take longer than what is measured.
REQUEST_PACE = 50
# Why, printed with the settings in force (issue 14: a benchmark runs at the shipped defaults or
# says what it changes and why).
REASONS = {
    "OMIPORTAL_SWEEP_MIN_SECONDS": "--tuned: 5-second sandbox exports and imports are seen within a second or two "
                                   "(a real export takes minutes to hours)",
    "OMIPORTAL_SWEEP_MAX_SECONDS": "--tuned: the backed-off look stays a few seconds apart",
    "OMIPORTAL_RECONCILE_GRACE_SECONDS": "--tuned: lost steps come back within a bounded run",
    "OMIPORTAL_RECONCILE_EVERY_SECONDS": "--tuned: the reconciler ticks several times within a bounded run",
    "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": "--tuned: the sandbox on loopback is not OUTSCALE's API: the pace "
                                           "would measure itself, not the portal",
    "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": "no checkpoint job in the workers: not what is measured",
    "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": "no verification of the whole trail in the workers: not what is measured",
}
BENCH_PROCESS_REASONS = {
    "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": "the bench process only requests and approves the transfers (each "
                                           "request reads its source) before the clock starts; the workers, "
                                           "which are measured, keep their own pace"}


class Refused(Exception):
    """The database is not a throwaway one."""


@dataclass
class Options:
    users: int = 100
    transfers: int = 1000
    duration: float = 240.0  # seconds of load, the people's arrival included
    think: tuple[float, float] = (2.0, 5.0)  # seconds between one person's clicks, under load
    baseline_seconds: float = 60.0
    baseline_think: tuple[float, float] = (0.1, 0.2)  # one person alone: short pauses, ~30 samples a kind for a p95
    spawn_rate: float = 2.0  # people arriving per second (each sign-in hashes a password: CPU-heavy)
    workers: int = 2
    worker_nice: int = WORKER_NICE
    # The sandbox stands in for OUTSCALE, which is not on the portal's host in production: with a
    # nice above 0 its threads take only the CPU the web tier and the workers leave.
    sandbox_nice: int = 0
    web_class: str | None = None  # None: the README's (GUNICORN)
    web_workers: int | None = None
    web_threads: int | None = None
    web_keep_alive: int | None = None
    export_seconds: float = 5.0
    import_seconds: float = 5.0
    # Run the request-time jobs (pre-flight checks, mails) before the baseline, as a deployment
    # has by the time a request is approved; False: they wait for the load phase (until 2026-12-06).
    background_first: bool = True
    tuned: bool = False  # PACE and TUNED instead of the shipped settings
    out_dir: Path = BASE_DIR / "bench-results"
    name: str = "load.json"
    yes: bool = False
    quiet: bool = False


# --- the database ---------------------------------------------------------------------------------


def check_throwaway_database(*, yes: bool) -> None:
    """Refuse a database with anything the benchmark did not create, unless `yes`."""
    if "accounts_team" not in connection.introspection.table_names():
        return  # empty: migrate creates everything
    foreign_teams = Team.objects.exclude(name__startswith=TEAM_PREFIX).count()
    foreign_users = PortalUser.objects.exclude(email__endswith=f"@{BENCH_DOMAIN}").count()
    if (foreign_teams or foreign_users) and not yes:
        db = connection.settings_dict
        raise Refused(
            f"The database {db.get('NAME')!r} ({connection.vendor}) holds {foreign_teams} team(s) and "
            f"{foreign_users} user(s) the benchmark did not create. Point DATABASE_URL at a throwaway database "
            "(e.g. postgres://postgres@127.0.0.1:5432/bench or sqlite:////tmp/bench.sqlite3), or pass --yes.")


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(endpoints: dict) -> dict:
    """This process's configuration, made explicit for the worker and web processes (each
    benchmark adds the settings it changes)."""
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "omiportal.settings", "OMIPORTAL_ENV_FILE": "",
        "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "OMIPORTAL_CREDENTIAL_KEYS": settings.OMIPORTAL_CREDENTIAL_KEYS,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SECURE_HSTS_SECONDS": "0", "OMIPORTAL_SECURE_COOKIES": "false", "OMIPORTAL_STATIC_MANIFEST": "false",
        "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL,
        "OMIPORTAL_OUTSCALE_ENDPOINTS": json.dumps(endpoints), "OMIPORTAL_EMAIL_URL": "dummymail://",
        # One machine, no mail: the production start-up refusals (omiportal/checks.py) do not apply.
        "OMIPORTAL_ALLOW_LOCAL_SERVICES": "true",
        "OMIPORTAL_LOG_LEVEL": "WARNING",
    }
    return env


class Processes:
    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.procs = env, log_dir, []
        self.stopped: set[int] = set()  # by the benchmark: not died

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, cwd=BASE_DIR, start_new_session=True,  # noqa: S603
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append((name, proc))
        return proc

    def run_to_end(self, name: str, argv: list[str], env: dict | None = None) -> int:
        """Start a process that ends by itself (a burst worker), wait for it: its exit code. It is
        not counted among the processes that died."""
        proc = self.start(name, argv, env)
        proc.wait()
        self.stopped.add(proc.pid)
        return proc.returncode

    def dead(self) -> list[str]:
        return [f"{name} (exit {proc.returncode})" for name, proc in self.procs
                if proc.pid not in self.stopped and proc.poll() is not None]

    def stop(self, prefix: str = "") -> None:
        """Stop the processes whose name starts with ``prefix`` (all of them by default)."""
        chosen = [(name, proc) for name, proc in self.procs if name.startswith(prefix)]
        self.stopped |= {proc.pid for _, proc in chosen}
        for _, proc in chosen:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in chosen:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def use_sandbox(endpoints: dict, pace: dict) -> None:
    """Point this process (it requests and approves) at the sandbox, with the workers' pace and
    no mail, as `child_env` does for the processes it starts."""
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = endpoints
    for name, value in pace.items():
        setattr(settings, name, value)
    settings.EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
    configure_cloud()  # set directly, not through override_settings: no signal tells the cloud layer
    outscale.clear_clients()
    outscale.warm_up()


def wait_until_serving(base_url: str, procs: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.dead():
            raise RuntimeError(f"a process stopped while starting: {procs.dead()} (logs in {procs.log_dir})")
        with contextlib.suppress(requests.RequestException):
            if requests.get(base_url + "/login/", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the portal did not answer on {base_url} within {timeout}s (logs in {procs.log_dir})")


# --- seeding --------------------------------------------------------------------------------------


@dataclass
class Seeded:
    teams: list
    staff: dict  # team pk -> {"approver": user, "requester": user}
    accounts: dict  # team pk -> [CloudAccount, CloudAccount]
    personas: list[Persona]


def seed(sandbox, *, tag: str, users: int) -> Seeded:
    n_teams = max(2, math.ceil(users / 5))
    password_hash = make_password(PASSWORD)  # one hash for everyone: seeding stays fast

    def person(email: str) -> PortalUser:
        user = PortalUser(email=email, password=password_hash)
        user.save()
        return user

    teams, staff, accounts, personas = [], {}, {}, []
    for k in range(n_teams):
        team = Team.objects.create(name=f"{TEAM_PREFIX}{tag} team {k + 1:02d}")
        teams.append(team)
        who = {}
        for role, key in ((Role.ADMIN, "admin"), (Role.APPROVER, "approver"), (Role.MEMBER, "requester")):
            user = person(f"{key}.{k + 1}.{tag}@{BENCH_DOMAIN}")
            Membership.objects.create(team=team, user=user, role=role)
            who[key] = user
        staff[team.pk] = who
        accounts[team.pk] = []
        for name in (SANDBOX_ACCOUNTS[k % 5], SANDBOX_ACCOUNTS[(k + 2) % 5]):
            accounts[team.pk].append(add_account(team, who["admin"], name, sandbox.account(name)))
    for j in range(users):
        team = teams[j % n_teams]
        role = Role.AUDITOR if j % 5 == 4 else Role.MEMBER
        email = f"user{j + 1:03d}.{tag}@{BENCH_DOMAIN}"
        Membership.objects.create(team=team, user=person(email), role=role)
        personas.append(Persona(email=email, password=PASSWORD, team_id=str(team.public_id), role=role.value))
    return Seeded(teams=teams, staff=staff, accounts=accounts, personas=personas)


def add_account(team: Team, admin: PortalUser, label: str, entry: dict) -> CloudAccount:
    """The sandbox account ``entry`` (as ``Sandbox.account`` gives it) added to ``team`` by its
    admin through the service, as an admin would: its keys are sealed there and the step is audited."""
    access = TeamAccess(user=admin, team=team, membership=Membership.objects.get(team=team, user=admin))
    account = services.cloud_account_create(
        access=access, label=label, region=entry["region"], access_key=entry["access_key"],
        secret_key=entry["secret_key"], export_bucket=entry["bucket"], accepts_incoming_shares=True)
    # The sandbox's keys are known good: skip one ReadAccounts per seeded account.
    CloudAccount.objects.filter(pk=account.pk).update(validation_status="valid", account_id=entry["account_id"])
    account.refresh_from_db()
    return account


def source_images(sandbox) -> dict[str, list[dict]]:
    """Each seeded account's images a transfer may take: its own (but the one whose export always
    fails) and one it does not own (shared or public: copied first)."""
    images = {}
    for name in SANDBOX_ACCOUNTS:
        entry = sandbox.account(name)
        owned = [i for i in entry["images"] if i["kind"] == "owned" and i["name"] not in NEVER_EXPORT]
        others = [i for i in entry["images"] if i["kind"] != "owned"]  # shared or public: copied first
        images[name] = owned + others[:1]
    return images


def plan_any(seeded: Seeded, images: dict, i: int) -> tuple:
    """Transfer ``i``: (team, source account, image, target account), the target an account of
    another team, in any Region."""
    teams = seeded.teams
    team = teams[i % len(teams)]
    source = seeded.accounts[team.pk][(i // len(teams)) % 2]
    image = images[source.label][(i // (2 * len(teams))) % len(images[source.label])]
    other = teams[(i + 1 + (i // len(teams)) % (len(teams) - 1)) % len(teams)]
    if other.pk == team.pk:
        other = teams[(i + 1) % len(teams)]
    choices = [a for a in seeded.accounts[other.pk] if a.label != source.label] or seeded.accounts[other.pk]
    return team, source, image, choices[i % len(choices)]


def team_access(user, team) -> TeamAccess:
    return TeamAccess(user=user, team=team, membership=Membership.objects.get(user=user, team=team))


def _side_by_side(func, items) -> list:
    """``func`` over ``items`` eight at a time (each request and approval checks with the cloud:
    network-bound), each thread closing its database connections."""
    def run_in_thread(item):
        try:
            return func(item)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(run_in_thread, items))


def approve(seeded: Seeded, share: Share) -> Share:
    """The share approved by its team's approver, on the digest it now has."""
    approver = seeded.staff[share.team_id]["approver"]
    share = Share.objects.select_related("team").get(pk=share.pk)
    return share_requests.share_approve(access=team_access(approver, share.team), share=share, digest=share.digest,
                                        comment="load benchmark")


def approve_all(seeded: Seeded, shares: list) -> list:
    return _side_by_side(lambda share: approve(seeded, share), shares)


def request_and_approve(sandbox, seeded: Seeded, *, tag: str, transfers: int, log, plan=plan_any,
                        approved: bool = True) -> list:
    """The transfers, requested by each team's requester and approved by its approver (services;
    with ``approved`` false, left waiting for ``approve_all``); ``plan(seeded, images, i)`` picks
    transfer i's team, source account, image and target."""
    images = source_images(sandbox)
    started = time.monotonic()
    done = []

    def one(i: int):
        team, source, image, target = plan(seeded, images, i)
        share = share_requests.share_request(
            access=team_access(seeded.staff[team.pk]["requester"], team), source_account=source,
            image_id=image["image_id"], accounts=[target], externals=[], copy_name=f"bench-{tag}-{i:04d}",
            description="load benchmark", reason="load benchmark", licence_confirmed=True)
        if approved:
            share_requests.share_approve(access=team_access(seeded.staff[team.pk]["approver"], team), share=share,
                                         digest=share.digest, comment="load benchmark")
        done.append(i)
        if len(done) % 100 == 0:
            log(f"  {len(done)} transfers requested{' and approved' if approved else ''} "
                f"({time.monotonic() - started:.0f}s)")
        return share

    return _side_by_side(one, range(transfers))


# --- the run --------------------------------------------------------------------------------------


def drain_background(procs: Processes, options: Options, *, log) -> dict:
    """Run the jobs the requests and approvals left on the `background` queue (each request's
    pre-flight checks, the mails about requests and approvals) with one worker in burst mode, and
    wait for it. In use, a request's checks and mails run while it waits for its approver, minutes
    to days before the approval; here the two come seconds apart with no worker running, so
    without this they would all wait for the load phase and land in it at once. The transfers'
    own steps (`poll`, `default`) stay queued for the load phase."""
    queued = get_queue(BACKGROUND).count
    started = time.monotonic()
    procs.run_to_end("background-first", [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", BACKGROUND,
                                          "--burst"], env={"OMIPORTAL_WORKER_NICE": str(options.worker_nice)})
    drained = {"jobs": queued, "seconds": round(time.monotonic() - started, 1), "left": get_queue(BACKGROUND).count}
    log(f"Background jobs of the requests and approvals run before the baseline: {drained['jobs']} in "
        f"{drained['seconds']}s ({drained['left']} left)")
    return drained


def transfer_counts(share_ids) -> dict:
    shares = Counter(Share.objects.filter(pk__in=share_ids).values_list("state", flat=True))
    recipients = Counter(Recipient.objects.filter(share_id__in=share_ids).values_list("state", flat=True))
    return {"shares": dict(shares), "recipients": dict(recipients)}


def gunicorn_argv(options: Options, port: int) -> tuple[list[str], list[str]]:
    """The web command: the README's (``GUNICORN``), bound to a loopback port, with what differs
    said (an option given on the command line)."""
    flags = list(GUNICORN)
    differs = []
    for flag, value in (("--worker-class", options.web_class), ("--workers", options.web_workers),
                        ("--threads", options.web_threads), ("--keep-alive", options.web_keep_alive)):
        if value is None:
            continue
        if flag not in flags:
            differs.append(f"{flag} {value} (given on the command line; the README's leaves gunicorn's default)")
            flags += [flag, str(value)]
        elif str(value) != flags[flags.index(flag) + 1]:
            differs.append(f"{flag} {value} instead of {flags[flags.index(flag) + 1]} (given on the command line)")
            flags[flags.index(flag) + 1] = str(value)
    argv = [sys.executable, "-m", "gunicorn", "omiportal.wsgi", "--bind", f"127.0.0.1:{port}", *flags]
    return argv, differs


def renice_other_threads(nice: int) -> None:
    """Every thread of this process but the calling one at ``nice`` (Linux: nice is per thread, and
    a thread started later inherits its starter's, so the sandbox's request threads follow). The
    calling thread, and Locust's process started from it, keep theirs."""
    me = threading.get_native_id()
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) != me:
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def run(options: Options, *, log=print) -> dict:
    check_throwaway_database(yes=options.yes)
    call_command("migrate", interactive=False, verbosity=0)
    tag = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(options.out_dir)
    log_dir = out_dir / f"load-{tag}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    sandbox = Sandbox(host="127.0.0.1", base_port=0, export_seconds=options.export_seconds,
                      import_seconds=options.import_seconds, copy_seconds=options.import_seconds / 3,
                      lockout_after=0).start()
    endpoints = sandbox.endpoints()
    changed = {**TUNED, **PACE} if options.tuned else {}
    use_sandbox(endpoints, {"OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": REQUEST_PACE, **changed})

    env = {**child_env(endpoints), **{name: str(value) for name, value in {**changed, **QUIET_AUDIT}.items()}}
    names = in_force.TRANSFER_SETTINGS
    defaults = in_force.shipped(names, env)
    settings_rows = in_force.compare(in_force.worker_values(names, env), defaults, REASONS,
                                     where="workers and web processes")
    settings_rows += in_force.compare(in_force.process_values(names), defaults, {**REASONS, **BENCH_PROCESS_REASONS},
                                      where="bench process")
    log(in_force.block(settings_rows))
    procs = Processes(env, log_dir)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    web_argv, web_differs = gunicorn_argv(options, port)
    log("Web: " + " ".join(["gunicorn", *web_argv[3:]]) + (
        "; differs from the README: " + "; ".join(web_differs) if web_differs else " (the README's command)"))
    wall_started = time.monotonic()
    result: dict = {}
    try:
        log(f"Sandbox on {sandbox.control_url}; database {connection.vendor} {connection.settings_dict['NAME']}; "
            f"Redis {settings.REDIS_URL}")
        procs.start("web", web_argv)
        seeded = seed(sandbox, tag=tag, users=options.users)
        log(f"Seeded {len(seeded.teams)} teams, {options.users} simulated people (tag {tag})")
        wait_until_serving(base_url, procs)

        setup_started = time.monotonic()
        # Requested and approved with no worker running: their jobs wait in Redis until the load phase.
        shares = request_and_approve(sandbox, seeded, tag=tag, transfers=options.transfers, log=log)
        share_ids = [s.pk for s in shares]
        by_team: dict[int, list[str]] = {}
        for s in shares:
            by_team.setdefault(s.team_id, []).append(str(s.public_id))
        team_pk = {str(t.public_id): t.pk for t in seeded.teams}
        for persona in seeded.personas:
            persona.share_ids = by_team.get(team_pk[persona.team_id], [])[:50]
        setup_seconds = time.monotonic() - setup_started
        log(f"{len(shares)} transfers requested and approved in {setup_seconds:.1f}s (no worker running yet)")
        background = drain_background(procs, options, log=log) if options.background_first else None

        # 1. One person, nobody else on the machine: no worker, no other visitor.
        groups = {"web": [p.pid for name, p in procs.procs if name == "web"], "bench process (sandbox)": [os.getpid()]}
        baseline_samples, cpu_baseline = alone(options, "baseline", base_url=base_url, personas=seeded.personas,
                                               log_dir=log_dir, groups=groups, log=log)

        # 2. The workers start on the approved transfers, and the people arrive.
        if options.sandbox_nice:
            renice_other_threads(options.sandbox_nice)
        for n in range(options.workers):
            procs.start(f"worker-{n + 1}", [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", "poll",
                                           "default", "--with-scheduler"],
                        env={"OMIPORTAL_WORKER_NICE": str(options.worker_nice)})
        load = people.Phase("load", users=options.users, seconds=options.duration, think=options.think,
                            spawn_rate=options.spawn_rate)
        log(f"Load: {load.users} people, {load.think[0]:g}-{load.think[1]:g} s between clicks, "
            f"{options.workers} RQ workers on {len(shares)} transfers, for {load.seconds:.0f}s")
        groups["workers"] = [p.pid for name, p in procs.procs if name.startswith("worker-")]
        cpu_started = people.cpu_seconds(groups)
        proc, path = people.start(load, base_url=base_url, people=seeded.personas, work_dir=log_dir)
        run_started = time.monotonic()
        all_done_at = None
        next_report = run_started + 10
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                next_report += 15
                counts = transfer_counts(share_ids)
                done = counts["shares"].get("completed", 0)
                if all_done_at is None and done == len(shares):
                    all_done_at = time.monotonic() - run_started
                log(f"  t={time.monotonic() - run_started:5.1f}s shares={counts['shares']}")
                if procs.dead():
                    log(f"  !! stopped: {procs.dead()}")
            if time.monotonic() - run_started > load.seconds + 90:
                break
        arrival_samples, load_samples = people.finish(proc, path, timeout=60)
        run_seconds = time.monotonic() - run_started
        cpu_load = people.cpu_share(cpu_started, people.cpu_seconds(groups), run_seconds)
        counts = transfer_counts(share_ids)
        completed = counts["shares"].get("completed", 0)
        if all_done_at is None and completed == len(shares):
            all_done_at = run_seconds
        # 3. One person alone again, on the data the run left: how much of a page's time under load
        # was the load, and how much the data it shows (a share's timeline, the audit list grow).
        procs.stop("worker-")
        after_samples, cpu_after = alone(options, "after", base_url=base_url, personas=seeded.personas,
                                         log_dir=log_dir, groups={k: v for k, v in groups.items() if k != "workers"},
                                         log=log)
        before, under, after = (people.summarize(s) for s in (baseline_samples, load_samples, after_samples))
        comparison = people.compare(before, under, after)
        pages = [r for r in comparison if r["page"]]
        within_after = people.within_after(pages)
        result = {
            "tag": tag,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
            "gunicorn": web_argv[web_argv.index("omiportal.wsgi") + 3:], "gunicorn_differs": web_differs,
            "database": connection.vendor, "redis": "embedded" if settings.REDIS_URL.startswith("unix:") else "server",
            "baseline": before, "load": under, "after": after, "comparison": comparison,
            # While the people arrived (sign-ins all at once): not steady load, kept apart.
            "arrival": people.summarize(arrival_samples),
            "arrival_errors": sum(1 for sample in arrival_samples if sample[3]),
            "requests": len(load_samples), "errors": sum(e["errors"] for e in under.values()),
            "baseline_requests": len(baseline_samples),
            "baseline_errors": sum(e["errors"] for e in before.values()),
            "after_errors": sum(e["errors"] for e in after.values()),
            "requests_per_second": round(len(load_samples) / run_seconds, 1) if run_seconds else 0,
            "accepted_in_browser": under.get("accept", {}).get("statuses", {}).get("302", 0),
            "goals_met": {"p95 within 2x alone, every page kind": all(r["met"] for r in pages),
                          "zero errors": not any(r["errors"] for r in comparison)
                          and not any(sample[3] for sample in arrival_samples + after_samples)},
            # Not the goal (that is against the pages before the run): the load's part alone.
            "within_2x_of_alone_after": within_after[0], "not_measured_after": within_after[1],
            "transfers": len(shares), "transfers_completed": completed, "transfer_states": counts,
            "all_completed_after_seconds": round(all_done_at, 1) if all_done_at is not None else None,
            "setup_seconds": round(setup_seconds, 1), "run_seconds": round(run_seconds, 1),
            "processes_died": procs.dead(), "logs": str(log_dir), "settings": settings_rows,
            # Cores used on average in each phase (the machine has psutil.cpu_count() of them).
            "cores": psutil.cpu_count(), "cpu_baseline": cpu_baseline, "cpu_load": cpu_load,
            "cpu_after": cpu_after,
            "worker_nice": options.worker_nice, "sandbox_nice": options.sandbox_nice,
            "background_first": background,
        }
    finally:
        procs.stop()
        sandbox.stop()
        result["wall_seconds"] = round(time.monotonic() - wall_started, 1)
    path = out_dir / options.name
    path.write_text(json.dumps(result, indent=2))
    result["path"] = str(path)
    if result.get("comparison"):
        result["chart"] = str(people.draw(result, path.with_suffix(".png")))
    return result


def alone(options: Options, name: str, *, base_url: str, personas: list, log_dir: Path, groups: dict,
          log) -> tuple[list, dict]:
    """One person, nobody else on the machine (no worker, no other visitor), every page kind in
    turn: the samples and the cores each group used."""
    phase = people.Phase(name, users=1, seconds=options.baseline_seconds, think=options.baseline_think,
                          spawn_rate=1)
    log(f"{name.capitalize()}: one person, every page kind in turn, {phase.think[0]:g}-{phase.think[1]:g} s "
        f"between clicks, for {phase.seconds:.0f}s")
    cpu_started, started = people.cpu_seconds(groups), time.monotonic()
    proc, path = people.start(phase, base_url=base_url, people=personas, work_dir=log_dir)
    _, samples = people.finish(proc, path, timeout=phase.seconds + 60)
    return samples, people.cpu_share(cpu_started, people.cpu_seconds(groups), time.monotonic() - started)


def table(result: dict) -> str:
    lines = [
        people.table(result["comparison"]),
        "",
        f"under load: {result['requests']} requests ({result['requests_per_second']}/s), errors {result['errors']}, "
        f"accepted in the browser {result['accepted_in_browser']}; alone: {result['baseline_requests']} requests, "
        f"errors {result['baseline_errors']}; while the people arrived (not counted above): "
        f"{sum(e['count'] for e in result['arrival'].values())} requests, errors {result['arrival_errors']}",
        "goals: " + "; ".join(f"{goal}: {'met' if met else 'NOT met'}" for goal, met in result["goals_met"].items()),
        "within 2x of the p95 alone after the run (the load's part, not the goal): "
        + ("yes" if result["within_2x_of_alone_after"] else "no")
        + (f" (not measured after: {', '.join(result['not_measured_after'])})"
           if result.get("not_measured_after") else ""),
        f"transfers completed {result['transfers_completed']}/{result['transfers']}"
        + (f" (all after {result['all_completed_after_seconds']}s)" if result["all_completed_after_seconds"]
           is not None else f"; states {result['transfer_states']['shares']}"),
        "cores used on average (of " + str(result["cores"]) + "), alone: "
        + ", ".join(f"{k} {v}" for k, v in result["cpu_baseline"].items()) + "; under load: "
        + ", ".join(f"{k} {v}" for k, v in result["cpu_load"].items()) + "; alone after: "
        + ", ".join(f"{k} {v}" for k, v in result["cpu_after"].items()),
        f"web: gunicorn {' '.join(result['gunicorn'])}; workers at OMIPORTAL_WORKER_NICE={result['worker_nice']}"
        f", sandbox at nice {result.get('sandbox_nice', 0)}"
        + (f" (differs from the README: {'; '.join(differs)})" if (differs := _differs_from_readme(result))
           else " (the README's)"),
        f"setup {result['setup_seconds']}s, load {result['run_seconds']}s, wall {result['wall_seconds']}s"
        + (f"; processes that died: {result['processes_died']}" if result["processes_died"] else ""),
    ]
    return "\n".join(lines)


def _differs_from_readme(result: dict) -> list[str]:
    differs = list(result["gunicorn_differs"])
    if result["worker_nice"] != WORKER_NICE:
        differs.append(f"OMIPORTAL_WORKER_NICE={result['worker_nice']}, the README's is {WORKER_NICE}")
    return differs
