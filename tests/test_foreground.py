"""OMIPORTAL_PAGES_FIRST_MS: a worker waits, before its next job, while its host serves a page.

Real Redis, a real PortalWorker running a real job; the web side is the middleware around a view.
The bounds are the mechanism's (at least the wait, at most the limit), with room for a slow machine.
"""

import threading
import time
import uuid

import django_rq
import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from omiportal import foreground
from omiportal.worker import PortalWorker
from tests import workers
from transfers.services import polling

RAN_KEY = "omiportal:test-foreground:ran"


def note_when_run() -> None:
    """The job: notes when it ran."""
    foreground._redis().set(RAN_KEY, repr(time.time()))


@pytest.fixture
def host(settings):
    settings.OMIPORTAL_HOST_ID = f"test-{uuid.uuid4().hex[:8]}"
    settings.OMIPORTAL_PAGES_FIRST_MS = 100
    foreground._redis.cache_clear()
    foreground._seen = (-1.0, 0)  # no count remembered from another test
    workers.flush()
    yield settings.OMIPORTAL_HOST_ID
    foreground._redis().delete(foreground.KEY.format(host=settings.OMIPORTAL_HOST_ID), RAN_KEY)
    foreground._redis.cache_clear()
    workers.flush()


def _page(request):
    return HttpResponse(str(foreground.pages_in_flight()))


def test_a_request_counts_while_it_is_served_and_not_after_even_when_its_view_fails(host):
    middleware = foreground.PagesInFlightMiddleware(_page)
    assert middleware(RequestFactory().get("/")).content == b"1"
    assert foreground.pages_in_flight() == 0

    def broken(request):
        assert foreground.pages_in_flight() == 1
        raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        foreground.PagesInFlightMiddleware(broken)(RequestFactory().get("/"))
    assert foreground.pages_in_flight() == 0


def test_off_as_shipped_a_request_makes_no_redis_call_and_a_worker_never_waits(host, settings):
    settings.OMIPORTAL_PAGES_FIRST_MS = 0
    assert foreground.PagesInFlightMiddleware(_page)(RequestFactory().get("/")).content == b"0"
    foreground._redis().zadd(foreground.KEY.format(host=host), {"someone": time.time()})
    assert foreground.wait_for_pages() == 0.0


def test_a_worker_waits_while_a_page_is_served_and_goes_on_when_it_ends(host):
    key = foreground.KEY.format(host=host)
    foreground._redis().zadd(key, {"a page": time.time()})
    threading.Timer(0.3, foreground._redis().zrem, args=(key, "a page")).start()
    waited = foreground.wait_for_pages(limit_ms=10_000)
    assert 0.25 <= waited < 5


def test_a_stream_of_pages_slows_a_worker_by_the_limit_at_most(host):
    foreground._redis().zadd(foreground.KEY.format(host=host), {"a page": time.time()})
    waited = foreground.wait_for_pages(limit_ms=200)
    assert 0.2 <= waited < 2


def test_a_request_a_killed_web_process_left_behind_stops_counting(host):
    foreground._redis().zadd(foreground.KEY.format(host=host),
                             {"killed mid-request": time.time() - foreground.STALE_SECONDS - 1})
    assert foreground.pages_in_flight() == 0
    assert foreground.wait_for_pages(limit_ms=10_000) < 1


def test_pages_of_another_host_do_not_hold_this_hosts_workers(host):
    foreground._redis().zadd(foreground.KEY.format(host="another-host"), {"a page": time.time()})
    try:
        assert foreground.pages_in_flight() == 0
        assert foreground.wait_for_pages(limit_ms=10_000) < 1
    finally:
        foreground._redis().delete(foreground.KEY.format(host="another-host"))


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_its_next_job_only_once_the_page_has_been_served(host, settings):
    settings.OMIPORTAL_PAGES_FIRST_MS = 10_000
    queue = django_rq.get_queue("default")
    queue.enqueue(f"{__name__}.note_when_run", result_ttl=0)
    worker = PortalWorker([queue], connection=queue.connection)  # started (its cloud layer warmed) first
    assert polling.before_each_item is foreground.wait_for_pages  # and a sweep's threads, below
    key = foreground.KEY.format(host=host)
    foreground._redis().zadd(key, {"a page": time.time()})
    page_served = time.time() + 1.0
    threading.Timer(1.0, foreground._redis().zrem, args=(key, "a page")).start()
    worker.work(burst=True)
    ran = float(foreground._redis().get(RAN_KEY))
    assert page_served <= ran < page_served + 5


def test_a_sweeps_threads_wait_before_each_row_while_a_page_is_served(host, settings, monkeypatch):
    settings.OMIPORTAL_PAGES_FIRST_MS = 10_000
    monkeypatch.setattr(polling, "before_each_item", foreground.wait_for_pages)
    key = foreground.KEY.format(host=host)
    foreground._redis().zadd(key, {"a page": time.time()})
    page_served = time.time() + 0.4
    threading.Timer(0.4, foreground._redis().zrem, args=(key, "a page")).start()
    done = []
    polling.run_each(lambda item: done.append(time.time()), range(16), what="look at a row", threads=8)
    assert len(done) == 16 and page_served <= min(done) < page_served + 5
