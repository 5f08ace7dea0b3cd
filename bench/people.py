"""People who think, driven by Locust (`bench/locustfile.py`) in a process of its own, and what
their samples say: percentiles per page kind, each kind's p95 under load against its p95 with
nobody else on the machine (goal: at most 2×), errors (goal: none), and the chart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from matplotlib.figure import Figure

from bench.users import Persona, percentiles

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
RATIO_GOAL = 2.0  # p95 under load at most twice the p95 with nobody else on the machine
# Sign-ins happen once per person, in the first seconds of the load phase (everyone arriving at
# once): reported, but a page kind a person meets while working is what the goal is about.
NOT_PAGES = ("login_form", "login")


@dataclass
class Phase:
    name: str  # "load", or "baseline" and "after": a person alone (both roles, every page kind in turn)
    users: int
    seconds: float
    think: tuple[float, float]
    spawn_rate: float = 10.0
    clicks: int | None = None  # each person's clicks once everyone has signed in, then quit (seconds: a cap)


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each group of processes (with their children, except
    those of another group: the web and the workers are children of the bench process, which must
    not count them again), of every PostgreSQL server process, and of the whole machine (busy
    time of every core)."""
    out: dict[str, float] = {}
    roots = {pid for pids in groups.values() for pid in pids}

    def used(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
            return times.user + times.system
        except psutil.Error:
            return 0.0

    def postgres(proc: psutil.Process) -> float:
        # A backend that has ended is counted in its postmaster's children's times (it reaps them):
        # a worker's sweep threads open connections that last one sweep.
        try:
            if psutil.Process(proc.info["ppid"]).name() == "postgres":
                return used(proc)
            times = proc.cpu_times()
            return used(proc) + times.children_user + times.children_system
        except psutil.Error:
            return 0.0

    def tree(proc: psutil.Process) -> float:
        try:
            children = proc.children()
        except psutil.Error:
            children = []
        return used(proc) + sum(tree(child) for child in children if child.pid not in roots)

    for name, pids in groups.items():
        total = 0.0
        for pid in pids:
            try:
                total += tree(psutil.Process(pid))
            except psutil.Error:
                continue
        out[name] = total
    out["postgresql"] = sum(postgres(p) for p in psutil.process_iter(["name", "ppid"]) if p.info["name"] == "postgres")
    machine = psutil.cpu_times()
    out["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return out


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used on average between two ``cpu_seconds`` readings, per group."""
    return {name: round((after[name] - before[name]) / seconds, 2) for name in after} if seconds > 0 else {}


def plan_file(path: Path, people: list[Persona], *, mode: str, users: int, think: tuple[float, float],
              out: Path, clicks: int | None = None) -> Path:
    path.write_text(json.dumps({"people": [asdict(p) for p in people], "mode": mode, "users": users,
                                "think": list(think), "out": str(out), "clicks": clicks}))
    return path


def start(phase: Phase, *, base_url: str, people: list[Persona], work_dir: Path, env: dict | None = None) -> tuple:
    """Locust, headless, for the phase: (the process, the samples file it writes when it quits)."""
    samples = work_dir / f"locust-{phase.name}-samples.json"
    plan = plan_file(work_dir / f"locust-{phase.name}-plan.json", people,
                     mode="load" if phase.name == "load" else "baseline", users=phase.users, think=phase.think,
                     out=samples, clicks=phase.clicks)
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base_url,
            "--users", str(phase.users), "--spawn-rate", str(phase.spawn_rate),
            "--run-time", f"{max(1, round(phase.seconds))}s", "--stop-timeout", "30", "--only-summary",
            "--loglevel", "WARNING", "--exit-code-on-error", "0", "--skip-log-setup"]
    log = open(work_dir / f"locust-{phase.name}.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, env={**(env or os.environ), "OMIPORTAL_LOCUST_PLAN": str(plan)},  # noqa: S603
                            cwd=work_dir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, samples


def finish(proc: subprocess.Popen, samples: Path, *, timeout: float) -> tuple[list, list]:
    """Wait for Locust; its samples split at the moment the last person had signed in: (while
    they arrived, signing in all at once; after, the steady load the goals are about)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # Locust writes what it has on SIGTERM too (its quitting event)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 5
    while not samples.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not samples.exists():
        raise RuntimeError(f"Locust wrote no samples (exit {proc.returncode}); see {samples.parent}/locust-*.log")
    written = json.loads(samples.read_text())
    arrived = written.get("everyone_arrived_at") or 0
    rows = written["samples"]
    return [r for r in rows if r[4] < arrived], [r for r in rows if r[4] >= arrived]


def summarize(samples: list) -> dict:
    """Per page kind: percentiles, statuses, errors (with a few examples)."""
    by_kind: dict[str, dict] = {}
    for kind, seconds, status, error, _ in samples:
        entry = by_kind.setdefault(kind, {"times": [], "statuses": {}, "errors": 0, "error_samples": []})
        entry["times"].append(seconds)
        entry["statuses"][str(status)] = entry["statuses"].get(str(status), 0) + 1
        if error:
            entry["errors"] += 1
            if len(entry["error_samples"]) < 5:
                entry["error_samples"].append(error)
    return {kind: {**percentiles(e["times"]), "statuses": e["statuses"], "errors": e["errors"],
                   "error_samples": e["error_samples"]} for kind, e in sorted(by_kind.items())}


def _ratio(under: dict, alone: dict) -> float | None:
    return round(under["p95_ms"] / alone["p95_ms"], 2) if alone.get("count") and alone["p95_ms"] > 0 else None


def compare(baseline: dict, load: dict, after: dict | None = None) -> list[dict]:
    """One row per page kind seen under load: its p95 then and alone, the ratio and the goals; with
    ``after`` (one person alone again once the transfers and the people are done, on the data the
    run left), its p95 then and the ratio to it too."""
    rows = []
    for kind, under in load.items():
        alone = baseline.get(kind, {})
        ratio = _ratio(under, alone)
        again = None if after is None else after.get(kind, {})
        extra = {} if again is None else {"after_count": again.get("count", 0), "after_p95_ms": again.get("p95_ms"),
                                          "ratio_p95_after": _ratio(under, again)}
        rows.append({
            "kind": kind, "page": kind not in NOT_PAGES,
            "baseline_count": alone.get("count", 0), "baseline_p50_ms": alone.get("p50_ms"),
            "baseline_p95_ms": alone.get("p95_ms"),
            "count": under["count"], "p50_ms": under["p50_ms"], "p95_ms": under["p95_ms"], "p99_ms": under["p99_ms"],
            "errors": under["errors"] + alone.get("errors", 0), "ratio_p95": ratio,
            "met": ratio is not None and ratio <= RATIO_GOAL and under["errors"] + alone.get("errors", 0) == 0,
            **extra,
        })
    return rows


def within_after(rows: list[dict]) -> tuple[bool, list[str]]:
    """Whether every page kind's p95 under load was within the goal's ratio of its p95 alone
    after the run, and the kinds with no request after it to compare (accept: no offer left)."""
    measured = [r for r in rows if r.get("ratio_p95_after") is not None]
    return (all(r["ratio_p95_after"] <= RATIO_GOAL for r in measured),
            [r["kind"] for r in rows if r.get("ratio_p95_after") is None])


def table(rows: list[dict]) -> str:
    after = any("ratio_p95_after" in r for r in rows)
    lines = [f"{'page kind':<14} {'alone n':>7} {'p50':>7} {'p95':>7} | {'load n':>7} {'p50':>7} {'p95':>7} "
             f"{'p99':>7} {'err':>4} {'p95 ×':>6}" + (f" | {'after p95':>9} {'×':>5}" if after else "")
             + f"  goal (≤{RATIO_GOAL:g}×, 0 errors)"]

    def ms(value) -> str:
        return "-" if value is None else f"{value:.0f}"

    def times(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in rows:
        goal = ("met" if r["met"] else "NOT met") if r["page"] else "(sign-in, not a goal)"
        if r["page"] and r["ratio_p95"] is None:
            goal = "no baseline"
        lines.append(f"{r['kind']:<14} {r['baseline_count']:>7} {ms(r['baseline_p50_ms']):>7} "
                     f"{ms(r['baseline_p95_ms']):>7} | {r['count']:>7} {ms(r['p50_ms']):>7} {ms(r['p95_ms']):>7} "
                     f"{ms(r['p99_ms']):>7} {r['errors']:>4} "
                     f"{times(r['ratio_p95']):>6}"
                     + (f" | {ms(r.get('after_p95_ms')):>9} {times(r.get('ratio_p95_after')):>5}" if after else "")
                     + f"  {goal}")
    return "\n".join(lines)


def draw(result: dict, path: Path) -> Path:
    """p95 per page kind, alone and under load, with the 2× line per kind."""
    rows = [r for r in result["comparison"] if r["page"]]
    fig = Figure(figsize=(10, 4.5), dpi=100)
    ax = fig.subplots()
    xs = range(len(rows))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [r["baseline_p95_ms"] or 0 for r in rows], width,
           color="tab:gray", label="p95, one person (nobody else)")
    ax.bar([x + width / 2 for x in xs], [r["p95_ms"] for r in rows], width,
           color=["tab:blue" if r["met"] else "tab:red" for r in rows],
           label=f"p95, {result['options']['users']} people + transfers running")
    for x, r in zip(xs, rows, strict=True):
        if r["baseline_p95_ms"]:
            ax.hlines(RATIO_GOAL * r["baseline_p95_ms"], x - width, x + width, colors="black", linestyles=":")
    ax.plot([], [], color="black", linestyle=":", label=f"goal: {RATIO_GOAL:g}× the p95 alone")
    ax.set_xticks(list(xs), [r["kind"] for r in rows], rotation=20, fontsize=8)
    ax.set_ylabel("milliseconds (log scale)")
    ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    o = result["options"]
    fig.suptitle(f"bench_load: {o['users']} people thinking {o['think'][0]:g}-{o['think'][1]:g} s, "
                 f"{o['transfers']} transfers, {o['workers']} RQ workers, gunicorn "
                 f"{' '.join(result['gunicorn'])}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
