"""Process-level care of the cached clients: warm-up when a worker starts, and clearing."""

import importlib
import time

import outscale
from outscale import oapi, oos


def warm_up() -> float:
    """Parse the OAPI spec and load botocore's S3 model now; returns the seconds spent.

    Call it when a worker starts, so no job pays for it (and, in a process that forks,
    before forking, so every child inherits it).
    """
    started = time.perf_counter()
    oapi.warm_up()
    oos.warm_up()
    for module in sorted(set(outscale._EXPORTS.values())):  # what the package loads on first use
        importlib.import_module(f"outscale.{module}")
    return time.perf_counter() - started


def clear_clients() -> None:
    """Drop every cached OAPI and OOS client (this thread now, other threads on their next call)."""
    oapi.clear_clients()
    oos.clear_clients()
