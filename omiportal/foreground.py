"""Pages first on a shared host: a worker waits, before its next job, while a page is being served.

``OMIPORTAL_WORKER_NICE`` leaves the workers' own threads the CPU the web tier does not use, but
not their PostgreSQL work: the server's backends run at its own priority whatever the client's,
and on one host they share the cores with the web processes. Measured by ``bench_load`` (2 cores,
100 people, 1,000 transfers, the README's setup), pages were at 2.2-3.5 times their p95 alone while
the transfers ran and 1.6-2.0 times once they had ended. As PostgreSQL's autovacuum sleeps to
leave the disks to the queries people wait for, a worker here waits, between jobs, while any web
process of its host is serving a request, up to ``OMIPORTAL_PAGES_FIRST_MS``: a transfer waits
minutes on the cloud anyway; a person waits on the page.

A sweep's threads wait the same way before each row (transfers.services.polling.before_each_item,
which the worker sets), sharing one count a step between them.

How: each request of a web process adds a member to a sorted set named by the host
(``OMIPORTAL_HOST_ID``), scored with its start, and removes it when it ends. A worker counts the
members younger than ``STALE_SECONDS`` (a web process killed in the middle of a request leaves
one behind, which then stops counting) and sleeps a few milliseconds at a time while there are
any, until its wait reaches the limit: never longer, so workers are slowed, never stopped, even
by a stream of requests. Workers on another host never see this host's pages.

0 (as shipped) turns it off on both sides: no Redis call per request, no wait. Redis errors are
ignored on both sides: a page is never refused, and a job never held, for want of a count.
"""

import functools
import itertools
import logging
import os
import threading
import time

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

KEY = "omiportal:pages-in-flight:{host}"
STALE_SECONDS = 30  # a request counts this long at most (a killed web process leaves its members)
STEP_SECONDS = 0.005  # how often a waiting worker looks again


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # One client per process (the middleware's threads share its pool).
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def _key() -> str:
    return KEY.format(host=settings.OMIPORTAL_HOST_ID)


class PagesInFlightMiddleware:
    """Counts this host's requests in progress for its workers (``wait_for_pages``)."""

    _ids = itertools.count()

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.OMIPORTAL_PAGES_FIRST_MS <= 0:
            return self.get_response(request)
        member = f"{os.getpid()}:{next(self._ids)}"
        key = _key()
        try:
            _redis().zadd(key, {member: time.time()})
        except redis.RedisError:
            member = None
        try:
            return self.get_response(request)
        finally:
            if member is not None:
                try:
                    _redis().zrem(key, member)
                except redis.RedisError:
                    logger.debug("Could not remove a request from the pages in flight.", exc_info=True)


def pages_in_flight(connection: redis.Redis | None = None) -> int:
    """How many requests this host's web processes are serving now."""
    return (connection or _redis()).zcount(_key(), time.time() - STALE_SECONDS, "+inf")


_seen_lock = threading.Lock()
_seen = (-1.0, 0)  # (monotonic time, count): one count every STEP_SECONDS for all of a process's threads


def _pages_in_flight_now(connection: redis.Redis | None) -> int:
    # A sweep's 32 threads waiting together ask Redis once a step, not 32 times.
    global _seen
    with _seen_lock:
        at, count = _seen
        if time.monotonic() - at >= STEP_SECONDS:
            count = pages_in_flight(connection)
            _seen = (time.monotonic(), count)
        return count


def wait_for_pages(connection: redis.Redis | None = None, *, limit_ms: float | None = None) -> float:
    """Wait while this host serves a page, up to ``limit_ms`` (``OMIPORTAL_PAGES_FIRST_MS``);
    returns the seconds waited."""
    limit = (settings.OMIPORTAL_PAGES_FIRST_MS if limit_ms is None else limit_ms) / 1000
    if limit <= 0:
        return 0.0
    started = time.monotonic()
    deadline = started + limit
    try:
        while _pages_in_flight_now(connection) and time.monotonic() < deadline:
            time.sleep(STEP_SECONDS)
    except redis.RedisError:
        pass
    return time.monotonic() - started
