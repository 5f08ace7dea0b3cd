"""What a phase of `bench_transfers` holds, per worker: memory, PostgreSQL connections, and the
Redis memory of the run, sampled while it runs (`Sampler`), for README "Scaling out" as much as
for the transfers' figures.

- **Peak RSS** of each worker process with its children (the rq scheduler), psutil, every second.
- **PostgreSQL connections** of each worker: the rows of `pg_stat_activity` whose client port is
  one of the worker's (or its children's) TCP connections to the server, so a thread's own
  connection counts for the worker that opened it; peak and at the end.
- **Redis**: `used_memory` of the server at the start and its peak while sampling (the whole
  server: other databases of a shared server count too), and the bytes held by this Redis
  database's own keys (`MEMORY USAGE` of every key, every `key_every` seconds): what the run's
  queues, jobs and results cost, whatever else shares the server.
"""

from __future__ import annotations

import contextlib
import threading
import time

import django_rq
import psutil
from django.db import connections

MB = 1024 * 1024


def _tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _ports(procs: list[psutil.Process], server_port: int) -> set[int]:
    """Local ports of these processes' TCP connections to PostgreSQL."""
    ports = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == server_port:
                    ports.add(conn.laddr.port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return ports


class Sampler:
    """Samples the workers (``procs``: bench.load.Processes) in a thread between ``start()`` and ``stop()``."""

    def __init__(self, procs, *, every: float = 1.0, key_every: float = 15.0) -> None:
        self.procs, self.every, self.key_every = procs, every, key_every
        self.redis = django_rq.get_connection("default")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.workers: dict[str, dict] = {}
        self.redis_start = self.redis_peak = 0
        self.db_bytes_start = self.db_bytes_peak = self.db_keys_peak = 0
        self.samples = 0

    def _db_bytes(self) -> tuple[int, int]:
        """(bytes, keys) of this Redis database's keys."""
        keys = list(self.redis.scan_iter(count=1000))
        total = 0
        for start in range(0, len(keys), 1000):
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[start:start + 1000]:
                pipe.memory_usage(key)
            total += sum(v or 0 for v in pipe.execute())
        return total, len(keys)

    def _pg_counts(self, by_ports: dict[str, set[int]]) -> dict[str, int]:
        wanted = set().union(*by_ports.values()) if by_ports else set()
        if not wanted:
            return {name: 0 for name in by_ports}
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT client_port FROM pg_stat_activity WHERE client_port = ANY(%s)", [list(wanted)])
            live = {row[0] for row in cursor.fetchall()}
        return {name: len(ports & live) for name, ports in by_ports.items()}

    def sample(self, *, keys: bool = False) -> None:
        server_port = int(connections["default"].settings_dict.get("PORT") or 5432)
        trees = {name: _tree(proc.pid) for name, proc in self.procs.procs}
        ports = {name: _ports(tree, server_port) for name, tree in trees.items()}
        pg = self._pg_counts(ports)
        for name, tree in trees.items():
            entry = self.workers.setdefault(name, {"peak_rss_mb": 0.0, "peak_pg_connections": 0,
                                                   "pg_connections_at_end": 0, "rss_mb_at_end": 0.0})
            rss = _rss(tree) / MB
            entry["peak_rss_mb"] = round(max(entry["peak_rss_mb"], rss), 1)
            entry["rss_mb_at_end"] = round(rss, 1)
            entry["peak_pg_connections"] = max(entry["peak_pg_connections"], pg[name])
            entry["pg_connections_at_end"] = pg[name]
        self.redis_peak = max(self.redis_peak, int(self.redis.info("memory")["used_memory"]))
        if keys:
            used, count = self._db_bytes()
            self.db_bytes_peak, self.db_keys_peak = max(self.db_bytes_peak, used), max(self.db_keys_peak, count)
        self.samples += 1

    def _loop(self) -> None:
        next_keys = time.monotonic() + self.key_every
        try:
            while not self._stop.wait(self.every):
                due = time.monotonic() >= next_keys
                if due:
                    next_keys = time.monotonic() + self.key_every
                self.sample(keys=due)
        finally:
            connections.close_all()  # this thread's own connection

    def start(self) -> Sampler:
        self.redis_start = int(self.redis.info("memory")["used_memory"])
        self.db_bytes_start, _ = self._db_bytes()
        self.sample(keys=True)
        self._thread = threading.Thread(target=self._loop, name="bench-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.sample(keys=True)
        return self.report()

    def report(self) -> dict:
        return {
            "workers": self.workers,
            "worker_peak_rss_mb_max": max((w["peak_rss_mb"] for w in self.workers.values()), default=0),
            "worker_peak_pg_connections_max": max((w["peak_pg_connections"] for w in self.workers.values()),
                                                  default=0),
            "redis_used_memory_start_mb": round(self.redis_start / MB, 2),
            "redis_used_memory_peak_mb": round(self.redis_peak / MB, 2),
            "redis_used_memory_growth_peak_mb": round((self.redis_peak - self.redis_start) / MB, 2),
            "redis_db_keys_bytes_start_mb": round(self.db_bytes_start / MB, 2),
            "redis_db_keys_bytes_peak_mb": round(self.db_bytes_peak / MB, 2),
            "redis_db_keys_peak": self.db_keys_peak,
            "samples": self.samples,
        }
