"""One clock for every host: the portal's processes keep PostgreSQL's time, not their own.

Leases, next looks, put-offs, settle windows, deadlines and webhook leases are times one process
writes into a row and another process compares with its own "now" (`transfers/services/polling.py`,
`webhooks/delivery.py`, the reconciler, distribution's retention). On one machine every process
reads the same clock; over several hosts each reads its own, and a host whose clock runs N
seconds ahead takes every lease N seconds before it runs out (a create started twice), one
running behind writes leases that others see run out N seconds early, and each puts rq's
delayed jobs (every sweep) N seconds early or late for the host whose scheduler moves them.

So every process measures its offset from the database server's clock (`clock_timestamp()`, on
a connection of its own, never a request's or a job's: the best of three round trips, the
offset taken at their midpoint, so it is off by at most half the fastest round trip) and
``django.utils.timezone.now`` returns the local clock plus that offset. Every ``timezone.now()``
of the portal and of Django (``auto_now`` fields, sessions) is then PostgreSQL's time, and so
are rq's scheduling times (``enqueue_in`` and the scheduler's "due" test read the same clock).
The offset is measured again every ``RESYNC_SECONDS``, so a host whose clock is stepped (NTP)
follows within that. Until the first measurement (the database unreachable) the local clock is
used, and the measurement is retried ``RETRY_SECONDS`` later.

On SQLite (one machine by construction) there is nothing to measure: the offset stays 0.
``OMIPORTAL_CLOCK_FROM_DATABASE=false`` turns it off (every host's clock then must be kept within
a fraction of a second by NTP); `tests/test_clock_skew.py` runs real workers under libfaketime
with and without it.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
import time

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
RETRY_SECONDS = 5.0
SAMPLES = 3

_state = {"offset": 0.0, "measured_at": None, "next_try": 0.0, "installed": False, "measuring": None}
_lock = threading.Lock()
_local_now = None  # django.utils.timezone.now as Django wrote it


def offset() -> float:
    """Seconds to add to this process's clock to read the database's (0 until measured)."""
    return _state["offset"]


def measured() -> bool:
    return _state["measured_at"] is not None


def _measure() -> float | None:
    """The database clock minus this process's, or None on SQLite. Raises when unreachable."""
    from django.db import connections

    wrapper = connections["default"]
    if wrapper.vendor != "postgresql":
        return None
    raw = wrapper.get_new_connection(wrapper.get_connection_params())
    try:
        best = None
        with raw.cursor() as cursor:
            for _ in range(SAMPLES):
                before = time.time()
                cursor.execute("SELECT extract(epoch FROM clock_timestamp())")
                server = float(cursor.fetchone()[0])
                after = time.time()
                if best is None or after - before < best[0]:
                    best = (after - before, server - (before + after) / 2)
        return best[1]
    finally:
        raw.close()


def sync(*, force: bool = False) -> None:
    """Measure the offset now if it is due (or ``force``); never raises."""
    mono = time.monotonic()
    if not force and mono < _state["next_try"]:
        return
    first = not measured()
    # The first measurement is waited for; later ones are made by one thread while the others
    # go on with the offset they have.
    if _state["measuring"] == threading.get_ident() or not _lock.acquire(blocking=first or force):
        return  # (the first: this very thread is measuring, and something it called asked the time)
    _state["measuring"] = threading.get_ident()
    try:
        if not force and time.monotonic() < _state["next_try"]:
            return  # another thread measured it while this one waited
        try:
            value = _measure()
        except Exception as exc:  # noqa: BLE001 - the database restarting or unreachable: keep the last offset
            _state["next_try"] = time.monotonic() + RETRY_SECONDS
            logger.warning("Could not read the database clock (%s); keeping an offset of %.3f s.",
                           type(exc).__name__, _state["offset"])
            return
        if value is not None:
            if measured() and abs(value - _state["offset"]) > 1.0:
                logger.warning("This host's clock moved %.1f s against the database's.", value - _state["offset"])
            _state["offset"] = value
        _state["measured_at"] = time.monotonic()
        _state["next_try"] = time.monotonic() + RESYNC_SECONDS
    finally:
        _state["measuring"] = None
        _lock.release()


def now_timestamp() -> float:
    """The database's time, as seconds since the epoch."""
    if time.monotonic() >= _state["next_try"]:
        sync()
    return time.time() + _state["offset"]


def _now():
    from django.conf import settings

    at = datetime.datetime.fromtimestamp(now_timestamp(), tz=datetime.UTC)
    return at if settings.USE_TZ else at.astimezone().replace(tzinfo=None)


def _rq_now():
    return datetime.datetime.fromtimestamp(now_timestamp(), tz=datetime.UTC)


def _rq_timestamp() -> int:
    return int(now_timestamp())


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a fork during a measurement leaves the child's copy held


def install() -> None:
    """Make ``timezone.now`` and rq's clock read the database's time in this process."""
    global _local_now
    if _state["installed"]:
        return
    import rq.job  # noqa: F401 - loaded before its names are replaced
    import rq.queue
    import rq.registry
    import rq.scheduler
    import rq.utils
    import rq.worker  # noqa: F401
    from django.utils import timezone

    _local_now = timezone.now
    timezone.now = _now
    # rq imports its clock functions by name into each module that uses them.
    local = {"now": rq.utils.now, "current_timestamp": rq.utils.current_timestamp}
    mine = {"now": _rq_now, "current_timestamp": _rq_timestamp}
    for name, module in list(sys.modules.items()):
        if name == "rq" or name.startswith("rq."):
            for attribute, function in local.items():
                if getattr(module, attribute, None) is function:
                    setattr(module, attribute, mine[attribute])
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _state["installed"] = True


def installed() -> bool:
    return _state["installed"]
