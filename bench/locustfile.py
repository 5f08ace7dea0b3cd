"""People who think, for Locust: `python -m locust -f bench/locustfile.py --headless ...`.

Run by `bench/load.py` in a process of its own (Locust patches the standard library with gevent
when imported, which the Django process must not have). It imports nothing of the portal: what it
needs comes in a JSON file named by ``OMIPORTAL_LOCUST_PLAN``:

    {"people": [{"email", "password", "team_id", "role", "share_ids"}...],
     "mode": "load" | "baseline", "users": N, "think": [low, high], "out": "<path of the samples file>",
     "clicks": N or null}

In ``load`` mode each Locust user is one person (the plan's people in turn): it signs in, then
clicks at random among what a person of its role does (dashboard, share list, a share's page and
its progress JSON, the inbox and accepting what is offered, the request form; the trail for
auditors), waiting ``between(low, high)`` seconds between clicks. In ``baseline`` mode there is
one user, nobody else on the machine: it signs in as a member and as an auditor (two sessions,
one request at a time) and visits every page kind in turn, so each kind has enough samples for a
p95.

With ``clicks``, each person stops after that many clicks made once everyone has signed in, and
Locust quits when the last one has: a phase of a known size whatever the machine's speed (the
tests' form; the benchmark runs for a time).

Every request is named by its page kind. When Locust quits, every sample (kind, seconds, status,
error, when) and the moment the last person had signed in are written to the plan's ``out`` file, so
the percentiles are computed exactly rather than from Locust's rounded histogram.
An error is a connection error, a 5xx, or an answer a person
would not expect (a page that is not 200, a sign-in that does not go to the team's home).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import time

from locust import HttpUser, between, events, task
from locust.clients import HttpSession
from locust.exception import StopUser

PLAN = json.loads(open(os.environ["OMIPORTAL_LOCUST_PLAN"]).read())  # noqa: SIM115 - read once at start
ACCEPT_RE = re.compile(r'action="(/t/[0-9a-f-]+/incoming/[0-9a-f-]+/accept/)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
MAX_ACCEPTS_PER_VISIT = 3
TIMEOUT = (5, 60)  # connect, read: a slow page is measured, not an error, up to a minute
BASELINE_ORDER = ("dashboard", "share_list", "share_detail", "progress_json", "inbox", "share_new", "audit_list")

_people = itertools.cycle(PLAN["people"])
_people_lock = threading.Lock()
_samples: list[tuple[str, float, int, str, float]] = []
_signed_in: list[float] = []
_done: list[str] = []  # the people who made their ``clicks``


@events.request.add_listener
def _sample(request_type, name, response_time, response_length, response=None, exception=None, **kwargs):
    status = getattr(response, "status_code", 0) or 0
    _samples.append((name, round(response_time / 1000, 5), status, str(exception)[:200] if exception else "",
                     time.time()))


@events.quitting.add_listener
def _write(environment, **kwargs):
    with open(PLAN["out"], "w") as out:
        json.dump({"samples": _samples, "everyone_arrived_at": _everyone_arrived()}, out)


def _everyone_arrived() -> float | None:
    """When the last person had signed in (every person signs in once, on arrival)."""
    wanted = PLAN.get("users") or 1
    return sorted(_signed_in)[wanted - 1] if len(_signed_in) >= wanted else None


def _answer(response) -> str:
    """The status, or for no answer at all the error (Locust gives status 0 and keeps the exception)."""
    if response.status_code:
        return f"HTTP {response.status_code}"
    return f"no answer: {type(response.error).__name__}: {response.error}"


def _csrf(session, html: str) -> str:
    match = CSRF_RE.search(html)
    return match.group(1) if match else session.cookies.get("csrftoken", "")


class Visitor:
    """One signed-in session of one person, every request named by its page kind."""

    def __init__(self, session, person: dict, rng: random.Random):
        self.s, self.p, self.rng = session, person, rng
        self.team = f"/t/{person['team_id']}"

    def get(self, kind: str, path: str):
        with self.s.get(path, name=kind, allow_redirects=False, timeout=TIMEOUT, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{kind} {path}: {_answer(response)}")
            return response

    def sign_in(self) -> bool:
        with self.s.get("/login/", name="login_form", timeout=TIMEOUT, catch_response=True) as page:
            if page.status_code != 200:
                page.failure(f"login form: {_answer(page)}")
                return False
        with self.s.post("/login/", name="login", allow_redirects=False, timeout=TIMEOUT, catch_response=True,
                         data={"csrfmiddlewaretoken": _csrf(self.s, page.text), "username": self.p["email"],
                               "password": self.p["password"], "next": f"{self.team}/"},
                         headers={"Referer": self.s.base_url + "/login/"}) as response:
            ok = response.status_code == 302 and "/login/" not in response.headers.get("Location", "/login/")
            if not ok:
                response.failure(f"{self.p['email']} could not sign in: {_answer(response)}")
            return ok

    def inbox(self, *, accept: bool) -> None:
        page = self.get("inbox", f"{self.team}/incoming/")
        if page.status_code != 200 or not accept or self.p["role"] != "member":
            return
        offers = ACCEPT_RE.findall(page.text)
        self.rng.shuffle(offers)
        token = _csrf(self.s, page.text)
        for action in offers[:MAX_ACCEPTS_PER_VISIT]:
            with self.s.post(action, name="accept", allow_redirects=False, timeout=TIMEOUT, catch_response=True,
                             data={"csrfmiddlewaretoken": token},
                             headers={"Referer": self.s.base_url + f"{self.team}/incoming/"}) as response:
                # Another member of the team may have accepted it first: the page says so, with a redirect.
                if response.status_code not in (302, 303):
                    response.failure(f"accept {action}: {_answer(response)}")

    def visit(self, kind: str) -> None:
        share = self.rng.choice(self.p["share_ids"]) if self.p["share_ids"] else None
        if kind == "dashboard":
            self.get(kind, f"{self.team}/")
        elif kind == "share_list":
            self.get(kind, f"{self.team}/shares/")
        elif kind == "share_detail" and share:
            self.get(kind, f"{self.team}/shares/{share}/")
        elif kind == "progress_json" and share:
            self.get(kind, f"{self.team}/shares/{share}/progress.json")
        elif kind == "share_new":
            self.get(kind, f"{self.team}/shares/new/")
        elif kind == "audit_list":
            self.get(kind, f"{self.team}/audit/")
        elif kind == "inbox":
            self.inbox(accept=True)


def _choices(person: dict) -> list[str]:
    """What a person of this role clicks, weighted by repetition."""
    kinds = ["dashboard", "dashboard", "share_list", "inbox", "inbox"]
    if person["share_ids"]:
        kinds += ["share_detail", "share_detail", "progress_json", "progress_json", "progress_json"]
    if person["role"] == "member":
        kinds += ["share_new"]
    if person["role"] == "auditor":
        kinds += ["audit_list", "audit_list", "audit_list"]
    return kinds


class Person(HttpUser):
    wait_time = between(*PLAN["think"])

    def on_start(self):
        with _people_lock:
            person = next(_people)
        self.rng = random.Random(person["email"])  # noqa: S311 - simulated behaviour, not security
        self.visitors = [Visitor(self.client, person, self.rng)]
        if PLAN["mode"] == "baseline":
            # One person at a time, both roles: a second session for the auditor's pages.
            auditor = next(p for p in PLAN["people"] if p["role"] == "auditor")
            second = HttpSession(base_url=self.host, request_event=self.environment.events.request, user=self)
            self.visitors.append(Visitor(second, auditor, self.rng))
            self.order = itertools.cycle(BASELINE_ORDER)
        self.clicks = 0  # made once everyone had signed in (PLAN["clicks"])
        self.signed_in = all(v.sign_in() for v in self.visitors)
        _signed_in.append(time.time())

    @task
    def click(self):
        if not self.signed_in:
            self.signed_in = all(v.sign_in() for v in self.visitors)
            return
        if PLAN.get("clicks") and _everyone_arrived() is not None:
            self.clicks += 1
            if self.clicks > PLAN["clicks"]:
                self._stop()
        self._visit()

    def _stop(self):
        with _people_lock:
            _done.append(self.visitors[0].p["email"])
            last = len(_done) >= (PLAN.get("users") or 1)
        if last:
            self.environment.runner.quit()  # writes the samples (the quitting event)
        raise StopUser

    def _visit(self):
        if PLAN["mode"] == "baseline":
            kind = next(self.order)
            visitor = self.visitors[1] if kind == "audit_list" else self.visitors[0]
            visitor.visit(kind)
            return
        visitor = self.visitors[0]
        visitor.visit(self.rng.choice(_choices(visitor.p)))
