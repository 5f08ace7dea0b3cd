"""The client-side pace of OAPI calls: at most N per second per account, in each process; looks
first, then the writes of work in flight, then the starts of new work.

The SDK gives every Gateway its own RateLimiter, and Gateways are kept per thread (they are not
thread-safe), so with the SDK's limiter a sweep's sixteen threads calling one account would get
sixteen allowances. The portal's limit is per account and process instead: every thread of the
process that calls the account takes its turn from the same `AccountPace`.

Looks go first. A burst of creates and tags can reserve the account's slots for many seconds
ahead; a look (a `Read*` call: the one call of a sweep, or a find-before-create) that arrives then
takes the earliest slot a write holds in the future, and every write from there on moves one slot
later (the last one to the next free slot). The set of slot times is then exactly the one an
ordinary arrival would have made, so the total stays at N in any window: the look changes who
goes, never how many. A write that wakes and finds its slot moved sleeps on to the new one.
Looks are one per account and phase per sweep, so writes cannot starve behind them.

Starts go last, for a while. A start (`CreateImageExportTask`: new work) that has waited less
than START_PATIENCE seconds is passed in the same way by a write (an import's create, a tag: work
in flight, whose transfer already waited on an export), so a hand-off's creates do not queue
behind a burst of export starts in the same account. Past its patience a start is passed only by
looks, as any write: its wait stays bounded (its lease counts it, polling.start_call_seconds),
so a start cannot outlive its lease in the queue and be made twice.
"""

import collections
import contextlib
import os
import threading
import time

LOOK, WRITE, START = "look", "write", "start"
_RANK = {LOOK: 0, WRITE: 1, START: 2}  # who passes whom: a lower rank takes a higher one's slot
START_PATIENCE = 5.0  # seconds a start lets writes pass it
_kind = threading.local()


@contextlib.contextmanager
def calls_as(kind: str):
    """Calls made in this block (this thread) are of ``kind`` (LOOK, WRITE or START)."""
    previous = getattr(_kind, "value", WRITE)
    _kind.value = kind
    try:
        yield
    finally:
        _kind.value = previous


def current_kind() -> str:
    return getattr(_kind, "value", WRITE)


class _Slot:
    __slots__ = ("at", "kind", "arrived")

    def __init__(self, at: float, kind: str, arrived: float) -> None:
        self.at, self.kind, self.arrived = at, kind, arrived

    def rank(self, now: float) -> int:
        if self.kind == START and now - self.arrived >= START_PATIENCE:
            return _RANK[WRITE]  # waited long enough: only looks pass it now
        return _RANK[self.kind]


class AccountPace:
    """At most ``per_second`` calls in any window of ``window`` seconds; looks before writes.

    A caller reserves a slot under the lock and sleeps outside it, so callers waiting on the same
    account go in order (looks ahead of writes) and never hold each other's lock while they wait.
    Has the SDK limiter's one method, ``acquire()``; the kind of call comes from ``calls_as()``.
    """

    def __init__(self, per_second: int, *, window: float = 1.0, clock=time.monotonic, sleep=time.sleep) -> None:
        self.per_second = max(1, int(per_second))
        self.window = window
        self._clock, self._sleep = clock, sleep
        self._slots: collections.deque[_Slot] = collections.deque()  # granted and reserved, in time order
        self._lock = threading.Lock()

    def _next_free(self, now: float) -> float:
        # Slots are in time order, so the one per_second back is the one a new call must outlast.
        if len(self._slots) < self.per_second:
            return now
        return max(now, self._slots[-self.per_second].at + self.window)

    def _reserve(self, now: float, kind: str) -> _Slot:
        while self._slots and self._slots[0].at <= now - self.window:
            self._slots.popleft()
        slot = _Slot(self._next_free(now), kind, now)
        rank = _RANK[kind]
        passed = [s for s in self._slots if s.at > now and s.rank(now) > rank]
        if passed:
            # The caller takes the first passed slot's time; each passed slot takes the next
            # one's, the last the new free slot: the same times as an ordinary arrival, new owners.
            times = sorted([s.at for s in passed] + [slot.at])
            slot.at = times[0]
            for other, at in zip(passed, times[1:], strict=True):
                other.at = at
            self._slots = collections.deque(sorted([*self._slots, slot], key=lambda s: s.at))
        else:
            self._slots.append(slot)
        return slot

    def acquire(self, kind: str | None = None) -> float:
        """Wait for this call's slot; returns how long it waited (seconds)."""
        with self._lock:
            arrived = self._clock()
            slot = self._reserve(arrived, kind or current_kind())
            target = slot.at
        # Sleep until the slot; a look may have moved it later meanwhile: then sleep on.
        reached = arrived
        while True:
            if target > reached:
                self._sleep(target - reached)
                reached = target
            with self._lock:
                if slot.at <= reached:
                    return reached - arrived
                target = slot.at


class PerProcess:
    """Handles kept per process, made on first use: a forked child starts with none (the parent's
    may hold sockets, and a lock held by another thread at fork time would stay held forever)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._items: dict = {}

    def get(self, key, make):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = self._items[key] = make()
            return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_paces = PerProcess()


def forget_paces() -> None:
    _paces.clear()


def pace_for(access_key: str, region: str, per_second: int) -> AccountPace:
    """This process's pace for one account in one Region (OUTSCALE throttles per account)."""
    return _paces.get((access_key, region, int(per_second)), lambda: AccountPace(per_second))
