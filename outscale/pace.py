"""The client-side pace of OAPI calls: at most N per second per account, in each process.

The SDK gives every Gateway its own RateLimiter, and Gateways are kept per thread (they are not
thread-safe), so with the SDK's limiter a sweep's sixteen threads calling one account would get
sixteen allowances. The portal's limit is per account and process instead: every thread of the
process that calls the account takes its turn from the same `AccountPace`.
"""

import collections
import os
import threading
import time


class AccountPace:
    """At most ``per_second`` calls in any window of ``window`` seconds.

    A caller reserves the next free slot under the lock and sleeps outside it, so callers
    waiting on the same account go in order and never hold each other's lock while they wait.
    Has the SDK limiter's one method, ``acquire()``.
    """

    def __init__(self, per_second: int, *, window: float = 1.0, clock=time.monotonic, sleep=time.sleep) -> None:
        self.per_second = max(1, int(per_second))
        self.window = window
        self._clock, self._sleep = clock, sleep
        self._slots: collections.deque[float] = collections.deque()  # granted, including reserved ones
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this call's slot; returns how long it waited (seconds)."""
        with self._lock:
            now = self._clock()
            while self._slots and self._slots[0] <= now - self.window:
                self._slots.popleft()
            slot = now
            if len(self._slots) >= self.per_second:
                # Slots only grow, so the one per_second back is the one this call must outlast.
                slot = max(now, self._slots[-self.per_second] + self.window)
            self._slots.append(slot)
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait


_paces: dict[tuple, AccountPace] = {}
_paces_lock = threading.Lock()


def forget_paces() -> None:
    with _paces_lock:
        _paces.clear()


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _paces_lock
    _paces_lock = threading.Lock()
    _paces.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def pace_for(access_key: str, region: str, per_second: int) -> AccountPace:
    """This process's pace for one account in one Region (OUTSCALE throttles per account)."""
    key = (access_key, region, int(per_second))
    with _paces_lock:
        pace = _paces.get(key)
        if pace is None:
            pace = _paces[key] = AccountPace(per_second)
        return pace
