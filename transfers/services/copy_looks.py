"""When to look at a same-Region copy: where the portal's own history says it should end.

A copy (CreateImage{SourceImageId}, methods.py's COPY_METHODS) reports no progress, unlike an
export task, so the grid's looks (OMIPORTAL_SWEEP_MIN_SECONDS after the create, then backing off
x1.5) saw a 3 s copy up to 7 s after it ended and a copy of minutes up to a minute late. Here the
first look goes where copies of a similar size (half to twice the source's GiB, from the request's
source facts) ended before: from the fastest tenth of them, then a look every ``step`` until the
slowest tenth has passed, then the usual backoff from ``step``. With fewer than MIN_HISTORY such
copies there is no plan, and the grid's looks stand.

What a past copy says of the cloud's time: it ended after the look before the one that saw it
available, so its row's started_at (set when its CreateImage was answered,
import_starts._started) to completed_at, less the interval that look came after (its
poll_interval, kept at completion: for a copy seen at its first look, the time from its create).
Without that, a copy seen late (the grid's looks, or a first look placed too late) would set the
next ones' first look late in turn. A copy seen at its first look ended somewhere after its create:
it counts back a step (the plan's) from that look, not to the create, or every copy seen at once
would say it took no time and pull the next first looks down to the floor; a first look placed too
late still moves a step earlier with each such history. Each process reads the history once every
HISTORY_SECONDS: a burst of starts makes one query.

The looks the watcher makes (copy_watch.py: a thread of the process that made a copy looks at it
around its expected end) are not held to rq's second: they come every ``fine`` step (a twentieth
of the expected time, at least WATCH_STEP_FLOOR) while it watches (``watching``).
"""

import contextlib
import contextvars
import math
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from statistics import median

from django.utils import timezone

from transfers import scheduling
from transfers.models import Recipient

MIN_HISTORY = 3  # similar copies needed before their ends say anything
HISTORY_DAYS = 90  # as the approval page's expected duration
HISTORY_ROWS = 500  # the newest copies read
HISTORY_SECONDS = 60.0  # how long a process keeps what it read
LOOK_FLOOR = scheduling.FINE_SLOT_SECONDS  # rq schedules to the second: a finer step buys nothing
STEP_PART = 20  # a look every twentieth of the expected time, between LOOK_FLOOR and sweep_max
WINDOW_LOOKS = 30  # at most this many looks across the window: a wide spread widens the step
FIRST_LOOK_MAX = 6 * 3600.0  # seconds after the create: a history of stuck copies says nothing
# The watcher of the process that made a copy looks at it (copy_watch.py) when its first look is at
# most WATCH_AHEAD seconds after the create, at the fine step, for WATCH_SPAN seconds after the first
# look; rq's sweep is booked at the end of that span, a fallback for a process that died watching.
WATCH_AHEAD = 5.0
WATCH_SPAN = 3.0
WATCH_STEP_FLOOR = 0.25  # seconds: each look is one ReadImages per account (and ~0.1 s on the wire)


@dataclass(frozen=True)
class Plan:
    """Seconds after a copy's create: its first look, the step between looks until ``last``."""
    first: float
    step: float
    last: float
    expected: float  # the median of the similar copies (reported, not used to schedule)
    count: int  # how many similar copies it was drawn from
    fine: float = 0.0  # the step between the looks a watching job makes (0: ``step``)


_cache: dict = {}
_lock = threading.Lock()
_watching: contextvars.ContextVar[bool] = contextvars.ContextVar("copy_looks_watching", default=False)


def watching() -> bool:
    """Whether the sweep running now was made by the watcher (copy_watch.py)."""
    return _watching.get()


@contextlib.contextmanager
def watched():
    token = _watching.set(True)
    try:
        yield
    finally:
        _watching.reset(token)


def forget() -> None:
    """Read the history again at the next plan (tests; a process never needs to)."""
    with _lock:
        _cache.clear()


def _history() -> list[tuple[int | None, float]]:
    """(size_gib, seconds) of the newest completed copies, read at most once per HISTORY_SECONDS."""
    with _lock:
        if _cache and time.monotonic() - _cache["at"] < HISTORY_SECONDS:
            return _cache["rows"]
    since = timezone.now() - timedelta(days=HISTORY_DAYS)
    rows = Recipient.objects.filter(
        state=Recipient.State.COMPLETED, method__in=Recipient.COPY_METHODS, share__isnull=False,
        started_at__isnull=False, completed_at__gte=since,
    ).order_by("-completed_at").values_list("share__source_facts__size_gib", "started_at", "completed_at",
                                            "poll_interval")
    history = [(size if isinstance(size, int) else None, max(0.0, (completed - started).total_seconds() - interval))
               for size, started, completed, interval in rows[:HISTORY_ROWS]]
    with _lock:
        _cache.update(at=time.monotonic(), rows=history)
    return history


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def plan_for(size_gib) -> Plan | None:
    """Where to look at a copy of a ``size_gib`` source (None or 0: its size is unknown), or
    None when the portal has too few similar copies to say."""
    size = size_gib if isinstance(size_gib, int) and size_gib > 0 else None
    if size is None:
        similar = [seconds for _, seconds in _history()]
    else:
        similar = [seconds for s, seconds in _history() if s is not None and size / 2 <= s <= size * 2]
    if len(similar) < MIN_HISTORY:
        return None
    similar.sort()
    expected, low, high = median(similar), _quantile(similar, 0.1), _quantile(similar, 0.9)
    step = min(scheduling.sweep_max(), max(LOOK_FLOOR, expected / STEP_PART, (high - low) / WINDOW_LOOKS))
    # Each past end is a lower bound (see above): where the fastest tenth had ended, the copy most
    # likely has not, and a look then is the last one before it is seen.
    first = min(FIRST_LOOK_MAX, max(LOOK_FLOOR, low))
    fine = min(step, max(WATCH_STEP_FLOOR, expected / STEP_PART, (high - low) / WINDOW_LOOKS))
    return Plan(first=first, step=step, last=max(first, high + step), expected=expected, count=len(similar),
                fine=fine)


def plan_for_recipient(recipient: Recipient) -> Plan | None:
    """The plan for this recipient's copy (its share loaded); None for an import (an export's
    manifest, a link)."""
    if recipient.method not in Recipient.COPY_METHODS or not recipient.share_id:
        return None
    return plan_for((recipient.share.source_facts or {}).get("size_gib"))


def next_look(plan: Plan | None, *, elapsed: float, previous: float) -> tuple[float, float | None]:
    """After a look that found the copy still pending, ``elapsed`` seconds after its create:
    (the interval to keep, seconds after the create of the next look, when it is the plan's
    first one; else None: the next look is ``interval`` from now)."""
    if plan is None:
        return scheduling.next_interval(previous), None
    step = plan.fine if watching() and plan.fine else plan.step
    if elapsed < plan.first - step:  # looked at early, riding with another row: keep its first look
        return step, plan.first
    if elapsed < plan.last:
        return step, None
    return scheduling.next_interval(max(previous, plan.step)), None

