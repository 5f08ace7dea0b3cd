"""Simulated people: one thread each, a `requests` session signed in to the portal on loopback.

Each one browses its team's pages (dashboard, shares, a share's page and its progress JSON, the
inbox, the audit trail for auditors) with a short think time, and accepts what is offered in its
inbox. Every request is timed by page kind; 5xx answers and connection errors are errors.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import requests

ACCEPT_RE = re.compile(r'action="(/t/[0-9a-f-]+/incoming/[0-9a-f-]+/accept/)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
MAX_ACCEPTS_PER_VISIT = 5
TIMEOUT = (5, 60)  # connect, read: a slow page is measured, not an error, up to a minute


@dataclass
class Persona:
    email: str
    password: str
    team_id: str
    role: str  # member or auditor
    share_ids: list[str] = field(default_factory=list)


@dataclass
class Stats:
    """Shared by every user thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    errors: list[str] = field(default_factory=list)
    accepted: int = 0

    def add(self, kind: str, seconds: float, status: int | None, problem: str = "") -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[kind][status or 0] += 1
            if problem:
                self.errors.append(problem)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())


class User(threading.Thread):
    def __init__(self, base_url: str, persona: Persona, stats: Stats, stop: threading.Event, *, seed: int,
                 think: tuple[float, float] = (0.2, 1.0)):
        super().__init__(name=f"user-{persona.email}", daemon=True)
        self.base, self.p, self.stats, self.stop_event = base_url, persona, stats, stop
        self.rng = random.Random(seed)  # noqa: S311 - simulated behaviour, not security
        self.think = think
        self.session = requests.Session()

    # --- one timed request ---------------------------------------------------------------------

    def _call(self, kind: str, method: str, path: str, **kwargs) -> requests.Response | None:
        started = time.perf_counter()
        try:
            response = self.session.request(method, self.base + path, timeout=TIMEOUT, allow_redirects=False,
                                            **kwargs)
        except requests.RequestException as exc:
            self.stats.add(kind, time.perf_counter() - started, None, f"{kind} {path}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - started
        problem = f"{kind} {path}: HTTP {response.status_code}" if response.status_code >= 500 else ""
        self.stats.add(kind, elapsed, response.status_code, problem)
        return response

    def _csrf(self, html: str) -> str:
        match = CSRF_RE.search(html)
        return match.group(1) if match else self.session.cookies.get("csrftoken", "")

    # --- what a person does --------------------------------------------------------------------

    def sign_in(self) -> bool:
        page = self._call("login_form", "GET", "/login/")
        if page is None or page.status_code != 200:
            return False
        response = self._call("login", "POST", "/login/", data={
            "csrfmiddlewaretoken": self._csrf(page.text), "username": self.p.email, "password": self.p.password,
            "next": f"/t/{self.p.team_id}/"}, headers={"Referer": self.base + "/login/"})
        return response is not None and response.status_code == 302 and "/login/" not in response.headers.get(
            "Location", "/login/")

    def _inbox(self) -> None:
        page = self._call("inbox", "GET", f"/t/{self.p.team_id}/incoming/")
        if page is None or page.status_code != 200 or self.p.role != "member":
            return
        offers = ACCEPT_RE.findall(page.text)
        self.rng.shuffle(offers)
        token = self._csrf(page.text)
        for action in offers[:MAX_ACCEPTS_PER_VISIT]:
            if self.stop_event.is_set():
                return
            response = self._call("accept", "POST", action, data={"csrfmiddlewaretoken": token},
                                  headers={"Referer": self.base + f"/t/{self.p.team_id}/incoming/"})
            if response is not None and response.status_code in (302, 303):
                with self.stats.lock:
                    self.stats.accepted += 1

    def _step(self) -> None:
        team = f"/t/{self.p.team_id}"
        choices = ["dashboard", "shares", "inbox", "inbox"]
        if self.p.share_ids:
            choices += ["detail", "progress", "progress"]
        if self.p.role == "auditor":
            choices += ["audit", "audit"]
        kind = self.rng.choice(choices)
        if kind == "dashboard":
            self._call("dashboard", "GET", f"{team}/")
        elif kind == "shares":
            self._call("share_list", "GET", f"{team}/shares/")
        elif kind == "detail":
            self._call("share_detail", "GET", f"{team}/shares/{self.rng.choice(self.p.share_ids)}/")
        elif kind == "progress":
            self._call("progress_json", "GET", f"{team}/shares/{self.rng.choice(self.p.share_ids)}/progress.json")
        elif kind == "audit":
            self._call("audit_list", "GET", f"{team}/audit/")
        else:
            self._inbox()

    def run(self) -> None:
        # Staggered arrivals, then sign in (a few tries: the server may still be warming up).
        self.stop_event.wait(self.rng.uniform(0, 2))
        for _ in range(3):
            if self.stop_event.is_set() or self.sign_in():
                break
            self.stop_event.wait(1)
        else:
            with self.stats.lock:
                self.stats.errors.append(f"{self.p.email} could not sign in")
        while not self.stop_event.is_set():
            self._step()
            self.stop_event.wait(self.rng.uniform(*self.think))
        self.session.close()


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {"count": len(ordered), "p50_ms": round(pick(0.50) * 1000, 1), "p95_ms": round(pick(0.95) * 1000, 1),
            "p99_ms": round(pick(0.99) * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}
