"""`manage.py bench_transfers`: what watching 1,000 transfers costs, the portal's way and the peers' way.

1. Refuses a database holding anything but benchmark data (unless told `yes`), migrates it.
2. Starts the OUTSCALE sandbox in this process (with injected latency and the given export,
   import and copy durations; `export_spread` lengthens each export by its own share of it, so that
   exports started together finish apart, as exports of images of different sizes do) and N RQ
   worker processes, sharing this process's database and Redis.
   Every OAPI action the sandbox runs is also noted here, with its time and what it answered
   (`CallLog`): that is where "the cloud finished" and "the portal noticed" come from.
3. For each size and workload (`workloads`: export, same-region; bench/workloads.py), on a
   clean sandbox world each: seeds teams and accounts, then
   - **export path, portal**: every target in another Region than its source. With the workers
     suspended, requests and approves the transfers through the services (recipient teams accept
     automatically), resumes the workers and waits until every recipient is final. Batched sweeps
     (DESIGN §4) watch them.
   - **export path, peer**: the same transfers (same accounts and images), each watched on its own
     by a chain of jobs (`bench.peer`), as Terraform's and Packer's waiters do, on the same workers.
   - **same Region** (`bench.same_region`): every target in its source's Region, each transfer
     grant → copy → revoke; its own figures against the cloud's copy time.
4. Reports, per phase (portal, peer), from the sandbox's counters and its call log:
   OAPI calls per completed transfer by action; detection lag (cloud finished -> first answer that
   showed it) per phase; hand-off lag (export first seen completed -> CreateImage reached the cloud);
   end-to-end overhead (total minus the cloud's own copy, export and import time, the export's
   being its task's own duration); worker CPU seconds per transfer; peak calls per second per
   account. Writes JSON and a PNG chart.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import django_rq
import psutil
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from rq.suspension import resume

from accounts.models import Team
from bench import chart, cores, creates_floor, in_force, load, peer, resources, same_region, workloads
from bench.measure import (
    PURPOSES,
    CallLog,
    bench_cpu,
    counters,
    counters_diff,
    handoff_by_account,
    handoff_laps,
    handoff_parts,
    handoff_windows,
    lag,
    spread,
    stats,
    summary,
    suspend_workers,
    wait_final,
    wait_for_workers,
    waited_behind,
    worker_cpu,
)
from sandbox.server import Sandbox
from transfers.models import Export, Recipient, Share
from transfers.scheduling import get_queue
from transfers.services import laps

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
                                           "second per account measures the portal, not its pace",
}
GOALS = {"calls_per_transfer_max": 2.2, "calls_per_transfer_max_distinct": 3.05, "handoff_p95_max_seconds": 1.0}
# A size's results of the portal, one per export workload: result key -> (table column, goals key).
PORTAL_PHASES = {"portal": ("portal", "goals"), "portal_distinct": ("distinct", "goals_distinct"),
                 "portal_fleet": ("fleet", "goals_fleet")}
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
    calls_per_second: float = 10.0  # the workers' OMIPORTAL_OUTSCALE_CALLS_PER_SECOND (set from the one in force)
    pace_shared: bool = True  # the workers' OMIPORTAL_OUTSCALE_PACE_SHARED (set from the one in force)
    tuned: bool = False  # PACE and load.TUNED instead of the shipped settings
    timeout: float = 900.0  # per phase
    peer: bool = True
    workloads: list[str] = field(default_factory=lambda: list(workloads.WORKLOADS))  # export, same-region
    fleet_accounts: int = 200  # the export-fleet workload's recipient accounts
    out_dir: Path = load.BASE_DIR / "bench-results"
    chart: Path | None = None
    yes: bool = False


# --- the two phases -------------------------------------------------------------------------------


def _cloud_time(o: Options, copy: bool, export_seconds: float | None) -> float:
    """The cloud's own time for one transfer; `export_seconds` is its export task's duration (None
    when the task is unknown: the nominal one)."""
    copy_seconds = o.import_seconds / 3 if o.copy_seconds is None else o.copy_seconds
    export = o.export_seconds if export_seconds is None else export_seconds
    return (copy_seconds if copy else 0.0) + export + o.import_seconds


def run_portal(o: Options, sandbox, calls: CallLog, procs: load.Processes, *, tag: str, n: int, log,
               workload: str = "export") -> tuple:
    """The export path the portal's way, as ``workload`` routes it (export, export-distinct: each
    transfer with an image of its own, export-fleet: a release to many accounts)."""
    conn = django_rq.get_connection("default")
    seeded = load.seed(sandbox, tag=tag, users=TEAMS_USERS)
    plan = workloads.plan_export
    if workload == workloads.DISTINCT:
        made = workloads.seed_distinct_images(sandbox, seeded, load.source_images(sandbox), n)
        plan = workloads.plan_distinct(made)
        log(f"  {len(made)} distinct source images seeded in the sandbox")
    elif workload == workloads.FLEET:
        fleet = workloads.seed_fleet(sandbox, seeded, accounts=o.fleet_accounts, transfers=n)
        plan = workloads.plan_fleet(fleet)
        log(f"  {len(fleet.targets)} recipient accounts and {len(fleet.images)} release images seeded")
    Team.objects.filter(pk__in=[t.pk for t in seeded.teams]).update(auto_accept_incoming=True)
    suspend_workers(conn, o.workers, procs)
    try:
        shares = load.request_and_approve(sandbox, seeded, tag=tag, transfers=n, log=log, plan=plan)
    except BaseException:
        resume(conn)
        raise
    share_ids = [s.pk for s in shares]
    sampler, cpu_sampler = resources.Sampler(procs).start(), cores.CpuSampler(procs).start()
    before, cpu0, bench0, conns0 = counters(sandbox), worker_cpu(procs), bench_cpu(), sandbox.connections()
    started = time.time()
    resume(conn)
    final = [Recipient.State.COMPLETED, Recipient.State.FAILED, Recipient.State.CANCELLED, Recipient.State.EXPIRED]

    def done_count():
        return Recipient.objects.filter(share_id__in=share_ids, state__in=final).count()

    ended = wait_final(done_count, n, o.timeout, procs, "portal", log)
    time.sleep(1.5)  # let the workers settle (the last sweep schedules nothing; the reconciler ticks)
    after, cpu1, bench1, conns1 = counters(sandbox), worker_cpu(procs), bench_cpu(), sandbox.connections()
    held, cpu_samples = sampler.stop(), cpu_sampler.stop().samples

    recipients = list(Recipient.objects.filter(share_id__in=share_ids)
                      .select_related("share__export", "target_account"))
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
    handoff, overhead, totals, parts = [], [], [], []
    for r in recipients:
        export = r.share.export
        if r.image_id and export is not None and export.task_id in calls.task_seen and r.image_id in calls.created:
            handoff.append(calls.created[r.image_id][0] - calls.task_seen[export.task_id])
            parts.append((calls.task_seen[export.task_id], calls.created[r.image_id][0], r.target_account.account_id))
        if r.state == Recipient.State.COMPLETED and r.completed_at:
            total = r.completed_at.timestamp() - started
            totals.append(total)
            overhead.append(total - _cloud_time(o, bool(export and export.copy_image_id),
                                                calls.task_duration(export.task_id) if export else None))
    made = calls.window(started, ended + 1.5)  # the calls of this phase
    result = summary(kind="portal", n=n, completed=completed, failed=len(recipients) - completed,
                      calls=counters_diff(before, after), cpu=cpu1 - cpu0,
                      bench_seconds=bench1 - bench0, started=started, ended=ended,
                      window=spread(made), detection=detection, handoff=handoff,
                      overhead=overhead, totals=totals, exports=Export.objects.filter(
                          pk__in=[e.pk for e in exports]).exclude(task_id="").count(),
                      log_calls=made)
    result["handoff_parts_seconds"] = handoff_parts(parts, per_second=int(o.calls_per_second), processes=o.workers,
                                                    shared=o.pace_shared)
    result["handoff_waited_behind"] = waited_behind(parts, made)
    result["handoff_by_account"] = handoff_by_account(parts)
    result["handoff_cpu"] = cores.in_windows(cpu_samples, handoff_windows(parts), cores=psutil.cpu_count())
    result["handoff_cpu_creates"] = cores.in_windows(cpu_samples, handoff_windows(parts, creates_only=True),
                                                     cores=psutil.cpu_count())
    result["handoff_laps_seconds"] = handoff_laps(procs.log_dir, started, ended + 1.5)
    # New TCP connections the OAPI endpoints accepted (each a TLS handshake against OUTSCALE).
    result["oapi_connections"] = conns1["oapi"] - conns0["oapi"]
    result["share_states"] = dict(Counter(Share.objects.filter(pk__in=share_ids).values_list("state", flat=True)))
    result["resources"] = held
    result["redis_db_mb_per_10k_transfers"] = round(held["redis_db_keys_bytes_peak_mb"] * 10000 / max(1, n), 2)
    result["wall_seconds_per_transfer"] = round(result["wall_seconds"] / max(1, n), 4)
    result["distinct_images"] = workload == workloads.DISTINCT
    result["workload"] = workload
    if workload == workloads.FLEET:
        result["fleet_accounts"] = o.fleet_accounts
    result["looks"] = calls.looks_summary(started, ended + 1.5)
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

    ended = wait_final(done_count, n, o.timeout, procs, "peer", log)
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
    result = summary(kind="peer", n=n, completed=completed, failed=sum("failed_at" in h for h in records),
                      calls=counters_diff(before, after), cpu=cpu1 - cpu0,
                      bench_seconds=bench1 - bench0, started=started, ended=ended,
                      window=spread(calls.window(started, ended + 1.5)), detection=detection, handoff=handoff,
                      overhead=overhead, totals=totals, exports=sum(1 for h in records if h.get("task_id")),
                      log_calls=calls.window(started, ended + 1.5))
    result["failures"] = [h["failed"] for h in records if "failed" in h][:10]
    return result


# --- the run --------------------------------------------------------------------------------------


def goals(o: Options, portal: dict, *, distinct: bool = False) -> dict:
    det = portal["detection_lag_seconds"]
    p95 = max((d.get("p95", 0) for d in det.values() if d.get("count")), default=None)
    bound = o.sweep_max + 1
    most = GOALS["calls_per_transfer_max_distinct" if distinct else "calls_per_transfer_max"]
    return {
        "calls_per_transfer": {"goal": f"<= {most}", "value": portal["oapi_calls_per_transfer"],
                               "met": portal["oapi_calls_per_transfer"] <= most},
        "detection_p95": {"goal": f"<= sweep interval + 1 s = {bound:g} s (longest interval, sweep_max)",
                          "value": p95, "met": p95 is not None and p95 <= bound},
        "handoff_p95": {"goal": f"< {GOALS['handoff_p95_max_seconds']:g} s",
                        "value": portal["handoff_lag_seconds"].get("p95"),
                        "met": (portal["handoff_lag_seconds"].get("p95") or 1e9) < GOALS["handoff_p95_max_seconds"]},
        "all_completed": {"goal": "every transfer completed", "value": f"{portal['completed']}/{portal['transfers']}",
                          "met": portal["all_completed"]},
    }


def scaling(runs: list[dict]) -> list[dict]:
    """What a deployment plans by (README "Scaling out"), per size and portal phase: each worker's
    peak memory and PostgreSQL connections, and the Redis memory of the run scaled to 10,000."""
    rows = []
    for entry in runs:
        for key in PORTAL_PHASES:
            phase = entry.get(key)
            if not phase or "resources" not in phase:
                continue
            held = phase["resources"]
            rows.append({
                "transfers": entry["transfers"], "phase": key,
                "worker_peak_rss_mb": {name: w["peak_rss_mb"] for name, w in held["workers"].items()},
                "worker_peak_pg_connections": {name: w["peak_pg_connections"] for name, w in held["workers"].items()},
                "redis_db_keys_mb_peak": held["redis_db_keys_bytes_peak_mb"],
                "redis_db_mb_per_10k_transfers": phase["redis_db_mb_per_10k_transfers"],
                "redis_server_used_memory_growth_mb": held["redis_used_memory_growth_peak_mb"],
                "worker_cpu_seconds_per_transfer": phase["worker_cpu_seconds_per_transfer"],
                "oapi_calls_per_transfer": phase["oapi_calls_per_transfer"],
                "wall_seconds_per_transfer": phase["wall_seconds_per_transfer"],
            })
    return rows


def empty_queues() -> None:
    """Remove every queued and scheduled job of the portal's queues (the bench's Redis database is
    a throwaway one, like its database)."""
    for name in settings.RQ_QUEUES:
        queue = get_queue(name)
        queue.empty()
        registry = queue.scheduled_job_registry
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)


def _clean_world(sandbox, calls: CallLog, o: Options) -> None:
    """A clean world per phase: ids restart, so the call log restarts too."""
    sandbox.reset()
    sandbox.faults.configure(latency=o.latency)
    # No OMI quota: thousands of copies into one account pass any account's default (the sandbox's
    # is 500, and refuses the rest as OUTSCALE would); a deployment asks OUTSCALE for more.
    for account in sandbox.describe()["accounts"]:
        sandbox.set_quota(account["account_id"], "image_limit", 0)
    calls.clear()


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
    # The bench process only requests and approves the transfers, before the clock starts: at the
    # shipped pace 10,000 requests (each reads its source) would take longer than the transfers.
    load.use_sandbox(endpoints, {"OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": load.REQUEST_PACE, **pace})

    env = {**load.child_env(endpoints), **{k: str(v) for k, v in {**pace, **load.QUIET_AUDIT}.items()}}
    # The workers log at WARNING (rq's line per job would be a million lines), but the sweeps'
    # hand-off laps at INFO: the run reads them back (measure.handoff_laps).
    env["OMIPORTAL_LOG_LEVELS"] = f"{laps.__name__}=INFO"
    names = in_force.TRANSFER_SETTINGS
    defaults = in_force.shipped(names, env)
    rows = in_force.compare(in_force.worker_values(names, env), defaults, REASONS, where="workers")
    rows += in_force.compare(in_force.process_values(names), defaults, {**REASONS, **load.BENCH_PROCESS_REASONS},
                             where="bench process")
    in_use = {r["setting"]: r["value"] for r in rows if r["where"] == "workers"}
    o = replace(o, sweep_min=in_use["OMIPORTAL_SWEEP_MIN_SECONDS"], sweep_max=in_use["OMIPORTAL_SWEEP_MAX_SECONDS"],
                calls_per_second=in_use["OMIPORTAL_OUTSCALE_CALLS_PER_SECOND"],
                pace_shared=in_use["OMIPORTAL_OUTSCALE_PACE_SHARED"])
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
            entry = {"transfers": n}
            if "export" in o.workloads:
                _clean_world(sandbox, calls, o)
                log(f"--- {n} transfers: export path, portal (batched sweeps)")
                portal, shares = run_portal(o, sandbox, calls, procs, tag=size_tag, n=n, log=log)
                entry.update({"portal": portal, "goals": goals(o, portal)})
                if o.peer:
                    log(f"--- {n} transfers: export path, peer pattern (each transfer polled on its own)")
                    entry["peer"] = run_peer(o, sandbox, calls, procs, shares, tag=size_tag, log=log)
                    empty_queues()  # a cut peer phase keeps polling: not into the next size's figures
            for workload, key, suffix, what in (
                    (workloads.DISTINCT, "portal_distinct", "d", "a distinct image per transfer"),
                    (workloads.FLEET, "portal_fleet", "f", f"a release to {o.fleet_accounts} accounts")):
                if workload not in o.workloads:
                    continue
                _clean_world(sandbox, calls, o)
                log(f"--- {n} transfers: export path, {what}, portal")
                phase, _ = run_portal(o, sandbox, calls, procs, tag=f"{size_tag}-{suffix}", n=n, log=log,
                                      workload=workload)
                entry.update({key: phase, PORTAL_PHASES[key][1]: goals(o, phase,
                                                                       distinct=workload == workloads.DISTINCT)})
                if workload == workloads.FLEET:
                    _clean_world(sandbox, calls, o)
                    log(f"--- {n} transfers: the release's creates alone, without the portal")
                    entry["creates_floor"] = creates_floor.run(
                        sandbox, env, processes=o.workers, threads=int(in_use["OMIPORTAL_SWEEP_CONCURRENCY"]),
                        accounts=o.fleet_accounts, creates=n, log=log)
            if "same-region" in o.workloads:
                _clean_world(sandbox, calls, o)
                log(f"--- {n} transfers: same Region (grant → copy → revoke)")
                entry["same_region"] = same_region.run(o, sandbox, calls, procs, tag=f"{size_tag}-sr", n=n, log=log)
                entry["same_region_goals"] = same_region.goals(entry["same_region"])
            result["runs"].append(entry)
            result["scaling"] = scaling(result["runs"])
            # Written after each size too: a long run cut short keeps the sizes it finished.
            (out_dir / f"transfers-{tag}.json").write_text(json.dumps(result, indent=2))
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
    if o.chart and any("portal" in entry for entry in result["runs"]):
        result["chart"] = str(chart.draw(result, Path(o.chart)))
    return result


# --- the table ------------------------------------------------------------------------------------


def _ms(d: dict, key: str) -> str:
    return f"{d[key]:.2f}" if d.get("count") else "-"


def _floor(r: dict, *, every: bool) -> str:
    """The pace floor's p95 (measure.handoff_parts): at the account's allowance in force, or (a
    pace per process) at every process's. Results from before the shared pace call the first
    ``floor_one_process``."""
    parts = r.get("handoff_parts_seconds")
    if not parts or "processes" not in parts:
        return "-"
    floor = parts.get(f"floor_{parts['processes']}_processes") if every else (
        parts.get("floor") or parts.get("floor_one_process"))
    return _ms(floor, "p95") if floor else "-"


def _busy(r: dict, group: str, key: str = "handoff_cpu") -> str:
    """Cores a group kept busy during the hand-offs (``group``: machine, or one of cores.GROUPS;
    ``key``: handoff_cpu from each look's answer, handoff_cpu_creates from its first create)."""
    busy = r.get(key, {}).get(f"{group}_cores")
    return "-" if busy is None else f"{busy:.2f}"


def _behind(r: dict) -> str:
    """The calls the account received in the second before each create that waited in line
    (measure.waited_behind), on average: creates, then the rest."""
    behind = r.get("handoff_waited_behind")
    if not behind or not behind["creates"]:
        return "-"
    calls = behind["calls_in_the_second_before"]
    creates = calls.get("CreateImage", 0)
    return f"{creates:.1f} creates + {sum(calls.values()) - creates:.1f} other"


def _busiest(r: dict) -> str:
    """The hand-off p95 into the account that received the most imports, and the others' largest
    (measure.handoff_by_account)."""
    by = list(r.get("handoff_by_account", {}).values())
    if not by:
        return "-"
    others = max((s["p95"] for s in by[1:] if s.get("count")), default=None)
    return f"{by[0]['p95']:.2f} ({by[0]['count']})" + (f", others {others:.2f}" if others is not None else "")


def table_one(entry: dict) -> str:
    columns = [("portal", "portal"), ("peer", "peer")] + [(key, name) for key, (name, _) in PORTAL_PHASES.items()
                                                          if key != "portal"]
    cols = [(name, entry[key]) for key, name in columns if key in entry]
    rows = [("completed", lambda r: f"{r['completed']}/{r['transfers']}"),
            ("OAPI calls / transfer", lambda r: f"{r['oapi_calls_per_transfer']:.2f}")]
    actions = sorted({a for _, r in cols for a in r["oapi_calls_per_transfer_by_action"]})
    for a in actions:
        rows.append((f"  {a}", lambda r, a=a: f"{r['oapi_calls_per_transfer_by_action'].get(a, 0):.2f}"))
    for k in PURPOSES:
        rows.append((f"  by purpose: {k}", lambda r, k=k: f"{r['oapi_calls_per_transfer_by_purpose'].get(k, 0):.2f}"))
    rows.append(("exports created", lambda r: str(r["exports_created"])))
    rows.append(("OAPI connections opened", lambda r: str(r.get("oapi_connections", "-"))))
    for action in ("ReadImageExportTasks", "ReadImages"):
        rows.append((f"looks {action[4:]}: made/empty", lambda r, a=action: (
            f"{r['looks'][a]['looks']}/{r['looks'][a]['saw_nothing_new']}" if a in r.get("looks", {}) else "-")))
    for phase in ("copy", "export", "import"):
        for q in ("p50", "p95", "max"):
            rows.append((f"detection {phase} {q} s", lambda r, p=phase, q=q: _ms(r["detection_lag_seconds"][p], q)))
    for q in ("p50", "p95", "max"):
        rows.append((f"hand-off {q} s", lambda r, q=q: _ms(r["handoff_lag_seconds"], q)))
    for part in laps.PARTS:
        rows.append((f"  in the sweep: {part} p95 s", lambda r, part=part: _ms(
            r.get("handoff_laps_seconds", {}).get(part, {}), "p95")))
    rows.append(("  machine cores busy", lambda r: _busy(r, "machine")))
    rows.append(("  of which workers/sandbox", lambda r: f"{_busy(r, 'workers')}/{_busy(r, 'sandbox_and_bench')}"))
    rows.append(("  each worker", lambda r: "/".join(_busy(r, name) for name in sorted(r.get("resources", {})
                                                                                    .get("workers", {})))))
    rows.append(("  creates: machine/sandbox", lambda r: f"{_busy(r, 'machine', 'handoff_cpu_creates')}/"
                                                      f"{_busy(r, 'sandbox_and_bench', 'handoff_cpu_creates')}"))
    rows.append(("  late creates waited behind", _behind))
    rows.append(("  p95 s, busiest account", _busiest))
    rows += [("hand-off floor p95 s", lambda r: _floor(r, every=False)),
             ("hand-off floor p95 s, paced per process, all", lambda r: _floor(r, every=True))]
    for q in ("p50", "p95", "max"):
        rows.append((f"overhead {q} s", lambda r, q=q: _ms(r["overhead_seconds"], q)))
    rows += [("worker CPU s / transfer", lambda r: f"{r['worker_cpu_seconds_per_transfer']:.3f}"),
             ("sandbox+bench CPU s / tr.", lambda r: f"{r['sandbox_and_bench_cpu_seconds_per_transfer']:.3f}"),
             ("peak calls/s/account", lambda r: str(r["peak_calls_per_second_per_account"])),
             ("wall s", lambda r: f"{r['wall_seconds']:.0f}"),
             ("wall s / transfer", lambda r: f"{r['wall_seconds'] / max(1, r['transfers']):.3f}")]
    for label, key in (("worker peak RSS MB", "peak_rss_mb"), ("worker peak PG conns", "peak_pg_connections")):
        rows.append((label, lambda r, key=key: "/".join(
            f"{w[key]:g}" for _, w in sorted(r["resources"]["workers"].items())) if "resources" in r else "-"))
    rows += [("Redis db keys MB peak", lambda r: f"{r['resources']['redis_db_keys_bytes_peak_mb']:.1f}"
              if "resources" in r else "-"),
             ("Redis used_memory +MB", lambda r: f"{r['resources']['redis_used_memory_growth_peak_mb']:.1f}"
              if "resources" in r else "-")]
    lines = [f"{entry['transfers']} transfers", f"{'':<28}" + "".join(f"{name:>12}" for name, _ in cols)]
    for label, fn in rows:
        lines.append(f"{label:<28}" + "".join(f"{fn(r):>12}" for _, r in cols))
    if "creates_floor" in entry:
        floor = entry["creates_floor"]
        lines.append(f"the release's creates alone, no portal work ({floor['processes']} processes × "
                     f"{floor['threads']} threads): p50/p95/max {_ms(floor['answered_seconds'], 'p50')}/"
                     f"{_ms(floor['answered_seconds'], 'p95')}/{_ms(floor['answered_seconds'], 'max')} s, "
                     f"{floor['per_second']} a second")
    for name, key in PORTAL_PHASES.values():
        if key in entry:
            lines.append(f"goals ({name}): " + "; ".join(f"{k} {'met' if g['met'] else 'NOT met'} ({g['value']})"
                                                        for k, g in entry[key].items()))
    return "\n".join(lines)


def table(result: dict) -> str:
    parts = []
    for entry in result["runs"]:
        if any(key in entry for key in PORTAL_PHASES):
            parts.append(table_one(entry))
        if "same_region" in entry:
            parts.append(same_region.table(entry))
    return "\n\n".join(parts)
