"""Where the machine's CPU went during `bench_transfers`'s hand-offs: the whole machine, the
workers (with their children), this process (the sandbox answering every call, and the call log),
PostgreSQL (the postmaster with its live and reaped backends) and Redis, a few times a second.

A hand-off is a burst: hundreds of creates within a few seconds. Per-second CPU over the whole
run says nothing of it, and neither does CPU per transfer. What tells whether a burst waits on the
portal or on the machine is the cores each part kept busy between the export's end being seen and
its last create reaching the cloud (`in_windows`): a machine near all its cores busy has nothing
left to give, and the share the workers took is what the portal's own work costs there.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psutil

GROUPS = ("workers", "sandbox_and_bench", "postgresql", "redis")


def _cpu(proc: psutil.Process, *, reaped: bool = False) -> float:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        t = proc.cpu_times()
        return t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)
    return 0.0


def tree_cpu(pid: int) -> float:
    """A process's CPU seconds with its live children's and the children it has reaped."""
    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    return _cpu(proc, reaped=True) + sum(_cpu(child) for child in children)


def _named(name: str) -> list[int]:
    """The oldest process of this name whose parent is not of the same name (the postmaster, the
    redis server), or none."""
    found = []
    for proc in psutil.process_iter(["name", "ppid", "pid"]):
        if proc.info["name"] == name:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if psutil.Process(proc.info["ppid"]).name() != name:
                    found.append(proc.info["pid"])
    return found


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class CpuSampler:
    """Cumulative CPU seconds per group, every ``every`` seconds, in a thread between ``start()``
    and ``stop()``; ``procs``: bench.load.Processes (the workers)."""

    def __init__(self, procs, *, every: float = 0.25) -> None:
        self.procs, self.every = procs, every
        self.samples: list[tuple[float, float, dict[str, float]]] = []  # (time.time(), machine, groups)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._servers = {"postgresql": _named("postgres"), "redis": _named("redis-server")}

    def sample(self) -> None:
        each = {name: tree_cpu(proc.pid) for name, proc in self.procs.procs}
        groups = {
            "workers": sum(each.values()), **each,
            "sandbox_and_bench": _cpu(psutil.Process()),
            **{group: sum(tree_cpu(pid) for pid in pids) for group, pids in self._servers.items()},
        }
        self.samples.append((time.time(), _machine_busy(), groups))

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def start(self) -> CpuSampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="bench-cpu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> CpuSampler:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.sample()
        return self


def merge(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping (start, end) windows made one."""
    merged: list[list[float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def in_windows(samples, windows: list[tuple[float, float]], *, cores: int) -> dict:
    """The average cores each group (and each worker, by name) kept busy within these windows
    (merged), counted between the samples that enclose each: a window shorter than the sampling
    step is widened to it."""
    seconds, machine, groups = 0.0, 0.0, dict.fromkeys(samples[0][2] if samples else GROUPS, 0.0)
    for start, end in merge(windows):
        before = [s for s in samples if s[0] <= start]
        after = [s for s in samples if s[0] >= end]
        if not before or not after:
            continue
        first, last = before[-1], after[0]
        seconds += last[0] - first[0]
        machine += last[1] - first[1]
        for group in groups:
            groups[group] += last[2].get(group, 0.0) - first[2].get(group, 0.0)
    if seconds <= 0:
        return {}
    return {"seconds": round(seconds, 2), "cores": cores,
            "machine_cores": round(machine / seconds, 2),
            **{f"{group}_cores": round(value / seconds, 2) for group, value in groups.items()}}
