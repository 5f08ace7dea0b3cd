"""`manage.py bench_faults`: the production-defaults fault run (issue 14's proof).

Transfers run with the settings that ship (pace, sweeps, reconciler and its grace, retries, read
timeout: nothing of the portal's is tuned; the settings in force are printed, each one that
differs from the shipped default with its reason) against a cloud that misbehaves:

1. Refuses a database holding anything but benchmark data (unless told `yes`), migrates it.
2. Starts the OUTSCALE sandbox in this process and N `rqworker poll default --with-scheduler`
   processes on this database and Redis. Seeds a source team (alpha in eu-west-2, delta in
   us-east-2), a main recipient team (beta) and an other team (gamma, epsilon), the recipient teams
   accepting automatically. Some shares are of one OMI (owned ones, and public ones copied first:
   one export serves them all), the others each of an OMI of its own (an export each).
3. Requests every transfer (the cloud answering cleanly), then turns the faults on (latency,
   throttling, lost answers, and creates the cloud holds for longer than the reconciler's grace
   before it applies and answers them) and approves them all. `main` imports go into the one
   recipient account, `others` over the other accounts.
4. Waits until every recipient is final, then until every held create has landed, stops the
   workers and checks: every transfer completed; the cloud's successful creates (sandbox
   `created()`): one `CreateImage` per recipient and per copy-first, one `CreateImageExportTask`
   per export; nothing FAILED; no image named the portal's way (the run's copy names,
   `omiportal-copy-…`) and no export task under `omiportal/` that no row points to; the audit
   chain verifies. Prints figures (wall time, OAPI calls per transfer) and writes JSON.

`--small` is the same run at CI size (a couple of minutes on two cores), with the same settings.
`--hosts 2 --skew 5 --kill` spreads the workers over two "hosts", the second with a skewed clock,
and kills one mid-run (bench/hosts.py); `--hosts-small` is that run's CI form.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection, connections

import outscale
from accounts import services
from accounts.models import CloudAccount, Membership, Role, Team
from accounts.models import User as PortalUser
from accounts.selectors import TeamAccess
from audit.verify import verify_chain
from bench import hosts as multi
from bench import in_force, load, measure, resources
from bench import transfers as xfer
from omiportal.apps import configure_cloud
from sandbox import seed
from sandbox.server import Sandbox
from sandbox.world import Image, Snapshot
from transfers.models import Export, Recipient, Share
from transfers.services import requests as share_requests

SOURCE_ACCOUNTS = ("alpha", "delta")  # eu-west-2, us-east-2: imports cross a Region or not
MAIN_ACCOUNT = "beta"
OTHER_ACCOUNTS = ("gamma", "epsilon")
# Shares of one OMI: owned ones exported as they are, public ones copied into the account first.
SHARED_IMAGES = (("alpha", "alpha-web-2025.01"), ("alpha", "Ubuntu-24.04-2025.01.15-0"),
                 ("delta", "delta-api-2.3"), ("delta", "Debian-12-2025.01.15-0"))
HELD_ACTIONS = ("CreateImage", "CreateImageExportTask")
COPY_PREFIX = "omiportal-copy-"
EXPORT_PREFIX = "omiportal/"
# Setting up the requests is not what is measured: this process lists the source account's
# images for each one, which at the shipped pace (5 calls a second) takes minutes for 1,200
# (load.REQUEST_PACE).
REASONS = {
    "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": (
        "this process only, while it requests the transfers (each lists the source's OMIs); set back "
        "before the approvals, and the workers keep the shipped pace"),
}


@dataclass
class Options:
    main: int = 1000  # imports auto-accepted into the one recipient account
    others: int = 200  # spread over the other accounts
    distinct: float = 0.2  # the share of transfers whose OMI is their own (an export each)
    workers: int = 2
    latency: float = 0.1
    throttle: float = 0.3
    lost: float = 0.05
    errors: float = 0.0
    held: float = 0.05  # the share of creates the cloud holds before applying them
    hold_seconds: float | None = None  # default: the reconciler's grace in force plus 15 s
    export_seconds: float = 20.0
    import_seconds: float = 10.0
    copy_seconds: float = 5.0
    timeout: float = 1800.0
    out_dir: Path = load.BASE_DIR / "bench-results"
    logs_dir: Path = load.BASE_DIR / "bench-results"  # the workers' logs go to faults-<tag>-logs here
    yes: bool = False
    small: bool = False
    seed: int = 14
    # More than one host (bench/hosts.py): process groups with state directories and host ids of
    # their own, every host after the first with its clock `skew` seconds off (ahead, behind, ...),
    # sharing PostgreSQL, Redis and a checkpoint bucket; `workers` are spread over them.
    hosts: int = 1
    skew: float = 0.0
    kill: bool = False  # SIGKILL a worker of host 1 mid-job once transfers complete (or at 30 s), start another
    checkpoint_every: int = 60  # seconds between audit checkpoints with more than one host
    tuned: dict = field(default_factory=dict)  # settings changed for workers and this process...
    tuned_reason: str = ""  # ...and why


# The CI form: sizes and the cloud's own durations; the portal's settings stay as shipped. A tenth
# of the creates are held (5 % of forty-odd creates would be two). A held create outlasts the read
# timeout (30 s), and its next attempt waits OMIPORTAL_CREATE_SETTLE_SECONDS (120 s): a transfer
# whose copy, export and import are all held takes about 3 x 150 s, hence the timeout.
SMALL = {"main": 24, "others": 6, "held": 0.1, "export_seconds": 4.0, "import_seconds": 3.0, "copy_seconds": 2.0,
         "timeout": 600.0}


def small(**overrides) -> Options:
    return replace(Options(small=True, **SMALL), **overrides)


# The multi-host CI form (tests/test_hosts.py, under a minute): two hosts, the second 5 s ahead, a
# worker killed. A killed worker's rows come back when their leases run out, which at the shipped
# settings takes minutes; so sweeps, grace and timeouts are short here (a start's lease about 21 s),
# and the skew is larger than the grace (1.5 s) and than a sweep's lease (2.5 s): a host reading its
# own clock would take leases others hold. Three attempts per call, as shipped: with one, eight
# put-offs in a row at 30 % throttling (about 1 in 200 starts) would fail a transfer now and then.
# Held creates are left to the one-host run (they wait out the settle window).
HOSTS_SMALL = {"main": 10, "others": 4, "distinct": 0.3, "workers": 2, "hosts": 2, "skew": 5.0, "kill": True,
               "latency": 0.02, "held": 0.0, "export_seconds": 3.0, "import_seconds": 2.0, "copy_seconds": 1.0,
               "timeout": 120.0, "checkpoint_every": 3,
               "tuned": {"OMIPORTAL_SWEEP_MIN_SECONDS": 0.3, "OMIPORTAL_SWEEP_MAX_SECONDS": 1.0,
                         "OMIPORTAL_RECONCILE_GRACE_SECONDS": 1.5, "OMIPORTAL_RECONCILE_EVERY_SECONDS": 1.0,
                         "OMIPORTAL_SWEEP_CONCURRENCY": 4, "OMIPORTAL_SWEEP_BUDGET_SECONDS": 1.0,
                         "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 100, "OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT": 0.5,
                         "OMIPORTAL_OUTSCALE_READ_TIMEOUT": 1.5, "OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY": 0.05,
                         "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY": 0.3, "OMIPORTAL_CREATE_SETTLE_SECONDS": 3.0},
               "tuned_reason": "the multi-host CI form: a killed worker's leases run out in seconds, not minutes "
                               "(the skew of 5 s stays larger than the grace and the sweep lease)"}


def hosts_small(**overrides) -> Options:
    return replace(Options(small=True, **HOSTS_SMALL), **overrides)


# --- the world ------------------------------------------------------------------------------------


@dataclass
class Seeded:
    source_team: object
    people: dict  # requester, approver
    accounts: dict  # sandbox name -> CloudAccount


def _seed(sandbox, *, tag: str) -> Seeded:
    password = make_password(None)
    layout = (("source", SOURCE_ACCOUNTS, False), ("main", (MAIN_ACCOUNT,), True), ("other", OTHER_ACCOUNTS, True))
    accounts, source_team, people = {}, None, {}
    for key, names, auto in layout:
        team = Team.objects.create(name=f"{load.TEAM_PREFIX}{tag} faults {key}", auto_accept_incoming=auto)
        who = {}
        for role, label in ((Role.ADMIN, "admin"), (Role.APPROVER, "approver"), (Role.MEMBER, "requester")):
            user = PortalUser.objects.create(email=f"{label}.{key}.{tag}@{load.BENCH_DOMAIN}", password=password)
            who[label] = Membership.objects.create(team=team, user=user, role=role)
        for name in names:
            entry = sandbox.account(name)
            admin = who["admin"]
            account = services.cloud_account_create(
                access=TeamAccess(user=admin.user, team=team, membership=admin), label=name, region=entry["region"],
                access_key=entry["access_key"], secret_key=entry["secret_key"], export_bucket=entry["bucket"],
                accepts_incoming_shares=True)
            # The sandbox's keys are known good: no ReadAccounts per account.
            CloudAccount.objects.filter(pk=account.pk).update(validation_status="valid",
                                                              account_id=entry["account_id"])
            account.refresh_from_db()
            accounts[name] = account
        if key == "source":
            source_team, people = team, who
    return Seeded(source_team=source_team, people=people, accounts=accounts)


def _own_images(sandbox, account_name: str, names: list[str]) -> list[str]:
    """Owned OMIs added to a source account, one per transfer that has an OMI of its own."""
    entry = sandbox.account(account_name)
    ids = []
    with sandbox.world.lock:
        for name in names:
            image = Image(image_id=seed.image_id_for(name), account_id=entry["account_id"], region=entry["region"],
                          name=name, description="fault run source", created=seed.SEED_DATE,
                          snapshots=[Snapshot(seed.snapshot_id_for(name), "/dev/sda1", 10)],
                          file_location=f"{entry['account_id']}/{name}")
            sandbox.world.images[image.image_id] = image
            ids.append(image.image_id)
    return ids


def plan(sandbox, o: Options, *, tag: str) -> list[dict]:
    """Each transfer: source account, OMI, recipient account, copy name. Deterministic for a seed;
    the main account's imports and the others' are interleaved, as are shared and own OMIs."""
    rng = random.Random(o.seed)
    total = o.main + o.others
    targets = [MAIN_ACCOUNT] * o.main + [OTHER_ACCOUNTS[k % len(OTHER_ACCOUNTS)] for k in range(o.others)]
    rng.shuffle(targets)
    distinct = set(rng.sample(range(total), round(total * o.distinct)))
    by_name = {(a, i["name"]): i["image_id"] for a in SOURCE_ACCOUNTS for i in sandbox.account(a)["images"]}
    own_names = {a: [] for a in SOURCE_ACCOUNTS}
    transfers = []
    for i, target in enumerate(targets):
        if i in distinct:
            source = SOURCE_ACCOUNTS[len(own_names["alpha"]) > len(own_names["delta"])]
            name = f"fault-src-{tag}-{i:04d}"
            own_names[source].append(name)
            transfers.append({"index": i, "source": source, "image_name": name, "target": target})
        else:
            source, name = SHARED_IMAGES[i % len(SHARED_IMAGES)]
            transfers.append({"index": i, "source": source, "image_id": by_name[(source, name)], "target": target})
    own_ids = {a: dict(zip(names, _own_images(sandbox, a, names), strict=True)) for a, names in own_names.items()}
    for t in transfers:
        if "image_name" in t:
            t["image_id"] = own_ids[t["source"]][t["image_name"]]
        t["copy_name"] = f"fault-{tag}-{t['index']:04d}"
    return transfers


def _request_all(seeded: Seeded, transfers: list[dict], log) -> list:
    requester = seeded.people["requester"]
    access = TeamAccess(user=requester.user, team=seeded.source_team, membership=requester)
    done, started = [], time.monotonic()

    def one(t: dict):
        try:
            share = share_requests.share_request(
                access=access, source_account=seeded.accounts[t["source"]], image_id=t["image_id"],
                accounts=[seeded.accounts[t["target"]]], externals=[], copy_name=t["copy_name"],
                description="production-defaults fault run", reason="fault run", licence_confirmed=True)
            done.append(share)
            if len(done) % 200 == 0:
                log(f"  {len(done)} transfers requested ({time.monotonic() - started:.0f}s)")
            return share
        finally:
            connections.close_all()

    # Each request lists the source's OMIs with the cloud: network-bound, so side by side.
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, transfers))


def _approve_all(seeded: Seeded, shares: list, log) -> None:
    approver = seeded.people["approver"]
    access = TeamAccess(user=approver.user, team=seeded.source_team, membership=approver)
    for k, share in enumerate(shares, 1):
        share_requests.share_approve(access=access, share=share, digest=share.digest, comment="fault run")
        if k % 200 == 0:
            log(f"  {k} transfers approved")


# --- watching the held creates --------------------------------------------------------------------


class Holds:
    """Notes when each create the sandbox holds will have landed, so the checks wait for the last
    one: a held create that lands after the transfers ended is exactly what could leave a second
    image behind."""

    def __init__(self, sandbox):
        self.lock = threading.Lock()
        self.count = 0
        self.last_lands_at = 0.0
        self._orig = sandbox.faults.decide
        sandbox.faults.decide = self._decide

    def _decide(self, action, service="oapi"):
        decision = self._orig(action, service)
        if decision.hold:
            with self.lock:
                self.count += 1
                self.last_lands_at = max(self.last_lands_at,
                                         time.monotonic() + decision.latency + decision.hang + decision.hold)
        return decision

    def wait(self, log) -> float:
        with self.lock:
            left = self.last_lands_at - time.monotonic()
        if left > 0:
            log(f"  waiting {left + 1:.0f}s for the last held create to land")
            time.sleep(left + 1)
        return max(0.0, left)


# --- the checks -----------------------------------------------------------------------------------


def _sandbox_ids(seeded: Seeded) -> dict:
    return {account.account_id: name for name, account in seeded.accounts.items()}


def check(sandbox, seeded: Seeded, share_ids: list[int], *, tag: str) -> dict:
    recipients = list(Recipient.objects.filter(share_id__in=share_ids).select_related("share", "target_account"))
    shares = list(Share.objects.filter(pk__in=share_ids))
    exports = list(Export.objects.filter(shares__pk__in=share_ids).distinct().select_related("account"))
    created = {account_id: sandbox.created(account_id) for account_id in _sandbox_ids(seeded)}
    problems: list[str] = []

    # One successful CreateImage per recipient: its copy name, or a retry's " (retry n)" name.
    image_creates = Counter()
    for r in recipients:
        names = created[r.target_account.account_id].get("CreateImage", {})
        base = r.share.copy_name
        n = sum(c for name, c in names.items() if name == base or name.startswith(f"{base} (retry "))
        image_creates[n] += 1
        if n != 1:
            problems.append(f"{n} successful CreateImage for {base} into {r.target_account.label}")
    copy_creates, task_creates = Counter(), Counter()
    copies = [e for e in exports if e.copy_image_id or e.state == Export.State.COPYING]
    for e in copies:
        n = created[e.account.account_id].get("CreateImage", {}).get(f"{COPY_PREFIX}{e.public_id}", 0)
        copy_creates[n] += 1
        if n != 1:
            problems.append(f"{n} successful copy-first CreateImage for export {e.public_id}")
    for e in exports:
        n = created[e.account.account_id].get("CreateImageExportTask", {}).get(e.prefix, 0)
        task_creates[n] += 1
        if n != 1:
            problems.append(f"{n} successful CreateImageExportTask under {e.prefix}")

    # What the cloud holds under the portal's names that no row points to.
    pointed = set(Recipient.objects.exclude(image_id="").values_list("image_id", flat=True))
    pointed |= set(Export.objects.exclude(copy_image_id="").values_list("copy_image_id", flat=True))
    tasks_pointed = set(Export.objects.exclude(task_id="").values_list("task_id", flat=True))
    accounts = _sandbox_ids(seeded)
    with sandbox.world.lock:
        orphan_images = [f"{i.image_id} {i.name!r} ({i.state}) in {accounts[i.account_id]}"
                         for i in sandbox.world.images.values()
                         if i.account_id in accounts and i.image_id not in pointed
                         and (i.name.startswith(f"fault-{tag}-") or i.name.startswith(COPY_PREFIX))]
        orphan_tasks = [f"{t.task_id} {t.prefix} ({t.state}) in {accounts[t.account_id]}"
                        for t in sandbox.world.tasks.values()
                        if t.account_id in accounts and t.task_id not in tasks_pointed
                        and t.prefix.startswith(EXPORT_PREFIX)]
    verification = verify_chain()
    states = Counter(r.state for r in recipients)
    failed = {"recipients": states.get(Recipient.State.FAILED, 0),
              "shares": sum(s.state == Share.State.FAILED for s in shares),
              "exports": sum(e.state == Export.State.FAILED for e in exports)}
    checks = {
        "all_completed": {"met": states == Counter({Recipient.State.COMPLETED: len(share_ids)})
                          and all(s.state == Share.State.COMPLETED for s in shares),
                          "value": f"{states.get(Recipient.State.COMPLETED, 0)}/{len(share_ids)}"},
        "one_create_image_per_recipient": {"met": set(image_creates) == {1}, "value": _dist(image_creates)},
        "one_copy_per_copy_first_export": {"met": set(copy_creates) <= {1}, "value": _dist(copy_creates)},
        "one_export_task_per_export": {"met": set(task_creates) <= {1}, "value": _dist(task_creates)},
        "zero_failed": {"met": not any(failed.values()), "value": failed},
        "zero_untracked_images": {"met": not orphan_images and not orphan_tasks,
                                  "value": {"images": len(orphan_images), "export_tasks": len(orphan_tasks)}},
        "chain_verifies": {"met": bool(verification.ok), "value": verification.describe()},
    }
    return {
        "checks": checks, "ok": all(c["met"] for c in checks.values()),
        "recipient_states": dict(states), "share_states": dict(Counter(s.state for s in shares)),
        "export_states": dict(Counter(e.state for e in exports)), "exports": len(exports),
        "copy_first_exports": len(copies),
        "failures": sorted({f"{r.share.copy_name}: {r.state_message}" for r in recipients
                            if r.state == Recipient.State.FAILED}
                           | {f"export {e.public_id}: {e.state_message}" for e in exports
                              if e.state == Export.State.FAILED})[:20],
        "stuck": [f"{r.share.copy_name}: {r.state} {r.state_message!r} image={r.image_id!r}" for r in recipients
                  if r.state not in (Recipient.State.COMPLETED, Recipient.State.FAILED)][:20],
        # Where an unfinished export stood: its attempts and its next look (a lease, a put-off).
        "stuck_exports": [f"export {e.public_id}: {e.state} attempts={e.attempts} "
                          f"next_poll_at={e.next_poll_at and e.next_poll_at.isoformat(timespec='seconds')} "
                          f"{e.state_message!r}" for e in exports if e.state in Export.IN_FLIGHT][:20],
        "problems": problems[:50], "untracked_images": orphan_images[:50], "untracked_export_tasks": orphan_tasks[:50],
    }


def _dist(counter: Counter) -> dict:
    """{successful creates: how many rows had that many}, e.g. {"1": 1000} or {"1": 998, "2": 2}."""
    return {str(k): v for k, v in sorted(counter.items())}


# --- the run --------------------------------------------------------------------------------------


class _ProcessSettings:
    """Settings of this process changed for the run and put back after it (a test runs it too)."""

    def __init__(self):
        self.saved: dict = {}

    def set(self, **values) -> None:
        for name, value in values.items():
            self.saved.setdefault(name, getattr(settings, name))
            setattr(settings, name, value)
        self._changed()

    def put_back(self, name: str) -> None:
        setattr(settings, name, self.saved.pop(name))
        self._changed()

    def restore(self) -> None:
        for name, value in self.saved.items():
            setattr(settings, name, value)
        self._changed()

    @staticmethod
    def _changed() -> None:
        configure_cloud()  # set directly, not through override_settings: no signal tells the cloud layer
        outscale.clear_clients()


def _worker_env(endpoints: dict, log_dir: Path) -> dict:
    env = load.child_env(endpoints)
    # A directory of the run's own: a checkpoint an earlier run left would describe another chain.
    env["OMIPORTAL_AUDIT_CHECKPOINT_DIR"] = str(log_dir / "audit-checkpoints")
    return env


def run(o: Options, *, log=print) -> dict:
    load.check_throwaway_database(yes=o.yes)
    call_command("migrate", interactive=False, verbosity=0)
    if o.hosts > 1:
        multi.check_no_earlier_checkpoints()
    tag = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(o.out_dir)
    log_dir = Path(o.logs_dir) / f"faults-{tag}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(host="127.0.0.1", base_port=0, export_seconds=o.export_seconds,
                      import_seconds=o.import_seconds, copy_seconds=o.copy_seconds, lockout_after=0).start()
    sandbox.faults.configure(latency=o.latency)
    # No OMI quota: a thousand copies into one account pass the sandbox's default of 500, which it
    # refuses as OUTSCALE would (a deployment asks OUTSCALE for more); the run checks that nothing
    # fails, and a full quota is a failure the portal reports, not a fault it recovers from.
    for account in sandbox.describe()["accounts"]:
        sandbox.set_quota(account["account_id"], "image_limit", 0)
    holds = Holds(sandbox)
    endpoints = sandbox.endpoints()
    env = _worker_env(endpoints, log_dir)
    shared = {}
    if o.hosts > 1:  # one checkpoint store for every host, with a key of the run's own
        shared = multi.checkpoint_settings(sandbox, tag=tag, key=multi.signing_key(), every=o.checkpoint_every)
    env.update({**shared, **{name: str(value) for name, value in o.tuned.items()}})
    offsets = multi.skews(o.hosts, o.skew)
    envs = ([multi.host_env(env, log_dir, host=h, tag=tag, skew=offsets[h - 1]) for h in range(1, o.hosts + 1)]
            if o.hosts > 1 else [env])
    mine = _ProcessSettings()
    procs = multi.HostProcesses(envs, log_dir)
    per_host = multi.workers_per_host(o.workers, o.hosts)
    worker_argv = [sys.executable, str(load.BASE_DIR / "manage.py"), "rqworker", "poll", "default", "--with-scheduler"]
    result: dict = {"benchmark": "bench_faults", "tag": tag, "database": connection.vendor,
                    "cores": psutil.cpu_count(), "small": o.small, "hosts": o.hosts, "skews": offsets,
                    "workers_per_host": per_host, "events": []}
    wall = time.monotonic()
    try:
        mine.set(OMIPORTAL_OUTSCALE_ENDPOINTS=endpoints, EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
                 **o.tuned, **{k: v for k, v in shared.items() if k != "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS"})
        for h in range(1, o.hosts + 1):
            for k in range(per_host):
                procs.start_on(h, f"host-{h}-worker-{k + 1}" if o.hosts > 1 else f"worker-{k + 1}", worker_argv)
        names = in_force.TRANSFER_SETTINGS
        defaults = in_force.shipped(names, env)
        reasons = {**REASONS, **dict.fromkeys(o.tuned, o.tuned_reason)}
        if shared:
            reasons["OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS"] = (
                "checkpoints written during the run, by whichever host's worker takes the job, to the shared bucket")
        rows = in_force.compare(in_force.worker_values(names, env), defaults, reasons, where="workers")
        rows += in_force.compare(in_force.process_values(names), defaults, reasons, where="bench process")
        rows.append({"setting": "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND", "where": "bench process, requests only",
                     "value": load.REQUEST_PACE, "default": defaults["OMIPORTAL_OUTSCALE_CALLS_PER_SECOND"],
                     "changed": True, "reason": REASONS["OMIPORTAL_OUTSCALE_CALLS_PER_SECOND"]})
        result["settings"] = rows
        grace = float(next(r["value"] for r in rows if r["where"] == "workers"
                           and r["setting"] == "OMIPORTAL_RECONCILE_GRACE_SECONDS"))
        hold = o.hold_seconds if o.hold_seconds is not None else grace + 15.0
        o = replace(o, hold_seconds=hold)
        result["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()}
        log(in_force.block(rows))
        log(f"Sandbox on {sandbox.control_url} (latency {o.latency * 1000:.0f} ms, export {o.export_seconds:g}s, "
            f"import {o.import_seconds:g}s, copy {o.copy_seconds:g}s); database {connection.vendor} "
            f"{connection.settings_dict['NAME']}; Redis {settings.REDIS_URL}; logs {log_dir}")
        log(f"Faults once approved: {o.throttle:.0%} throttled, {o.lost:.0%} answers lost, {o.errors:.0%} server "
            f"errors, {o.held:.0%} of creates held {hold:g}s before they are applied (the grace is {grace:g}s)")
        xfer.empty_queues()  # a cut earlier run leaves its jobs queued
        measure.wait_for_workers(per_host * o.hosts, procs)
        if o.hosts > 1:
            result["clock_offsets"] = [multi.clock_offset(e) for e in envs]
            log(f"{o.hosts} hosts, {per_host} worker(s) each, clocks off by {offsets} s (libfaketime); each "
                f"host's offset from the database's clock, as measured there: {result['clock_offsets']}")

        seeded = _seed(sandbox, tag=tag)
        transfers = plan(sandbox, o, tag=tag)
        log(f"{len(transfers)} transfers: {o.main} into {MAIN_ACCOUNT}, {o.others} over {', '.join(OTHER_ACCOUNTS)}; "
            f"{sum('image_name' in t for t in transfers)} of an OMI of their own, the others over "
            f"{len(SHARED_IMAGES)} shared OMIs (two copied first); {o.workers} workers")
        began = time.monotonic()
        mine.set(OMIPORTAL_OUTSCALE_CALLS_PER_SECOND=load.REQUEST_PACE)
        try:
            shares = _request_all(seeded, transfers, log)
        finally:
            mine.put_back("OMIPORTAL_OUTSCALE_CALLS_PER_SECOND")
        result["request_seconds"] = round(time.monotonic() - began, 1)
        share_ids = [s.pk for s in shares]
        log(f"{len(shares)} transfers requested in {result['request_seconds']}s")

        sandbox.faults.configure(throttle_rate=o.throttle, error_rate=o.errors, lost_response_rate=o.lost,
                                 latency=o.latency, lost_response_mode="mixed", hold_seconds=hold,
                                 hold_rate=o.held, hold_actions=set(HELD_ACTIONS))
        before, cpu0 = measure.counters(sandbox), measure.worker_cpu(procs)
        # Per worker: peak RSS and PostgreSQL connections (pg_stat_activity); Redis memory.
        sampler = resources.Sampler(procs, key_every=5.0 if o.small else 15.0).start() if o.hosts > 1 else None
        started = time.monotonic()
        _approve_all(seeded, shares, log)
        log(f"{len(shares)} transfers approved in {time.monotonic() - started:.1f}s; faults on")

        final = [*Recipient.FINAL_STATES]
        next_report = started + 10
        killed = not o.kill
        while True:
            done = Recipient.objects.filter(share_id__in=share_ids, state__in=final).count()
            if done >= len(share_ids):
                break
            # Kill host 1's first worker in the middle of a step once some transfers have completed (or
            # after 30 s, whatever it is doing), with its scheduler, and start another in its place.
            victim = None if killed else next(p for name, p in procs.procs if name.startswith(("host-1-", "worker-")))
            job = None
            if victim and Recipient.objects.filter(share_id__in=share_ids, state=Recipient.State.COMPLETED).exists():
                watch_until = time.monotonic() + 2
                while job is None and time.monotonic() < watch_until:
                    job = multi.current_job(victim)
                    time.sleep(0 if job else 0.02)
            if victim and (job or time.monotonic() - started > 30):
                killed = True
                procs.kill(victim)
                procs.start_on(1, "host-1-worker-replacement", worker_argv)
                event = (f"t={time.monotonic() - started:.1f}s SIGKILLed a worker of host 1 (pid {victim.pid}, "
                         f"with its scheduler) while it ran {job or 'no job'}, and started another")
                result["events"].append(event)
                log(f"  {event}")
            if time.monotonic() - started > o.timeout:
                log(f"  timed out after {o.timeout:.0f}s with {done}/{len(share_ids)} final")
                break
            if procs.dead():
                log(f"  !! worker stopped: {procs.dead()}")
            if time.monotonic() >= next_report:
                next_report += 10
                states = Counter(Recipient.objects.filter(share_id__in=share_ids).values_list("state", flat=True))
                exports = Counter(state for _, state in Export.objects.filter(shares__pk__in=share_ids)
                                  .values_list("pk", "state").distinct())
                log(f"  t={time.monotonic() - started:5.0f}s recipients {dict(states)} exports {dict(exports)}")
            time.sleep(1)
        transfer_seconds = time.monotonic() - started
        log(f"All final after {transfer_seconds:.0f}s")
        result["held_wait_seconds"] = round(holds.wait(log), 1)
        if o.hosts > 1:  # the workers are still running: one of them writes it
            result["checkpoint_wait_seconds"] = multi.wait_for_checkpoint(every=o.checkpoint_every, log=log)
        after, cpu1 = measure.counters(sandbox), measure.worker_cpu(procs)
        if sampler is not None:
            result["resources"] = sampler.stop()
            result["jobs_by_host"] = multi.jobs_by_host(procs)
        sandbox.faults.reset()
        procs.stop()  # nothing moves while the rows and the cloud are compared
        calls = measure.counters_diff(before, after)
        total = sum(calls.values())
        n = len(share_ids)
        result.update({
            "transfers": n, "main": o.main, "others": o.others,
            "wall_seconds": round(transfer_seconds, 1),
            "oapi_calls": dict(sorted(calls.items())), "oapi_calls_total": total,
            "oapi_calls_per_transfer": round(total / max(1, n), 3),
            "oapi_calls_per_transfer_by_action": {a: round(c / max(1, n), 3) for a, c in sorted(calls.items())},
            "creates_refused": {a: calls.get(a, 0) - sum(sum(sandbox.created(acc).get(a, {}).values())
                                                         for acc in _sandbox_ids(seeded))
                                for a in HELD_ACTIONS},
            "held_creates": holds.count,
            "worker_cpu_seconds_per_transfer": round((cpu1 - cpu0) / max(1, n), 4),
            "processes_died": procs.dead(),
        })
        result.update(check(sandbox, seeded, share_ids, tag=tag))
        if o.hosts > 1:
            found = _check_hosts(envs, log)
            result["checks"].update(found.pop("host_checks"))
            result["ok"] = all(c["met"] for c in result["checks"].values())
            result.update(found)
    finally:
        procs.stop()
        sandbox.stop()
        mine.restore()
        result["total_seconds"] = round(time.monotonic() - wall, 1)
        result["logs"] = str(log_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = "faults-hosts" if o.hosts > 1 else "faults"  # the one-host figures are kept apart
        path = out_dir / (f"{stem}-small.json" if o.small else f"{stem}.json")
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        result["path"] = str(path)
    return result


# --- the table ------------------------------------------------------------------------------------


def _check_hosts(envs: list[dict], log) -> dict:
    """The chain and the shared checkpoints verify as each host sees them; a host's own
    directory in place of the shared store is caught."""
    from audit import checkpoints

    stored = len(checkpoints.load_all())
    by_host = [multi.verify_as(e) for e in envs]
    local = multi.verify_as(envs[0], OMIPORTAL_AUDIT_CHECKPOINT_BUCKET="")
    log(f"  {stored} checkpoint(s) in the shared bucket; audit_verify exit per host {[v['exit'] for v in by_host]}; "
        f"with host 1's own directory instead: exit {local['exit']}")
    checks = {
        "checkpoints_verify_from_every_host": {
            "met": stored >= 1 and all(v["exit"] == 0 for v in by_host),
            "value": {"checkpoints": stored, "exit_by_host": [v["exit"] for v in by_host]}},
        "a_host_directory_is_caught": {"met": stored >= 1 and local["exit"] != 0, "value": local["output"]},
    }
    return {"checkpoints": stored, "verify_by_host": by_host, "verify_with_a_host_directory": local,
            "host_checks": checks}


def table(result: dict) -> str:
    lines = [f"{result['transfers']} transfers ({result['main']} into one account, {result['others']} over others; "
             f"{result['exports']} exports, {result['copy_first_exports']} copied first) on {result['database']}",
             f"recipients {result['recipient_states']}; shares {result['share_states']}; "
             f"exports {result['export_states']}",
             f"wall {result['wall_seconds']:.0f}s from the first approval to the last final recipient "
             f"(requests {result['request_seconds']:.0f}s before it; {result['total_seconds']:.0f}s in all)",
             f"OAPI calls per transfer {result['oapi_calls_per_transfer']:.2f}: "
             + ", ".join(f"{a} {v:.2f}" for a, v in result["oapi_calls_per_transfer_by_action"].items()),
             f"creates held {result['held_creates']}; creates the cloud refused (a taken name): "
             + ", ".join(f"{a} {v}" for a, v in result["creates_refused"].items()),
             f"worker CPU s per transfer {result['worker_cpu_seconds_per_transfer']:.3f}", ""]
    if result.get("hosts", 1) > 1:
        lines[-1:] = [f"{result['hosts']} hosts x {result['workers_per_host']} worker(s), clocks off by "
                      f"{result['skews']} s, offsets measured {result.get('clock_offsets')}; jobs done by host "
                      f"{result.get('jobs_by_host')}; " + ("; ".join(result["events"]) or "no worker killed"), ""]
    for name, c in result["checks"].items():
        lines.append(f"[{'ok' if c['met'] else 'FAILED'}] {name}: {c['value']}")
    for key in ("failures", "stuck", "stuck_exports", "problems", "untracked_images", "untracked_export_tasks"):
        if result.get(key):
            lines.append(f"{key} (first {len(result[key])}):")
            lines += [f"  {line}" for line in result[key][:10]]
    return "\n".join(lines)
