"""Process-level care of the cached clients: warm-up before forking, and clearing."""

import time

from omiportal.outscale import oapi, oos


def warm_up() -> float:
    """Parse the OAPI spec and load botocore's S3 model now; returns the seconds spent.

    Call it in a worker's parent process (rq forks a work horse per job): the
    parse is inherited by every fork instead of being paid by each job.
    """
    started = time.perf_counter()
    oapi.warm_up()
    oos.warm_up()
    return time.perf_counter() - started


def clear_clients() -> None:
    """Drop every cached OAPI and OOS client (this thread now, other threads on their next call)."""
    oapi.clear_clients()
    oos.clear_clients()
