"""Domain events that transfers announces to the apps above it, which it may not import.

The webhooks app sits above transfers (the layers contract in pyproject.toml), yet it must learn
of every share requested, approved, ready, expired and every import that ended, in the very
transaction that changed the state: an event is recorded if and only if its change commits. So,
as accounts/dependents.py does for accounts, this module is a registry: the services call
``emit(kind, ids)`` inside their transaction, and an app above registers a sink from its
AppConfig.ready() (``register_sink``) that writes what it needs in the same transaction. With no
sink registered, ``emit`` costs nothing.

``register_sweep``: work the reconciler runs on every tick for those apps (events found by time,
such as a link about to expire, and their own safety net), each guarded so that a broken one
never stops the reconciler.
"""

import logging
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

# What each event is about (the ids ``emit`` takes): shares, or recipients (an import's end).
SHARE_EVENTS = ("share.requested", "share.approved", "share.rejected", "share.ready", "share.expired",
                "link.expiring")
RECIPIENT_EVENTS = ("import.completed", "import.failed")
KINDS = SHARE_EVENTS + RECIPIENT_EVENTS

# sink(kind, ids, occasion): ``occasion`` tells apart two events of one kind about one object
# (a share ready by its export, and earlier by its same-Region copies; a share expired again after
# a re-export), so that a sink can record each event exactly once, however often it is emitted.
Sink = Callable[[str, list[int], str], None]

_sinks: list[Sink] = []
_sweeps: list[Callable[..., int]] = []


def register_sink(sink: Sink) -> None:
    if sink not in _sinks:
        _sinks.append(sink)


def register_sweep(sweep: Callable[..., int]) -> None:
    if sweep not in _sweeps:
        _sweeps.append(sweep)


def emit(kind: str, ids: Iterable[int], *, occasion: str = "") -> None:
    """Announce ``kind`` about these shares or recipients (primary keys), inside the transaction
    that made it true. A sink's error rolls that transaction back with it: an event is never
    recorded without its change, nor a change committed without its event."""
    if kind not in KINDS:
        raise ValueError(f"unknown event {kind!r}")
    pks = sorted({int(pk) for pk in ids})
    if not pks:
        return
    for sink in list(_sinks):
        sink(kind, pks, str(occasion))


def sweep(*, now) -> int:
    """Run every registered sweep (the reconciler's tick); how many things they did."""
    done = 0
    for run in list(_sweeps):
        try:
            done += int(run(now=now) or 0)
        except Exception:  # noqa: BLE001 - one app's broken sweep must not stop the reconciler; logged
            logger.exception("A registered sweep failed; the next tick tries again.")
    return done
