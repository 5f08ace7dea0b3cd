"""`manage.py bench_pages`: page costs, exports and verification over a large audit trail.

For each size (default 10,000 and 1,000,000 audit events, with a tenth as many shares):

1. A database of its own (``<name>_<size>`` beside the one ``DATABASE_URL`` names, created and
   migrated if missing): the chain head can only move one step at a time, so a chain is filled from
   empty, never grown. A database that already holds a filled bench trail of that size is reused.
   Every database is refused if it holds teams or people the benchmarks did not create.
2. ``fill.fill``: teams, people, shares and a valid hash chain (COPY on PostgreSQL).
3. Pages, in process with Django's test client (signed in as a team approver, a team auditor, a
   compliance officer, and a verified staff user for the admin): queries per request
   (``CaptureQueriesContext``) and latency percentiles over ``requests`` timed requests after two
   warm-ups. The slowest queries of each page are kept, with their SQL.
4. The site-wide CSV export as a compliance officer: rows per second and the process's peak RSS
   growth (psutil, sampled every 10 ms) while the streamed body is consumed; beside it
   ``psql -c "\\copy (SELECT the same columns ... ORDER BY seq) TO file CSV"`` (PostgreSQL only).
5. ``integrity.run_verification`` (what ``audit_verify`` runs, with an empty checkpoint store)
   in events per second, beside a bare loop that reads the same columns in ``seq`` order with a
   server-side cursor and SHA-256s each row chained on the previous digest.

Steps 4 and 5 run ``rounds`` times (default 2), each measurement alternated with its baseline; the
fastest round of each side is compared, so a burst of load from other work on the machine during
one round does not decide the ratio. Every round is kept in the results; memory growth is the
largest of the rounds.

Results go to ``<out>/pages.json`` (``bench-results/`` unless ``--out`` says otherwise; the committed
figures are ``docs/performance/pages.json``) and a printed table. Not a test: no
goal fails the run; the table says which are met.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import psutil
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import integrity
from audit.download_format import DOWNLOAD_COLUMNS
from audit.models import AuditChainHead, AuditEvent
from audit.stored import stored_rows
from bench import in_force
from bench.fill import World, ensure_world, fill
from bench.load import BASE_DIR, check_throwaway_database, database_url
from bench.users import percentiles
from transfers.models import Share

GOAL_QUERIES = 12
GOAL_LIST_VS_SMALL = 1.5
GOAL_EXPORT_MB = 50
GOAL_EXPORT_VS_COPY = 0.3
GOAL_VERIFY_VS_BARE = 0.5
PAGE_BUDGET_SECONDS = 20.0  # stop timing a page after this long (at least MIN_REQUESTS requests)
MIN_REQUESTS = 5


@dataclass
class Options:
    sizes: tuple[int, ...] = (10_000, 1_000_000)
    shares_per_event: float = 0.1
    requests: int = 30
    export: bool = True
    verify: bool = True
    out_dir: Path | None = BASE_DIR / "bench-results"  # docs/performance holds the committed pages.json
    rounds: int = 2  # export and verification rounds (alternated with their baselines; the fastest counts)
    yes: bool = False
    separate_databases: bool = True  # False: measure in the current database (tests)


# --- Databases ----------------------------------------------------------------------------------------


def _sized_name(base: str, size: int, vendor: str) -> str:
    label = f"{size // 1_000_000}m" if size % 1_000_000 == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)
    if vendor == "sqlite":
        path = Path(base)
        return str(path.with_name(f"{path.stem}-{label}{path.suffix}"))
    return f"{base}_{label}"


@contextlib.contextmanager
def sized_database(size: int, *, yes: bool, log: Callable[[str], None]) -> Iterator[str]:
    """Point the default connection at the database for ``size`` (created and migrated if needed)."""
    settings_dict = connection.settings_dict
    base = settings_dict["NAME"]
    name = _sized_name(base, size, connection.vendor)
    if connection.vendor == "postgresql":
        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                log(f"Creating database {name}")
                cursor.execute(f"CREATE DATABASE {connection.ops.quote_name(name)}")
    connection.close()
    settings_dict["NAME"] = name
    try:
        check_throwaway_database(yes=yes)
        call_command("migrate", verbosity=0, interactive=False)
        yield name
    finally:
        connection.close()
        settings_dict["NAME"] = base


def _prepare(size: int, options: Options, log: Callable[[str], None]) -> tuple[World, dict]:
    head = AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID).values_list("seq", flat=True).first()
    last = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    if last is not None:
        if head != last or not size <= last <= size * 1.1:
            raise ValueError(f"This database's audit trail holds {last:,} events (chain head at #{head}), not a "
                             f"finished fill of about {size:,}: drop it (it is a throwaway) and run again.")
        log(f"Reusing the filled trail ({last:,} events)")
        return ensure_world(), {"reused": True}
    log(f"Filling {size:,} audit events and {int(size * options.shares_per_event):,} shares")
    world, timings = fill(events=size, shares=int(size * options.shares_per_event), log=log)
    log(f"  filled in {timings['total_seconds']} s")
    return world, timings


# --- Clients ------------------------------------------------------------------------------------------


def _host() -> str:
    hosts = [h for h in settings.ALLOWED_HOSTS if h and not h.startswith(".") and h != "*"]
    return hosts[0] if hosts else "localhost"


def client_for(user, *, verified: bool = False) -> Client:
    client = Client(HTTP_HOST=_host())
    client.force_login(user)
    if verified:
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.filter(user=user, confirmed=True).first().persistent_id
        session.save()
    return client


# --- Pages --------------------------------------------------------------------------------------------


@dataclass
class Page:
    key: str
    group: str
    client: Client
    url: str

    def get(self):
        response = self.client.get(self.url, secure=True)
        if response.status_code != 200:
            raise RuntimeError(f"{self.key}: GET {self.url} answered {response.status_code}")
        return response


def _slowest(captured, count: int = 3) -> list[dict]:
    rows = sorted(captured, key=lambda q: float(q.get("time") or 0), reverse=True)[:count]
    return [{"ms": round(float(q.get("time") or 0) * 1000, 1), "sql": q["sql"][:600]} for q in rows]


def measure_page(page: Page, requests: int) -> dict:
    for _ in range(2):
        page.get()
    timings, queries, slowest = [], 0, []
    started = time.perf_counter()
    while len(timings) < requests:
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            page.get()
            timings.append(time.perf_counter() - began)
        if len(captured) >= queries:
            queries, slowest = len(captured), _slowest(captured.captured_queries)
        if len(timings) >= MIN_REQUESTS and time.perf_counter() - started > PAGE_BUDGET_SECONDS:
            break
    return {"group": page.group, "url": page.url, "queries": queries, **percentiles(timings),
            "slowest_queries": slowest}


def pages_for(world: World) -> list[Page]:
    big = world.big
    people = world.members[big.pk]
    approver, auditor = client_for(people["approver"]), client_for(people["auditor"])
    officer, staff = client_for(world.compliance), client_for(world.staff, verified=True)
    head = AuditChainHead.objects.get(pk=AuditChainHead.SINGLETON_ID).seq
    deep = max(2, head // 2)
    team_list = reverse("audit:event-list", kwargs={"team_id": big.public_id})
    site_list = reverse("audit:site-event-list")
    shares = reverse("transfers:share-list", kwargs={"team_id": big.public_id})
    share_count = big.shares.count()
    event = AuditEvent.objects.filter(team_id=big.pk, target_type="transfers.share").order_by("-seq").first()
    admin = reverse("admin:audit_auditevent_changelist")

    def q(url: str, **params) -> str:
        return f"{url}?{urlencode(params)}" if params else url

    pages = [
        Page("dashboard", "dashboard", approver, reverse("transfers:dashboard", kwargs={"team_id": big.public_id})),
        Page("shares", "shares", approver, shares),
        Page("shares_deep", "shares", approver, q(shares, page=max(1, share_count // 25 // 2))),
        Page("shares_state", "shares", approver, q(shares, state="failed")),
        Page("approvals", "shares", approver, reverse("transfers:approval-list", kwargs={"team_id": big.public_id})),
        Page("inbox", "shares", approver, reverse("transfers:inbox", kwargs={"team_id": big.public_id})),
        Page("audit_site", "audit", officer, site_list),
        Page("audit_site_deep", "audit", officer, q(site_list, before=deep)),
        Page("audit_site_action", "audit", officer, q(site_list, action="share.approved")),
        Page("audit_site_denied", "audit", officer, q(site_list, outcome="denied")),
        Page("audit_site_team", "audit", officer, q(site_list, team=str(big.public_id))),
        Page("audit_site_text", "audit", officer, q(site_list, q="copy-")),
        Page("audit_team", "audit", auditor, team_list),
        Page("audit_team_deep", "audit", auditor, q(team_list, before=deep)),
        Page("audit_team_action", "audit", auditor, q(team_list, action="share.")),
        Page("admin_changelist", "admin", staff, admin),
        Page("admin_changelist_deep", "admin", staff, q(admin, p=max(1, head // 100 // 2))),
        Page("admin_changelist_denied", "admin", staff, q(admin, outcome__exact="denied")),
        Page("admin_changelist_search", "admin", staff, q(admin, q="copy-")),
    ]
    if event is not None:
        pages += [
            Page("event_site", "event", officer,
                 reverse("audit:site-event-detail", kwargs={"event_id": event.public_id})),
            Page("event_team", "event", auditor,
                 reverse("audit:event-detail", kwargs={"team_id": big.public_id, "event_id": event.public_id})),
        ]
    return pages


# --- Export -------------------------------------------------------------------------------------------


class RssSampler:
    """The process's peak resident memory while it runs (sampled every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.01):
        self.process, self.interval = psutil.Process(), interval
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self):
        self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def growth_mb(self) -> float:
        return round((self.peak - self.start) / 2**20, 1)


def _export_once(client: Client) -> tuple[dict, int]:
    url = reverse("audit:site-event-download") + "?format=csv"
    lines = size = 0
    with RssSampler() as rss:
        began = time.perf_counter()
        response = client.get(url, secure=True)
        for index, chunk in enumerate(response.streaming_content):
            lines += chunk.count(b"\n")
            size += len(chunk)
            if index % 5000 == 0:
                rss.sample()
        seconds = time.perf_counter() - began
    rows = lines - 2  # the head comment and the column names
    head_seq = int(response["Content-Disposition"].rsplit("-", 1)[1].split(".")[0])
    return {"rows": rows, "bytes": size, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
            "peak_rss_growth_mb": rss.growth_mb, "streamed": response.streaming}, head_seq


def _copy_once(head_seq: int) -> dict:
    columns = {f.attname: f.column for f in AuditEvent._meta.concrete_fields}
    names, table, seq = ", ".join(columns[name] for name in DOWNLOAD_COLUMNS), AuditEvent._meta.db_table, columns["seq"]
    select = f"SELECT {names} FROM {table} WHERE {seq} <= {head_seq} ORDER BY {seq}"  # noqa: S608 - model names
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp, "copy.csv")
        env = {**os.environ}
        if connection.settings_dict.get("PASSWORD"):
            env["PGPASSWORD"] = connection.settings_dict["PASSWORD"]
        began = time.perf_counter()
        subprocess.run(["psql", database_url(), "-v", "ON_ERROR_STOP=1", "-q", "-c",  # noqa: S603, S607
                        f"\\copy ({select}) TO '{target}' CSV"], check=True, env=env)
        copy_seconds = time.perf_counter() - began
        copy_bytes = target.stat().st_size
    return {"rows": head_seq, "bytes": copy_bytes, "seconds": round(copy_seconds, 2),
            "rows_per_second": round(head_seq / copy_seconds)}


def _fastest(runs: list[dict], key: str = "rows_per_second") -> dict:
    return max(runs, key=lambda run: run[key])


def measure_export(world: World, rounds: int = 2) -> dict:
    """The export and psql \\copy, alternated ``rounds`` times: the fastest round of each is compared
    (the machine is shared, so one slow round says little), and the largest memory growth is kept."""
    client = client_for(world.compliance)
    copies = connection.vendor == "postgresql" and shutil.which("psql") and not connection.in_atomic_block
    exports, copy_runs = [], []
    for _ in range(rounds):
        run, head_seq = _export_once(client)
        exports.append(run)
        if copies:  # (inside a transaction, as in tests, psql would not see the rows)
            copy_runs.append(_copy_once(head_seq))
    result = {**_fastest(exports), "peak_rss_growth_mb": max(run["peak_rss_growth_mb"] for run in exports),
              "streamed": all(run["streamed"] for run in exports), "rounds": exports}
    if copy_runs:
        copy = _fastest(copy_runs)
        result["psql_copy"] = {**copy, "rounds": copy_runs}
        result["vs_copy"] = round(result["rows_per_second"] / copy["rows_per_second"], 2)
    return result


# --- Verification -------------------------------------------------------------------------------------


def bare_loop(chunk_size: int = 2000) -> dict:
    """Read the columns verification reads, the way it reads them (``stored.stored_rows``), in seq
    order, and SHA-256 each row onto the last digest."""
    digest, count = b"", 0
    began = time.perf_counter()
    with stored_rows(AuditEvent.objects.order_by("seq"), chunk_size) as (rows, _hash_event):
        for row in rows:
            digest = hashlib.sha256(digest + "\x1f".join(map(str, row)).encode()).digest()
            count += 1
    seconds = time.perf_counter() - began
    return {"events": count, "seconds": round(seconds, 2), "events_per_second": round(count / seconds)}


def _verify_once() -> dict:
    with tempfile.TemporaryDirectory() as store, override_settings(
            OMIPORTAL_AUDIT_CHECKPOINT_DIR=store, OMIPORTAL_AUDIT_CHECKPOINT_BUCKET="",
            OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ=0):
        began = time.perf_counter()
        result = integrity.run_verification()
        seconds = time.perf_counter() - began
    return {"ok": result.ok, "events": result.count, "message": result.describe(), "seconds": round(seconds, 2),
            "events_per_second": round(result.count / seconds)}


def measure_verify(rounds: int = 2) -> dict:
    """Verification and the bare loop, alternated ``rounds`` times; the fastest round of each is
    compared, and the chain must be intact in every round."""
    runs, bares = [], []
    for _ in range(rounds):
        runs.append(_verify_once())
        bares.append(bare_loop())
    best, bare = _fastest(runs, "events_per_second"), _fastest(bares, "events_per_second")
    return {**best, "ok": all(run["ok"] for run in runs), "rounds": runs, "bare_loop": {**bare, "rounds": bares},
            "vs_bare": round(best["events_per_second"] / bare["events_per_second"], 2)
            if bare["events_per_second"] else None}


# --- One size, and the whole run ----------------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    database: str
    fill: dict
    rows: dict = field(default_factory=dict)
    pages: dict = field(default_factory=dict)
    export: dict | None = None
    verify: dict | None = None


def measure_size(size: int, options: Options, *, database: str = "",
                 log: Callable[[str], None] = print) -> SizeResult:
    """Fill (or reuse) the current database to ``size`` events and measure everything."""
    world, timings = _prepare(size, options, log)
    result = SizeResult(size=size, database=database or str(connection.settings_dict["NAME"]), fill=timings)
    result.rows = {"audit_events": AuditEvent.objects.count(), "shares": Share.objects.count(),
                   "big_team_shares": world.big.shares.count(),
                   "big_team_events": AuditEvent.objects.filter(team_id=world.big.pk).count()}
    for page in pages_for(world):
        result.pages[page.key] = measure_page(page, options.requests)
        row = result.pages[page.key]
        log(f"  {page.key:26} {row['queries']:3} queries  p50 {row['p50_ms']:8.1f} ms  p95 {row['p95_ms']:8.1f} ms")
    if options.export:
        result.export = measure_export(world, options.rounds)
        e = result.export
        copy = f", psql \\copy {e['psql_copy']['rows_per_second']:,}/s ({e['vs_copy']}x)" if "psql_copy" in e else ""
        log(f"  export: {e['rows_per_second']:,} rows/s, peak RSS +{e['peak_rss_growth_mb']} MB{copy}")
    if options.verify:
        result.verify = measure_verify(options.rounds)
        log(f"  verify: {result.verify['events_per_second']:,}/s, bare loop "
            f"{result.verify['bare_loop']['events_per_second']:,}/s, ok={result.verify['ok']}")
    return result


def goals(results: list[SizeResult]) -> list[dict]:
    """Each goal of the issue, with the figure that decides it."""
    out = []
    worst = max(((r.size, key, p["queries"]) for r in results for key, p in r.pages.items()
                 if p["group"] != "admin"), key=lambda item: item[2], default=None)
    if worst:
        out.append({"goal": f"at most {GOAL_QUERIES} queries per page", "met": worst[2] <= GOAL_QUERIES,
                    "figure": f"worst: {worst[1]} with {worst[2]} at {worst[0]:,}"})
    small, large = (results[0], results[-1]) if len(results) > 1 else (None, results[-1] if results else None)
    if large and "audit_site" in large.pages and "admin_changelist" in large.pages:
        ours, admin = large.pages["audit_site"]["p50_ms"], large.pages["admin_changelist"]["p50_ms"]
        out.append({"goal": "audit list no slower than the admin change list (largest size, p50)",
                    "met": ours <= admin, "figure": f"{ours} ms vs {admin} ms"})
    if small and large and "audit_site" in small.pages:
        a, b = small.pages["audit_site"]["p50_ms"], large.pages["audit_site"]["p50_ms"]
        out.append({"goal": f"audit list within {GOAL_LIST_VS_SMALL}x of its time at the smallest size (p50)",
                    "met": b <= a * GOAL_LIST_VS_SMALL, "figure": f"{b} ms vs {a} ms ({b / a:.2f}x)"})
    if large and large.export:
        e = large.export
        out.append({"goal": f"export streamed, peak memory growth under {GOAL_EXPORT_MB} MB",
                    "met": e["streamed"] and e["peak_rss_growth_mb"] < GOAL_EXPORT_MB,
                    "figure": f"{e['peak_rss_growth_mb']} MB over {e['rows']:,} rows"})
        if "vs_copy" in e:
            out.append({"goal": f"export at least {GOAL_EXPORT_VS_COPY}x the psql \\copy rate",
                        "met": e["vs_copy"] >= GOAL_EXPORT_VS_COPY,
                        "figure": f"{e['rows_per_second']:,}/s vs {e['psql_copy']['rows_per_second']:,}/s "
                                  f"({e['vs_copy']}x)"})
    if large and large.verify:
        v = large.verify
        out.append({"goal": f"verification at least {GOAL_VERIFY_VS_BARE}x the bare loop",
                    "met": bool(v["vs_bare"] and v["vs_bare"] >= GOAL_VERIFY_VS_BARE and v["ok"]),
                    "figure": f"{v['events_per_second']:,}/s vs {v['bare_loop']['events_per_second']:,}/s "
                              f"({v['vs_bare']}x), chain ok={v['ok']}"})
    return out


# The settings that change what a page costs: checked against the shipped ones and printed.
PAGE_SETTINGS = ("DEBUG", "OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ")
# What the benchmark itself changes, and why (issue 14: every benchmark says so).
VERIFY_OVERRIDE = {
    "setting": "OMIPORTAL_AUDIT_CHECKPOINT_DIR, _BUCKET, _ARCHIVED_THROUGH_SEQ", "where": "verification only",
    "value": "an empty temporary directory, no bucket, 0", "default": "the deployment's store", "changed": True,
    "reason": "verification from the first event, as audit_verify on a trail without checkpoints: a store's "
              "checkpoints would shorten the walk and measure less"}


def settings_in_force() -> list[dict]:
    rows = in_force.compare(in_force.process_values(PAGE_SETTINGS), in_force.shipped(PAGE_SETTINGS, dict(os.environ)),
                            {}, where="bench process")
    return [*rows, VERIFY_OVERRIDE]


def run(options: Options, *, log: Callable[[str], None] = print) -> dict:
    logging.getLogger("axes").setLevel(logging.WARNING)  # one "successful login" line per signed-in client
    check_throwaway_database(yes=options.yes)
    settings_rows = settings_in_force()
    log(in_force.block(settings_rows))
    results = []
    for size in options.sizes:
        log(f"\n== {size:,} audit events ==")
        if options.separate_databases:
            with sized_database(size, yes=options.yes, log=log) as name:
                results.append(measure_size(size, options, database=name, log=log))
        else:
            results.append(measure_size(size, options, log=log))
    report = {
        "benchmark": "bench_pages",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": connection.vendor,
        "debug": settings.DEBUG,
        "settings": settings_rows,
        "cpus": os.cpu_count(),
        "requests_per_page": options.requests,
        "rounds": options.rounds,
        "sizes": [r.__dict__ for r in results],
        "goals": goals(results),
    }
    if options.out_dir is not None:
        options.out_dir.mkdir(parents=True, exist_ok=True)
        path = options.out_dir / "pages.json"  # the latest run; `--out docs/performance` for the committed one
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        report["path"] = str(path)
    return report


def table(report: dict) -> str:
    """The figures people read: per page, queries and p50/p95 at each size; then export, verify, goals."""
    sizes = report["sizes"]
    keys = list(dict.fromkeys(key for s in sizes for key in s["pages"]))
    head = "page".ljust(26) + "".join(f"{s['size']:>12,} rows: q   p50 ms   p95 ms" for s in sizes)
    lines = [head]
    for key in keys:
        line = key.ljust(26)
        for s in sizes:
            p = s["pages"].get(key)
            line += f"{'':>17}{p['queries']:>3} {p['p50_ms']:>8} {p['p95_ms']:>8}" if p else " " * 37
        lines.append(line)
    for s in sizes:
        if s.get("export"):
            e = s["export"]
            copy = e.get("psql_copy")
            lines.append(f"export CSV at {s['size']:,}: {e['rows']:,} rows in {e['seconds']} s = "
                         f"{e['rows_per_second']:,} rows/s, peak RSS +{e['peak_rss_growth_mb']} MB"
                         + (f"; psql \\copy {copy['rows_per_second']:,} rows/s ({e['vs_copy']}x)" if copy else ""))
        if s.get("verify"):
            v = s["verify"]
            lines.append(f"audit_verify at {s['size']:,}: {v['events']:,} events in {v['seconds']} s = "
                         f"{v['events_per_second']:,}/s; bare loop {v['bare_loop']['events_per_second']:,}/s "
                         f"({v['vs_bare']}x); ok={v['ok']}")
    lines.append("")
    lines += [f"[{'met' if g['met'] else 'NOT met'}] {g['goal']}: {g['figure']}" for g in report["goals"]]
    return "\n".join(lines)
