"""SharedPace: one allowance per account for every process, in Redis, on Redis's clock.

Real Redis (the test's own database), real processes, and a real clock skew (libfaketime) where
the promise is about processes and hosts; an injected sleep where the moment is a race (a slot
that vanishes while its caller sleeps).
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from outscale import pace as local
from outscale import shared_pace
from outscale.shared_pace import SharedPace, account_key
from tests.test_clock_skew import libfaketime

ROOT = Path(__file__).resolve().parent.parent

# One "process" of the test: acquires N calls' slots of one account and prints Redis's time at
# each grant (one timeline for every process, whatever its own clock says).
CALLER = """
import json, sys, redis
from outscale.shared_pace import SharedPace
url, key, per_second, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = redis.Redis.from_url(url)
pace = SharedPace(client, key, per_second)
def redis_now():
    seconds, micros = client.time()
    return seconds + micros / 1e6
print(json.dumps({"start": redis_now()}), flush=True)
sys.stdin.readline()  # go: every caller has started
grants = []
for _ in range(calls):
    pace.acquire("write")
    grants.append(redis_now())
print(json.dumps(grants), flush=True)
"""


@pytest.fixture
def client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    for key in client.scan_iter(f"{shared_pace.KEY_PREFIX}*"):
        client.delete(key)


def redis_now(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def most_in_a_window(times: list[float], window: float = 1.0) -> int:
    # Times seen after acquire() returned: up to a few tens of ms after the slot's own time
    # (thread scheduling), hence the 50 ms.
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window - 0.05) for i, t in enumerate(times))


def test_two_processes_one_with_a_clock_five_seconds_ahead_share_one_allowance(client):
    # Per process, the two would make 6 calls each within the first second; shared, 12 calls at
    # 3 a second take at least three seconds and never more than 3 in a second.
    key = account_key("AKSHARED", "eu-west-2", 3)
    ahead = {**os.environ, "LD_PRELOAD": libfaketime(), "FAKETIME": "+5s"}
    procs = [subprocess.Popen([sys.executable, "-c", CALLER, settings.REDIS_URL, key, "3", "6"], cwd=ROOT,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for env in (dict(os.environ), ahead)]
    for proc in procs:
        json.loads(proc.stdout.readline())
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    grants = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        grants += json.loads(out)
    assert len(grants) == 12
    assert most_in_a_window(grants) <= 3, sorted(grants)
    assert max(grants) - min(grants) >= 2.9  # 3, 3, 3, 3: the last three a full 3 s after the first


def test_a_look_from_another_process_goes_before_this_ones_burst_and_the_total_holds(client):
    # Two "processes" (their own Redis connections): one queues eight creates at two a second,
    # four seconds of slots; the other's look, arriving then, is served within the next second,
    # and the creates it passed still go at two a second.
    key = account_key("AKLOOK", "eu-west-2", 2)
    burst = SharedPace(redis.Redis.from_url(settings.REDIS_URL), key, 2)
    other = SharedPace(redis.Redis.from_url(settings.REDIS_URL), key, 2)
    granted, lock = [], threading.Lock()

    def call(pace, kind):
        pace.acquire(kind)
        with lock:
            granted.append((kind, redis_now(client)))

    creates = [threading.Thread(target=call, args=(burst, "write")) for _ in range(8)]
    for thread in creates:
        thread.start()
    deadline = time.monotonic() + 10
    while client.zcard(key) < 8:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    asked = redis_now(client)
    call(other, "look")
    for thread in creates:
        thread.join(15)
    look = next(at for kind, at in granted if kind == "look")
    assert look - asked < 1.1, "the look waited behind the burst"
    writes_after = [at for kind, at in granted if kind == "write" and at > look]
    assert len(writes_after) >= 5, granted  # the look went before most of the burst
    assert most_in_a_window([at for _, at in granted]) <= 2, sorted(granted, key=lambda g: g[1])


def test_a_young_start_lets_another_processs_create_pass(client):
    key = account_key("AKSTART", "eu-west-2", 1)
    starts = SharedPace(redis.Redis.from_url(settings.REDIS_URL), key, 1)
    creates = SharedPace(redis.Redis.from_url(settings.REDIS_URL), key, 1)
    reserve = starts._reserve
    now = None
    for _ in range(4):  # four starts hold the next four seconds
        at, now, _member = reserve(keys=[key], args=["start", "s", 1, 1.0, local.START_PATIENCE])
    at, _, member = creates._reserve(keys=[key], args=["write", "c", 1, 1.0, local.START_PATIENCE])
    assert float(at) - float(now) < 1.01, "the create queued behind the starts"
    assert member.startswith(b"write|")


def test_a_slot_gone_while_its_caller_sleeps_lets_the_call_go(client):
    # Redis flushed (or the key expired) while the caller slept towards its slot: it goes when it
    # wakes, rather than looking for a slot that is no longer there.
    key = account_key("AKFLUSH", "eu-west-2", 1)
    flushed = []

    def sleep_and_flush(seconds):
        client.delete(key)
        flushed.append(seconds)

    pace = SharedPace(redis.Redis.from_url(settings.REDIS_URL), key, 1, sleep=sleep_and_flush)
    for _ in range(3):
        pace._reserve(keys=[key], args=["write", "x", 1, 1.0, local.START_PATIENCE])
    started = time.monotonic()
    pace.acquire("write")
    assert len(flushed) == 1 and flushed[0] > 2.5  # it was three slots back, slept once
    assert time.monotonic() - started < 1.0
    assert not pace.fallback._slots  # Redis answered: the process's own pace was not used


def test_redis_out_of_reach_hands_the_calls_to_the_process_own_pace_with_one_warning(caplog):
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    fallback = local.AccountPace(2)
    pace = SharedPace(down, account_key("AKDOWN", "eu-west-2", 2), 2, fallback=fallback)
    with caplog.at_level(logging.WARNING, logger="outscale.shared_pace"):
        for _ in range(3):
            pace.acquire("write")
    warnings = [r for r in caplog.records if "out of reach" in r.getMessage()]
    assert len(warnings) == 1
    assert "AKDOWN" not in caplog.text
    assert len(fallback._slots) == 3  # every call took the local pace's turn: still at most 2 a second


def test_the_account_key_names_neither_the_access_key_nor_the_region():
    key = account_key("AKIDENTITY1234", "eu-west-2", 10)
    assert key.startswith(shared_pace.KEY_PREFIX) and key.endswith(":10")
    assert "AKIDENTITY1234" not in key and "eu-west-2" not in key
    assert key != account_key("AKIDENTITY1234", "us-east-2", 10) != account_key("AKOTHER", "eu-west-2", 10)


def test_the_portals_calls_take_the_shared_pace_and_the_setting_turns_it_off(settings):
    from outscale import oapi
    from outscale.credentials import Credentials

    creds = Credentials(access_key="AKWIRED", secret_key="s" * 40, region="eu-west-2")
    settings.OMIPORTAL_OUTSCALE_PACE_SHARED = True
    assert isinstance(oapi.gateway_for(creds).limiter, SharedPace)
    settings.OMIPORTAL_OUTSCALE_PACE_SHARED = False
    assert isinstance(oapi.gateway_for(creds).limiter, local.AccountPace)
