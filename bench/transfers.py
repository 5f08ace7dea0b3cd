"""`manage.py bench_transfers`: what watching 1,000 transfers costs, the portal's way and the peers' way.

1. Refuses a database holding anything but benchmark data (unless told `yes`), migrates it.
2. Starts the OUTSCALE sandbox in this process (with injected latency and the given export,
   import and copy durations; `export_spread` lengthens each export by its own share of it, so that
   exports started together finish apart, as exports of images of different sizes do) and N RQ
   worker processes, sharing this process's database and Redis.
   Every OAPI action the sandbox runs is also noted here, with its time and what it answered
   (`CallLog`): that is where "the cloud finished" and "the portal noticed" come from.
3. For each size: seeds teams and accounts, then
   - **portal**: with the workers suspended, requests and approves the transfers through the
     services (recipient teams accept automatically), resumes the workers and waits until every
     recipient is final. Batched sweeps (DESIGN §4) watch them.
   - **peer**: the same transfers (same accounts and images), each watched on its own by a chain of
     jobs (`bench.peer`), as Terraform's and Packer's waiters do, on the same workers.
4. Reports, per phase (portal, peer), from the sandbox's counters and its call log:
   OAPI calls per completed transfer by action; detection lag (cloud finished -> first answer that
   showed it) per phase; hand-off lag (export first seen completed -> CreateImage reached the cloud);
   end-to-end overhead (total minus the cloud's own copy, export and import time, the export's
   being its task's own duration); worker CPU seconds per transfer; peak calls per second per
   account. Writes JSON and a PNG chart.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import django_rq
import psutil
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from rq import Worker
from rq.suspension import resume, suspend

from accounts.models import Team
from bench import chart, in_force, load, peer
from sandbox.server import Sandbox
from transfers.models import Export, Recipient, Share
from transfers.scheduling import get_queue

# The tuned set (`--tuned`), one pace for every process. By default the benchmark runs at the
# settings that ship and prints them; either way each setting that differs is printed with its reason.
PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 1.0, "OMIPORTAL_SWEEP_MAX_SECONDS": 5.0,
        "OMIPORTAL_RECONCILE_GRACE_SECONDS": 300.0, "OMIPORTAL_RECONCILE_EVERY_SECONDS": 10.0}
REASONS = {
    **load.REASONS,
    "OMIPORTAL_SWEEP_MIN_SECONDS": "--tuned or --sweep-min: looks a second apart, for the 10-20 s sandbox "
                                   "exports and imports (a real export takes minutes to hours)",
    "OMIPORTAL_SWEEP_MAX_SECONDS": "--tuned or --sweep-max: a backed-off look at most this far apart, so "
                                   "detection lag is measured in seconds",
    "OMIPORTAL_RECONCILE_GRACE_SECONDS": "--tuned: the reconciler does not re-send starts that are only queued "
                                         "behind a thousand others (harmless, but not what is measured)",
    "OMIPORTAL_RECONCILE_EVERY_SECONDS": "--tuned: the reconciler ticks within the run",
    "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": "--tuned: the sandbox on loopback is not OUTSCALE's API; 50 a "
                                           "second per account and process measures the portal, not its pace",
}
# Off in both forms: a checkpoint or a verification of the whole (growing) bench trail inside a
# worker is not part of a transfer, and would land in the middle of the figures.
QUIET_AUDIT = {"OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
GOALS = {"calls_per_transfer_max": 2.2, "handoff_p95_max_seconds": 1.0}
TEAMS_USERS = 20  # bench_load's seed(): five people per team -> four teams, two accounts each


@dataclass
class Options:
    sizes: list[int] = field(default_factory=lambda: [1000])
    workers: int = 2
    latency: float = 0.1
    export_seconds: float = 20.0
    export_spread: float = 0.0  # each export takes export_seconds plus up to this much, fixed by its task id
    import_seconds: float = 10.0
    copy_seconds: float | None = None  # default: a third of the import
    sweep_min: float | None = None  # None: the tuned set's 1 s with `tuned`, else the setting in force
    sweep_max: float | None = None  # None: 5 s with `tuned`, else the setting in force
    tuned: bool = False  # PACE and load.TUNED instead of the shipped settings
    timeout: float = 900.0  # per phase
    peer: bool = True
    out_dir: Path = load.BASE_DIR / "bench-results"
    chart: Path | None = None
    yes: bool = False


# --- what the cloud saw ---------------------------------------------------------------------------


class CallLog:
    """Wraps the sandbox's OAPI dispatcher: every action it ran, when, for whom, and the first time
    each export task was answered `completed` and each OMI `available`."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str, str, str]] = []  # (time, account id, action, purpose)
        self.task_seen: dict[str, float] = {}  # task id -> first answer showing it completed
        self.image_seen: dict[str, float] = {}  # image id -> first answer showing it available
        self.created: dict[str, tuple[float, float, str]] = {}  # image id -> (CreateImage at, ready at, name)
        self.task_created: dict[str, float] = {}
        self._orig = sandbox.oapi.call
        sandbox.oapi.call = self._call

    def clear(self) -> None:
        with self.lock:
            self.calls, self.task_seen, self.image_seen, self.created, self.task_created = [], {}, {}, {}, {}

    @staticmethod
    def purpose(action: str, params: dict) -> str:
        """create | lookup (find-before-create) | poll (watching known ids) | tag | other."""
        filters = params.get("Filters") or {}
        if action in ("CreateImage", "CreateImageExportTask"):
            return "create"
        if action == "CreateTags":
            return "tag"
        if action == "ReadImages":
            return "poll" if "ImageIds" in filters else "lookup"
        if action == "ReadImageExportTasks":
            return "poll" if "TaskIds" in filters else "lookup"
        return "other"

    def _call(self, account, action, params):
        body = self._orig(account, action, params)
        now = time.time()
        with self.lock:
            self.calls.append((now, account.account_id, action, self.purpose(action, params)))
            if action == "ReadImageExportTasks":
                for task in body.get("ImageExportTasks") or []:
                    if task.get("State") == "completed":
                        self.task_seen.setdefault(task["TaskId"], now)
            elif action == "ReadImages":
                for image in body.get("Images") or []:
                    if image.get("State") == "available":
                        self.image_seen.setdefault(image["ImageId"], now)
            elif action == "CreateImage":
                image_id = (body.get("Image") or {}).get("ImageId")
                img = self.sandbox.world.images.get(image_id)
                if img is not None and img.ready_at is not None:
                    ready = now + (img.ready_at - time.monotonic())
                    self.created.setdefault(image_id, (now, ready, img.name))
            elif action == "CreateImageExportTask":
                task_id = (body.get("ImageExportTask") or {}).get("TaskId")
                if task_id:
                    self.task_created.setdefault(task_id, now)
        return body

    def task_finished(self, task_id: str) -> float | None:
        task = self.sandbox.world.tasks.get(task_id)
        if task is None or task.completed_at is None:
            return None
        return task.completed_at.timestamp()

    def task_duration(self, task_id: str) -> float | None:
        """How long the sandbox made this export take (with a spread, every task has its own)."""
        task = self.sandbox.world.tasks.get(task_id)
        return None if task is None else task.duration

    def window(self, start: float, end: float) -> list[tuple[float, str, str, str]]:
        with self.lock:
            return [c for c in self.calls if start <= c[0] <= end]


def counters(sandbox) -> dict[str, Counter]:
    return {a["account_id"]: Counter(sandbox.counters(a["account_id"])) for a in sandbox.describe()["accounts"]}


def counters_diff(before: dict, after: dict) -> Counter:
    total = Counter()
    for account_id, now in after.items():
        total.update(now - before.get(account_id, Counter()))
    return total


def stats(values) -> dict:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"count": 0}

    def pct(p):
        return round(vals[min(len(vals) - 1, max(0, math.ceil(p / 100 * len(vals)) - 1))], 3)

    return {"count": len(vals), "p50": pct(50), "p95": pct(95), "max": round(vals[-1], 3),
            "mean": round(sum(vals) / len(vals), 3)}


def lag(seen: float | None, finished: float | None) -> float | None:
    if seen is None or finished is None:
        return None
    return max(0.0, seen - finished)


# --- the workers ----------------------------------------------------------------------------------


def worker_cpu(procs: load.Processes) -> float:
    """CPU seconds of the worker processes, their finished children (reaped: counted in the
    parent's children times) and their live ones (the scheduler)."""
    total = 0.0
    for _, proc in procs.procs:
        try:
            p = psutil.Process(proc.pid)
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            for child in p.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
    return total


def bench_cpu() -> float:
    """CPU seconds of this process: the sandbox answering every call, the call log and the
    progress checks. (The database's backends come and go with their connections, so their CPU
    cannot be read reliably from here.)"""
    me = psutil.Process().cpu_times()
    return me.user + me.system


def wait_for_workers(n: int, procs: load.Processes, timeout: float = 90) -> None:
    conn = django_rq.get_connection("default")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.dead():
            raise RuntimeError(f"a worker stopped while starting: {procs.dead()} (logs in {procs.log_dir})")
        if len(Worker.all(connection=conn)) >= n:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the workers did not register within {timeout}s (logs in {procs.log_dir})")


def suspend_workers(conn, n: int, procs: load.Processes, timeout: float = 60) -> None:
    """Suspend the workers and wait until each has noticed. An idle worker only checks between
    two blocking reads of its queues, so a job enqueued right after `rq suspend` would still run;
    the transfers must not start before the clock does."""
    suspend(conn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(w.get_state() == "suspended" for w in Worker.all(connection=conn)) >= n:
            return
        if procs.dead():
            raise RuntimeError(f"a worker stopped: {procs.dead()} (logs in {procs.log_dir})")
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not acknowledge the suspension within {timeout}s")


# --- the two phases -------------------------------------------------------------------------------


def _spread(calls) -> dict:
    """Peak calls in any one second, per account (sandbox account id)."""
    per = defaultdict(Counter)
    for t, account_id, _, _ in calls:
        per[account_id][int(t)] += 1
    peaks = {account_id: max(c.values()) for account_id, c in per.items()}
    return {"peak_calls_per_second_per_account": max(peaks.values(), default=0), "by_account": peaks}


def _summary(*, kind, n, completed, failed, calls: Counter, cpu, bench_seconds, started, ended, window, detection,
             handoff, overhead, totals, exports, log_calls) -> dict:
    per_action = {a: round(c / max(1, completed), 3) for a, c in sorted(calls.items())}
    total = sum(calls.values())
    return {
        "pattern": kind, "transfers": n, "completed": completed, "failed": failed,
        "all_completed": completed == n,
        "oapi_calls": dict(sorted(calls.items())), "oapi_calls_total": total,
        "oapi_calls_per_transfer": round(total / max(1, completed), 3), "oapi_calls_per_transfer_by_action": per_action,
        "oapi_calls_per_transfer_by_purpose": {
            k: round(v / max(1, completed), 3) for k, v in sorted(Counter(c[3] for c in log_calls).items())},
        "exports_created": exports,
        "detection_lag_seconds": detection, "handoff_lag_seconds": stats(handoff),
        "overhead_seconds": stats(overhead), "total_seconds": stats(totals),
        "worker_cpu_seconds": round(cpu, 2), "worker_cpu_seconds_per_transfer": round(cpu / max(1, n), 4),
        "sandbox_and_bench_cpu_seconds_per_transfer": round(bench_seconds / max(1, n), 4),
        "wall_seconds": round(ended - started, 1), **window,
    }


def _cloud_time(o: Options, copy: bool, export_seconds: float | None) -> float:
    """The cloud's own time for one transfer; `export_seconds` is its export task's duration (None
    when the task is unknown: the nominal one)."""
    copy_seconds = o.import_seconds / 3 if o.copy_seconds is None else o.copy_seconds
    export = o.export_seconds if export_seconds is None else export_seconds
    return (copy_seconds if copy else 0.0) + export + o.import_seconds


def _wait(done_count, n: int, timeout: float, procs: load.Processes, label: str, log) -> float:
    started = time.monotonic()
    next_report = started + 10
    while True:
        done = done_count()
        if done >= n:
            return time.time()
        if time.monotonic() - started > timeout:
            log(f"  {label}: timed out after {timeout:.0f}s with {done}/{n} final")
            return time.time()
        if procs.dead():
            log(f"  !! {label}: worker stopped: {procs.dead()}")
        if time.monotonic() >= next_report:
            next_report += 10
            log(f"  {label}: t={time.monotonic() - started:5.0f}s {done}/{n} final")
        time.sleep(0.5)


def run_portal(o: Options, sandbox, calls: CallLog, procs: load.Processes, *, tag: str, n: int, log) -> tuple:
    conn = django_rq.get_connection("default")
    seeded = load.seed(sandbox, tag=tag, users=TEAMS_USERS)
    Team.objects.filter(pk__in=[t.pk for t in seeded.teams]).update(auto_accept_incoming=True)
    suspend_workers(conn, o.workers, procs)
    try:
        shares = load.request_and_approve(sandbox, seeded, tag=tag, transfers=n, log=log)
    except BaseException:
        resume(conn)
        raise
    share_ids = [s.pk for s in shares]
    before, cpu0, bench0 = counters(sandbox), worker_cpu(procs), bench_cpu()
    started = time.time()
    resume(conn)
    final = [Recipient.State.COMPLETED, Recipient.State.FAILED, Recipient.State.CANCELLED, Recipient.State.EXPIRED]

    def done_count():
        return Recipient.objects.filter(share_id__in=share_ids, state__in=final).count()

    ended = _wait(done_count, n, o.timeout, procs, "portal", log)
    time.sleep(1.5)  # let the workers settle (the last sweep schedules nothing; the reconciler ticks)
    after, cpu1, bench1 = counters(sandbox), worker_cpu(procs), bench_cpu()

    recipients = list(Recipient.objects.filter(share_id__in=share_ids).select_related("share__export"))
    completed = sum(r.state == Recipient.State.COMPLETED for r in recipients)
    exports = {r.share.export for r in recipients if r.share.export_id}
    detection = {
        "copy": stats(lag(calls.image_seen.get(e.copy_image_id), (calls.created.get(e.copy_image_id) or (0, None))[1])
                      for e in exports if e.copy_image_id),
        "export": stats(lag(calls.task_seen.get(e.task_id), calls.task_finished(e.task_id))
                        for e in exports if e.task_id),
        "import": stats(lag(calls.image_seen.get(r.image_id), (calls.created.get(r.image_id) or (0, None))[1])
                        for r in recipients if r.image_id),
    }
    handoff, overhead, totals = [], [], []
    for r in recipients:
        export = r.share.export
        if r.image_id and export is not None and export.task_id in calls.task_seen and r.image_id in calls.created:
            handoff.append(calls.created[r.image_id][0] - calls.task_seen[export.task_id])
        if r.state == Recipient.State.COMPLETED and r.completed_at:
            total = r.completed_at.timestamp() - started
            totals.append(total)
            overhead.append(total - _cloud_time(o, bool(export and export.copy_image_id),
                                                calls.task_duration(export.task_id) if export else None))
    result = _summary(kind="portal", n=n, completed=completed, failed=len(recipients) - completed,
                      calls=counters_diff(before, after), cpu=cpu1 - cpu0,
                      bench_seconds=bench1 - bench0, started=started, ended=ended,
                      window=_spread(calls.window(started, ended + 1.5)), detection=detection, handoff=handoff,
                      overhead=overhead, totals=totals, exports=Export.objects.filter(
                          pk__in=[e.pk for e in exports]).exclude(task_id="").count(),
                      log_calls=calls.window(started, ended + 1.5))
    result["share_states"] = dict(Counter(Share.objects.filter(pk__in=share_ids).values_list("state", flat=True)))
    return result, shares


def run_peer(o: Options, sandbox, calls: CallLog, procs: load.Processes, shares, *, tag: str, log) -> dict:
    conn = django_rq.get_connection("default")
    n = len(shares)
    run = f"{tag}-peer"
    specs = []
    for i, share in enumerate(shares):
        recipient = share.recipients.first()
        specs.append({"run": run, "index": i, "source": share.source_account_id, "target": recipient.target_account_id,
                      "image_id": share.source_image_id, "copy": share.source_image_relation != "owned",
                      "name": f"peer-{tag}-{i:04d}"})
    suspend_workers(conn, o.workers, procs)
    try:
        for spec in specs:
            peer.enqueue_start(spec)
    finally:
        before, cpu0, bench0 = counters(sandbox), worker_cpu(procs), bench_cpu()
        started = time.time()
        resume(conn)

    def read_all():
        pipe = conn.pipeline()
        for i in range(n):
            pipe.hgetall(peer.key(run, i))
        return [{k.decode(): v.decode() for k, v in h.items()} for h in pipe.execute()]

    def done_count():
        return sum(1 for h in read_all() if "done_at" in h or "failed_at" in h)

    ended = _wait(done_count, n, o.timeout, procs, "peer", log)
    time.sleep(1.5)
    after, cpu1, bench1 = counters(sandbox), worker_cpu(procs), bench_cpu()
    records = read_all()
    completed = sum("done_at" in h for h in records)
    handoff, overhead, totals = [], [], []
    for spec, h in zip(specs, records, strict=True):
        task, image = h.get("task_id"), h.get("import_id")
        if task in calls.task_seen and image in calls.created:
            handoff.append(calls.created[image][0] - calls.task_seen[task])
        if "done_at" in h:
            total = float(h["done_at"]) - started
            totals.append(total)
            overhead.append(total - _cloud_time(o, spec["copy"], calls.task_duration(task) if task else None))
    detection = {
        "copy": stats(lag(calls.image_seen.get(h["copy_id"]), (calls.created.get(h["copy_id"]) or (0, None))[1])
                      for h in records if h.get("copy_id")),
        "export": stats(lag(calls.task_seen.get(h["task_id"]), calls.task_finished(h["task_id"]))
                        for h in records if h.get("task_id")),
        "import": stats(lag(calls.image_seen.get(h["import_id"]), (calls.created.get(h["import_id"]) or (0, None))[1])
                        for h in records if h.get("import_id")),
    }
    result = _summary(kind="peer", n=n, completed=completed, failed=sum("failed_at" in h for h in records),
                      calls=counters_diff(before, after), cpu=cpu1 - cpu0,
                      bench_seconds=bench1 - bench0, started=started, ended=ended,
                      window=_spread(calls.window(started, ended + 1.5)), detection=detection, handoff=handoff,
                      overhead=overhead, totals=totals, exports=sum(1 for h in records if h.get("task_id")),
                      log_calls=calls.window(started, ended + 1.5))
    result["failures"] = [h["failed"] for h in records if "failed" in h][:10]
    return result


# --- the run --------------------------------------------------------------------------------------


def goals(o: Options, portal: dict) -> dict:
    det = portal["detection_lag_seconds"]
    p95 = max((d.get("p95", 0) for d in det.values() if d.get("count")), default=None)
    bound = o.sweep_max + 1
    return {
        "calls_per_transfer": {"goal": f"<= {GOALS['calls_per_transfer_max']}",
                               "value": portal["oapi_calls_per_transfer"],
                               "met": portal["oapi_calls_per_transfer"] <= GOALS["calls_per_transfer_max"]},
        "detection_p95": {"goal": f"<= sweep interval + 1 s = {bound:g} s (longest interval, sweep_max)",
                          "value": p95, "met": p95 is not None and p95 <= bound},
        "handoff_p95": {"goal": f"< {GOALS['handoff_p95_max_seconds']:g} s",
                        "value": portal["handoff_lag_seconds"].get("p95"),
                        "met": (portal["handoff_lag_seconds"].get("p95") or 1e9) < GOALS["handoff_p95_max_seconds"]},
        "all_completed": {"goal": "every transfer completed", "value": f"{portal['completed']}/{portal['transfers']}",
                          "met": portal["all_completed"]},
    }


def empty_queues() -> None:
    """Remove every queued and scheduled job of the portal's queues (the bench's Redis database is
    a throwaway one, like its database)."""
    for name in settings.RQ_QUEUES:
        queue = get_queue(name)
        queue.empty()
        registry = queue.scheduled_job_registry
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)


def run(o: Options, *, log=print) -> dict:
    load.check_throwaway_database(yes=o.yes)
    call_command("migrate", interactive=False, verbosity=0)
    pace = {**PACE, "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": load.TUNED["OMIPORTAL_OUTSCALE_CALLS_PER_SECOND"]} \
        if o.tuned else {}
    for name, value in (("OMIPORTAL_SWEEP_MIN_SECONDS", o.sweep_min), ("OMIPORTAL_SWEEP_MAX_SECONDS", o.sweep_max)):
        if value is not None:
            pace[name] = value
    tag = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(o.out_dir)
    log_dir = out_dir / f"transfers-{tag}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    copy_seconds = o.import_seconds / 3 if o.copy_seconds is None else o.copy_seconds
    sandbox = Sandbox(host="127.0.0.1", base_port=0, export_seconds=o.export_seconds,
                      export_spread_seconds=o.export_spread, import_seconds=o.import_seconds,
                      copy_seconds=copy_seconds, lockout_after=0).start()
    sandbox.faults.configure(latency=o.latency)
    calls = CallLog(sandbox)
    endpoints = sandbox.endpoints()
    load.use_sandbox(endpoints, pace)

    env = {**load.child_env(endpoints, tuned=False), **{k: str(v) for k, v in {**pace, **QUIET_AUDIT}.items()}}
    names = in_force.TRANSFER_SETTINGS
    defaults = in_force.shipped(names, env)
    rows = in_force.compare(in_force.worker_values(names, env), defaults, REASONS, where="workers")
    rows += in_force.compare(in_force.process_values(names), defaults, REASONS, where="bench process")
    in_use = {r["setting"]: r["value"] for r in rows if r["where"] == "workers"}
    o = replace(o, sweep_min=in_use["OMIPORTAL_SWEEP_MIN_SECONDS"], sweep_max=in_use["OMIPORTAL_SWEEP_MAX_SECONDS"])
    log(in_force.block(rows))
    procs = load.Processes(env, log_dir)
    result = {"tag": tag, "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
              "pace": {name: in_use[name] for name in PACE}, "settings": rows, "database": connection.vendor,
              "cores": psutil.cpu_count(), "runs": []}
    wall = time.monotonic()
    try:
        spread = f" + up to {o.export_spread:g}s by task" if o.export_spread else ""
        log(f"Sandbox on {sandbox.control_url} (latency {o.latency * 1000:.0f} ms, "
            f"export {o.export_seconds:g}s{spread}, import {o.import_seconds:g}s, copy {copy_seconds:g}s); "
            f"database {connection.vendor} {connection.settings_dict['NAME']}; Redis {settings.REDIS_URL}")
        for k in range(o.workers):
            procs.start(f"worker-{k + 1}", [sys.executable, str(load.BASE_DIR / "manage.py"), "rqworker",
                                           "poll", "default", "--with-scheduler"])
        empty_queues()  # a cut peer phase of an earlier run leaves its chains of polls queued
        wait_for_workers(o.workers, procs)
        log(f"{o.workers} RQ workers ready")
        for n in o.sizes:
            size_tag = f"{tag}-n{n}"
            sandbox.reset()  # a clean world per size: ids restart, so the call log restarts too
            sandbox.faults.configure(latency=o.latency)
            calls.clear()
            log(f"--- {n} transfers: portal (batched sweeps)")
            portal, shares = run_portal(o, sandbox, calls, procs, tag=size_tag, n=n, log=log)
            entry = {"transfers": n, "portal": portal, "goals": goals(o, portal)}
            if o.peer:
                log(f"--- {n} transfers: peer pattern (each transfer polled on its own)")
                entry["peer"] = run_peer(o, sandbox, calls, procs, shares, tag=size_tag, log=log)
                empty_queues()  # a cut peer phase keeps polling: not into the next size's figures
            result["runs"].append(entry)
            log(f"--- {n} transfers done")
    finally:
        resume(django_rq.get_connection("default"))
        procs.stop()
        sandbox.stop()
        result["wall_seconds"] = round(time.monotonic() - wall, 1)
        result["processes_died"] = procs.dead()
        result["logs"] = str(log_dir)
        path = out_dir / f"transfers-{tag}.json"
        path.write_text(json.dumps(result, indent=2))
        result["path"] = str(path)
    if o.chart and result["runs"]:
        result["chart"] = str(chart.draw(result, Path(o.chart)))
    return result


# --- the table ------------------------------------------------------------------------------------


def _ms(d: dict, key: str) -> str:
    return f"{d[key]:.2f}" if d.get("count") else "-"


def table_one(entry: dict) -> str:
    cols = [("portal", entry["portal"])] + ([("peer", entry["peer"])] if "peer" in entry else [])
    rows = [("completed", lambda r: f"{r['completed']}/{r['transfers']}"),
            ("OAPI calls / transfer", lambda r: f"{r['oapi_calls_per_transfer']:.2f}")]
    actions = sorted({a for _, r in cols for a in r["oapi_calls_per_transfer_by_action"]})
    for a in actions:
        rows.append((f"  {a}", lambda r, a=a: f"{r['oapi_calls_per_transfer_by_action'].get(a, 0):.2f}"))
    for k in ("create", "lookup", "poll", "tag", "other"):
        rows.append((f"  by purpose: {k}", lambda r, k=k: f"{r['oapi_calls_per_transfer_by_purpose'].get(k, 0):.2f}"))
    rows.append(("exports created", lambda r: str(r["exports_created"])))
    for phase in ("copy", "export", "import"):
        for q in ("p50", "p95", "max"):
            rows.append((f"detection {phase} {q} s", lambda r, p=phase, q=q: _ms(r["detection_lag_seconds"][p], q)))
    for q in ("p50", "p95", "max"):
        rows.append((f"hand-off {q} s", lambda r, q=q: _ms(r["handoff_lag_seconds"], q)))
    for q in ("p50", "p95", "max"):
        rows.append((f"overhead {q} s", lambda r, q=q: _ms(r["overhead_seconds"], q)))
    rows += [("worker CPU s / transfer", lambda r: f"{r['worker_cpu_seconds_per_transfer']:.3f}"),
             ("sandbox+bench CPU s / tr.", lambda r: f"{r['sandbox_and_bench_cpu_seconds_per_transfer']:.3f}"),
             ("peak calls/s/account", lambda r: str(r["peak_calls_per_second_per_account"])),
             ("wall s", lambda r: f"{r['wall_seconds']:.0f}")]
    lines = [f"{entry['transfers']} transfers", f"{'':<28}" + "".join(f"{name:>12}" for name, _ in cols)]
    for label, fn in rows:
        lines.append(f"{label:<28}" + "".join(f"{fn(r):>12}" for _, r in cols))
    lines.append("goals (portal): " + "; ".join(f"{k} {'met' if g['met'] else 'NOT met'} ({g['value']})"
                                                for k, g in entry["goals"].items()))
    return "\n".join(lines)


def table(result: dict) -> str:
    return "\n\n".join(table_one(e) for e in result["runs"])
