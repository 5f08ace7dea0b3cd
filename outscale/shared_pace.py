"""The account's pace shared by every process that calls it: one allowance per account in Redis.

OUTSCALE throttles per account (codes 24 and 25), not per process. With a pace per process
(pace.AccountPace), N worker processes on M hosts call one account up to N × M times the allowance,
and a burst of creates seen by one process goes at that process's allowance while the others' lies
unused. `SharedPace` keeps the account's slots in one Redis sorted set instead, under the same rule
as AccountPace: at most ``per_second`` calls in any window, looks first, then the writes of work in
flight, then (for START_PATIENCE seconds) the starts of new work. A lower rank takes the earliest
future slot of a higher one and every passed slot moves one later, so the set of slot times, and
so the total, is the one plain arrivals would have made.

Mechanism, not timing: a reservation is one Lua script (atomic in Redis), and every time in it is
Redis's own clock (TIME), so hosts whose clocks disagree by seconds share one timeline; a caller
sleeps for a duration Redis computed, then asks again whether its slot moved. A slot missing when
asked (Redis flushed, or the key expired) lets the caller go: a flushed Redis may let a second's
calls through twice (OUTSCALE's throttling answers are retried), never holds a call forever.
Redis out of reach: the process's own pace takes over, with a warning, until Redis answers again.
"""

import hashlib
import logging
import threading
import time
import uuid

import redis

from outscale import pace as local

logger = logging.getLogger(__name__)

KEY_PREFIX = "omiportal:pace:"
RETRY_REDIS_AFTER = 5.0  # seconds on the local pace after Redis failed, before trying it again

# KEYS[1] the account's slots; ARGV: kind, a unique id, per_second, window, start patience.
# A slot's member is "kind|arrived|id", its score the slot's time. Returns {slot, now, member},
# the times as strings (Lua numbers would come back as integers).
_RESERVE = """
local key, kind = KEYS[1], ARGV[1]
local per_second, window, patience = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ranks = {look = 0, write = 1, start = 2}
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local free = now
local held = redis.call('ZCARD', key)
if held >= per_second then
  local back = redis.call('ZRANGE', key, held - per_second, held - per_second, 'WITHSCORES')
  free = math.max(now, tonumber(back[2]) + window)
end
local mine = ranks[kind]
local passed, times = {}, {}
local future = redis.call('ZRANGEBYSCORE', key, '(' .. string.format('%.6f', now), '+inf', 'WITHSCORES')
for i = 1, #future, 2 do
  local other, arrived = string.match(future[i], '^(%a+)|([%d%.]+)|')
  local rank = ranks[other]
  if other == 'start' and now - tonumber(arrived) >= patience then rank = ranks.write end
  if rank > mine then
    passed[#passed + 1] = future[i]
    times[#times + 1] = tonumber(future[i + 1])
  end
end
times[#times + 1] = free
table.sort(times)
for i, other in ipairs(passed) do
  redis.call('ZADD', key, string.format('%.6f', times[i + 1]), other)
end
local at = times[1]
local member = kind .. '|' .. string.format('%.6f', now) .. '|' .. ARGV[2]
redis.call('ZADD', key, string.format('%.6f', at), member)
redis.call('PEXPIRE', key, math.ceil((times[#times] - now + window) * 1000) + 1000)
return {string.format('%.6f', at), string.format('%.6f', now), member}
"""

# KEYS[1] the account's slots; ARGV[1] the caller's member. Returns {slot or '', now}.
_WHEN = """
local t = redis.call('TIME')
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
return {at or '', string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)}
"""


def account_key(access_key: str, region: str, per_second: int) -> str:
    # Hashed: the access key identifies an account and stays out of Redis's keyspace.
    digest = hashlib.sha256(f"{access_key}\0{region}".encode()).hexdigest()[:24]
    return f"{KEY_PREFIX}{digest}:{int(per_second)}"


class SharedPace:
    """At most ``per_second`` calls to one account in any window, across every process that
    shares the Redis at ``client``; looks before writes before young starts. Has the SDK limiter's
    one method, ``acquire()``; the kind of call comes from ``pace.calls_as()``."""

    def __init__(self, client: redis.Redis, key: str, per_second: int, *, window: float = 1.0,
                 fallback: local.AccountPace | None = None, sleep=time.sleep) -> None:
        self.key = key
        self.per_second, self.window = max(1, int(per_second)), window
        self.fallback = fallback or local.AccountPace(per_second, window=window)
        self._reserve = client.register_script(_RESERVE)
        self._when = client.register_script(_WHEN)
        self._sleep = sleep
        self._redis_failed_at: float | None = None
        self._lock = threading.Lock()

    def _use_redis(self) -> bool:
        with self._lock:
            failed = self._redis_failed_at
            return failed is None or time.monotonic() - failed >= RETRY_REDIS_AFTER

    def _redis_failed(self, error: Exception) -> None:
        with self._lock:
            first = self._redis_failed_at is None
            self._redis_failed_at = time.monotonic()
        if first:  # once per outage, not once per call
            logger.warning("The shared OAPI pace is out of reach (%s); this process paces its own calls "
                           "until Redis answers again.", type(error).__name__)

    def acquire(self, kind: str | None = None) -> float:
        """Wait for this call's slot; returns how long it waited (seconds)."""
        kind = kind or local.current_kind()
        if not self._use_redis():
            return self.fallback.acquire(kind)
        try:
            at, now, member = self._reserve(keys=[self.key], args=[
                kind, uuid.uuid4().hex, self.per_second, self.window, local.START_PATIENCE])
            at, now = float(at), float(now)
            arrived = now
            while at > now:  # sleep until the slot; a look may have moved it later meanwhile
                self._sleep(at - now)
                answer, now_text = self._when(keys=[self.key], args=[member])
                now = float(now_text)
                if not answer:
                    break  # the slot is gone (Redis flushed, the key expired): go
                at = float(answer)
            waited = max(0.0, now - arrived)
        except redis.RedisError as error:
            self._redis_failed(error)
            return self.fallback.acquire(kind)
        if self._redis_failed_at is not None:
            with self._lock:
                self._redis_failed_at = None
            logger.info("The shared OAPI pace answers again.")
        return waited


_paces = local.PerProcess()
_clients = local.PerProcess()


def forget_paces() -> None:
    """Forget this process's handles (the slots stay in Redis: they are every process's)."""
    _paces.clear()


def _client(url: str) -> redis.Redis:
    # Short timeouts: a Redis that does not answer sends the call to the local pace within a
    # second or two, rather than holding it for the OAPI call's own timeout.
    return _clients.get(url, lambda: redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0))


def pace_for(url: str, access_key: str, region: str, per_second: int) -> SharedPace | local.AccountPace:
    """The pace of one account in one Region: shared through the Redis at ``url``, or this
    process's own without one."""
    if not url:
        return local.pace_for(access_key, region, per_second)
    return _paces.get((url, access_key, region, int(per_second)), lambda: SharedPace(
        _client(url), account_key(access_key, region, per_second), per_second,
        fallback=local.pace_for(access_key, region, per_second)))
