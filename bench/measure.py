"""What the transfer benchmarks measure, shared by their phases (`bench.transfers`,
`bench.same_region`, `bench.faults`): the sandbox's call log and counters, percentiles, the
workers' CPU, suspending the workers until the clock starts, waiting for a phase to end and the
summary every phase reports."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict

import django_rq
import psutil
from rq import Worker
from rq.suspension import suspend

from bench import cores, load
from transfers.services import laps

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
        self.refused: Counter = Counter()  # "Action code" -> how many calls the sandbox answered with an error
        # Each look (a poll): (time, account id, action, ids asked, how many it saw ended first)
        self.looks: list[tuple[float, str, str, int, int]] = []
        self._orig = sandbox.oapi.call
        sandbox.oapi.call = self._call

    def clear(self) -> None:
        with self.lock:
            self.calls, self.task_seen, self.image_seen, self.created, self.task_created = [], {}, {}, {}, {}
            self.looks = []
            self.refused = Counter()

    @staticmethod
    def purpose(action: str, params: dict) -> str:
        """create | lookup (find-before-create) | poll (watching known ids) | tag | grant | revoke
        (UpdateImage's launch permission Additions, Removals) | other."""
        filters = params.get("Filters") or {}
        if action in ("CreateImage", "CreateImageExportTask"):
            return "create"
        if action == "CreateTags":
            return "tag"
        if action == "UpdateImage":
            permissions = params.get("PermissionsToLaunch") or {}
            return "grant" if "Additions" in permissions else "revoke" if "Removals" in permissions else "other"
        if action == "ReadImages":
            return "poll" if "ImageIds" in filters else "lookup"
        if action == "ReadImageExportTasks":
            return "poll" if "TaskIds" in filters else "lookup"
        return "other"

    def _call(self, account, action, params, *args, **kwargs):
        try:
            body = self._orig(account, action, params, *args, **kwargs)
        except Exception as exc:  # counted by the sandbox as well: the action ran and said no
            with self.lock:
                self.calls.append((time.time(), account.account_id, action, self.purpose(action, params)))
                self.refused[f"{action} {getattr(exc, 'code', type(exc).__name__)}"] += 1
            raise
        now = time.time()
        with self.lock:
            purpose = self.purpose(action, params)
            self.calls.append((now, account.account_id, action, purpose))
            seen = 0
            if action == "ReadImageExportTasks":
                for task in body.get("ImageExportTasks") or []:
                    if task.get("State") == "completed" and task["TaskId"] not in self.task_seen:
                        self.task_seen[task["TaskId"]] = now
                        seen += 1
            elif action == "ReadImages":
                for image in body.get("Images") or []:
                    if image.get("State") == "available" and image["ImageId"] not in self.image_seen:
                        self.image_seen[image["ImageId"]] = now
                        seen += 1
            if purpose == "poll":
                ids = (params.get("Filters") or {}).get("TaskIds" if action == "ReadImageExportTasks" else "ImageIds")
                self.looks.append((now, account.account_id, action, len(ids or ()), seen))
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

    def looks_summary(self, start: float, end: float) -> dict:
        """Per action: the looks made, those that saw nothing end first (wasted: another look
        would have seen the same), the ids each asked about and the ends each saw first; and how
        many seconds apart the looks at one account came (p50)."""
        with self.lock:
            looks = [look for look in self.looks if start <= look[0] <= end]
        out = {}
        for action in sorted({look[2] for look in looks}):
            mine = [look for look in looks if look[2] == action]
            gaps, last = [], {}
            for t, account_id, _, _, _ in mine:
                if account_id in last:
                    gaps.append(t - last[account_id])
                last[account_id] = t
            out[action] = {
                "looks": len(mine), "saw_nothing_new": sum(look[4] == 0 for look in mine),
                "ids_per_look": round(sum(look[3] for look in mine) / len(mine), 1),
                "new_ends_per_look": round(sum(look[4] for look in mine) / len(mine), 2),
                "seconds_between_looks_at_an_account": stats(gaps),
                "by_account": dict(Counter(look[1] for look in mine)),
            }
        return out

    def window(self, start: float, end: float) -> list[tuple[float, str, str, str]]:
        with self.lock:
            return [c for c in self.calls if start <= c[0] <= end]


# What CallLog.purpose names, in the order the tables print them.
PURPOSES = ("create", "lookup", "poll", "tag", "grant", "revoke", "other")


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
    return sum(cores.tree_cpu(proc.pid) for _, proc in procs.procs)


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
    # An idle worker blocks on its queues until a job comes (the reconciler's every 30 s, which
    # one worker may take twice in a row): one harmless job per worker wakes each to notice. Those
    # a suspended worker leaves run when the workers resume.
    queue = django_rq.get_queue("default", connection=conn)
    for _ in range(n):
        queue.enqueue("time.sleep", 0, result_ttl=0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(w.get_state() == "suspended" for w in Worker.all(connection=conn)) >= n:
            return
        if procs.dead():
            raise RuntimeError(f"a worker stopped: {procs.dead()} (logs in {procs.log_dir})")
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not acknowledge the suspension within {timeout}s")


# --- a phase's figures ----------------------------------------------------------------------------


def spread(calls) -> dict:
    """Peak calls in any one second, per account (sandbox account id)."""
    per = defaultdict(Counter)
    for t, account_id, _, _ in calls:
        per[account_id][int(t)] += 1
    peaks = {account_id: max(c.values()) for account_id, c in per.items()}
    return {"peak_calls_per_second_per_account": max(peaks.values(), default=0), "by_account": peaks}


def _first_creates(handoffs: list[tuple[float, float, str]]) -> dict[float, float]:
    """When each look's first create went: ends seen by one look share its answer's time."""
    first: dict[float, float] = {}
    for seen, created, _ in handoffs:
        first[seen] = min(first.get(seen, created), created)
    return first


def handoff_windows(handoffs: list[tuple[float, float, str]], *, creates_only: bool = False,
                    ) -> list[tuple[float, float]]:
    """Each look's hand-off as a span of time: from its answer (or, ``creates_only``, from the
    first create it led to) to the last."""
    last: dict[float, float] = {}
    for seen, created, _ in handoffs:
        last[seen] = max(last.get(seen, created), created)
    first = _first_creates(handoffs) if creates_only else {seen: seen for seen in last}
    return sorted((first[seen], end) for seen, end in last.items())


def handoff_parts(handoffs: list[tuple[float, float, str]], *, per_second: int, processes: int,
                  shared: bool = True) -> dict:
    """Where a hand-off's time goes. Each (export seen completed, its import's create, the
    recipient account) is split at the first create its look led to: before it, the portal's own
    work (manifests read, the database); after it, the wait in line (the account's pace serves
    the creates of one look in turn). Ends seen by one look share its answer's time.

    ``floor``: the hand-off no scheduler could beat once the ends were seen when they were, with
    only the creates paying the pace (no look, tag or export start sharing it, no work of the
    portal's own), at the account's allowance: the shared pace's, or one process's when each
    process paces itself (a burst is started by the process whose look saw it). Then also
    ``floor_<N>_processes``: with every process's allowance at once, what sharing would allow."""
    first = _first_creates(handoffs)
    per_account = Counter((seen, account) for seen, _, account in handoffs)
    ends = [(seen, account) for seen, _, account in handoffs]
    return {"to_first_create": stats(first[seen] - seen for seen, _, _ in handoffs),
            "in_line": stats(created - first[seen] for seen, created, _ in handoffs),
            "creates_per_look_and_account": stats(per_account.values()),
            "floor": stats(pace_floor(ends, per_second)),
            **({} if shared else {f"floor_{processes}_processes": stats(pace_floor(ends, per_second * processes))}),
            "per_second": per_second, "processes": processes, "pace_shared": shared}


def handoff_laps(log_dir, started: float, ended: float) -> dict:
    """Where the hand-offs' time went inside the sweeps that made them, as the workers logged it
    (transfers/services/laps.py), for the sweeps between ``started`` and ``ended``: each part's
    figures over the sweeps, and ``first_start_done`` (from the sweep's start to its first
    import started) over the sweeps that started one."""
    found = []
    for path in sorted(log_dir.glob("worker-*.log")):
        with open(path, errors="replace") as lines:
            found += [entry for entry in map(laps.parse, lines) if entry and started <= entry["at"] <= ended]
    parts = sorted({name for entry in found for name in entry} - {"at", "imports"})
    return {"sweeps": len(found), "imports": sum(entry["imports"] for entry in found),
            **{name: stats(entry[name] for entry in found if name in entry) for name in parts}}


def handoff_by_account(handoffs: list[tuple[float, float, str]]) -> dict:
    """The hand-off's figures for each recipient OUTSCALE account (``handoffs`` as handoff_parts
    takes them), the accounts that received the most first: a workload that sends many imports
    into one account saturates that account's pace, and its figures say how much of the p95 that
    account alone makes."""
    by = defaultdict(list)
    for seen, created, account in handoffs:
        by[account].append(created - seen)
    return {account: stats(lags) for account, lags in sorted(by.items(), key=lambda kv: -len(kv[1]))}


def waited_behind(handoffs: list[tuple[float, float, str]], calls, *, least: float = 0.5,
                  window: float = 1.0) -> dict:
    """What the creates that waited in line waited behind. For each create made ``least`` seconds
    or more after its look's first (``handoffs`` as handoff_parts takes them, with the sandbox's
    account ids), the calls its account received (``calls``: (time, account, action, purpose))
    in the ``window`` before it, by action: on average per such create, and how many creates
    that was. Other creates there mean the account's allowance went to creates (the burst, or
    other looks' bursts into the same account); looks, tags or export starts there would mean
    they held the creates back."""
    first = _first_creates(handoffs)
    by_account = defaultdict(list)
    for t, account, action, _ in calls:
        by_account[account].append((t, action))
    behind, late = Counter(), 0
    for seen, created, account in handoffs:
        if created - first[seen] < least:
            continue
        late += 1
        behind.update(action for t, action in by_account[account] if created - window <= t < created)
    return {"creates": late, "least_seconds": least,
            "calls_in_the_second_before": {a: round(c / late, 2) for a, c in behind.most_common()} if late else {}}


def pace_floor(ends: list[tuple[float, str]], per_second: int, window: float = 1.0) -> list[float]:
    """The least wait of each (seen, account) at ``per_second`` calls per ``window`` per account,
    served in the order seen as soon as the window allows (outscale.pace's rule, nothing else)."""
    waits = []
    by_account = defaultdict(list)
    for seen, account in ends:
        by_account[account].append(seen)
    for times in by_account.values():
        slots: list[float] = []
        for seen in sorted(times):
            at = seen if len(slots) < per_second else max(seen, slots[-per_second] + window)
            slots.append(at)
            waits.append(at - seen)
    return waits


def summary(*, kind, n, completed, failed, calls: Counter, cpu, bench_seconds, started, ended, window, detection,
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


def wait_final(done_count, n: int, timeout: float, procs: load.Processes, label: str, log) -> float:
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
