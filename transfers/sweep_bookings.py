"""At most one waiting sweep per account and kind: the earliest one booked.

Every import started asks for its first look, a sweep_min later, on the grid of its account
(scheduling.schedule_sweep). A release into 1,000 accounts starts each account's imports over a
minute or more, so each account got a sweep in up to ten grid cells: 9,012 sweeps queued for
10,000 imports, of which the first of each account looked and the others found nothing to do,
each still costing a worker ~90 ms of queries. Detection p95 was 435 s for a 5 s sweep.

A sweep that runs books the next one itself, from the database (polling.schedule_next: the
earliest look still due). So while a sweep of the account is waiting to run, a look asked for
at or after its time needs no job of its own: that sweep will read the row, and either claim it
(it is due) or book its look. The mechanism is one Redis key per account and kind, holding the
time and job id of the earliest sweep booked and not yet begun:

- booking at a time not before the key's is skipped; an earlier one replaces the key;
- a sweep's job clears the key as it begins, before it reads anything, when the key names it
  or a time already due (that sweep's claim covers it), so every look asked for from then on
  books again, and the sweep's own schedule_next is never swallowed by its own booking.

Why nothing is lost: a booking is skipped only after its row committed (schedule_sweep sends on
commit) and while the key still names a waiting sweep; that sweep clears the key when it
begins, so it begins after the commit and reads the row. Clearing is always safe (at worst a
sweep more). A key whose sweep never runs (its job deleted) expires a grace period and a
back-off ceiling after its time, and the reconciler, which books the looks it finds lost,
replaces the key rather than defer to it. A flushed Redis loses the keys with the jobs.
"""

import contextlib
import functools

from redis.exceptions import RedisError

KEY = "omiportal:sweep-booked:{kind}:{account}"

# The key holds "<time>|<job id>". 1: book (the key set to this sweep), 0: a sweep is waiting
# at or before this time.
_BOOK = """
local cur = redis.call('GET', KEYS[1])
if cur and ARGV[4] ~= '1' and tonumber(string.match(cur, '^[^|]+')) <= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
"""

# Clear the key when it names this job or a time up to ARGV[2]; 1 when cleared.
_CLEAR = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local at, job = string.match(cur, '^([^|]+)|(.*)$')
if job == ARGV[1] or tonumber(at) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def _key(kind: str, account_public_id) -> str:
    return KEY.format(kind=kind, account=account_public_id)


@functools.lru_cache(maxsize=8)
def _scripts(connection):
    # EVALSHA after the first call, as outscale/shared_pace.py does (one client per URL and process).
    return connection.register_script(_BOOK), connection.register_script(_CLEAR)


def book(connection, kind: str, account_public_id, *, at: float, job_id: str, ttl: int,
         replace: bool = False) -> bool:
    """Whether the sweep ``job_id`` due at ``at`` (a timestamp) should be enqueued: False when
    an earlier or equal one is waiting; ``replace``: book it whatever waits. The key lives ``ttl``
    seconds. Redis out of reach: True (the enqueue will say so)."""
    try:
        return bool(_scripts(connection)[0](keys=[_key(kind, account_public_id)],
                                            args=[repr(at), job_id, ttl, "1" if replace else "0"]))
    except RedisError:
        return True


def clear(connection, kind: str, account_public_id, *, job_id: str, due_by: float = 0.0) -> None:
    """Let looks book again: the sweep ``job_id`` begins (or was not enqueued after all), which
    covers any sweep booked up to ``due_by``."""
    with contextlib.suppress(RedisError):  # the key expires by itself
        _scripts(connection)[1](keys=[_key(kind, account_public_id)], args=[job_id, repr(due_by)])


def booked(connection, kind: str, account_public_id) -> tuple[float, str] | None:
    """(time, job id) of the waiting sweep the key names, or None."""
    value = connection.get(_key(kind, account_public_id))
    if value is None:
        return None
    at, job_id = value.decode().split("|", 1)
    return float(at), job_id
