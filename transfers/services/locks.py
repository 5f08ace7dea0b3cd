"""PostgreSQL advisory locks held across a cloud call: serialise the changes to one thing in the
cloud (an export's object ACLs, one account's launch permission on one image) across workers.

Session locks, taken in sorted order (so two runs needing several never wait on each other in a
circle), before any transaction and released after the state is recorded; they hold no row, and
go with the connection if the worker dies. On SQLite (one process, `make run` and local tests)
they are no-ops.
"""

import contextlib
import hashlib

from django.db import connection


def _key(name: str) -> int:
    # 64 bits of a hash, signed as PostgreSQL's bigint.
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def advisory_locks(names):
    keys = sorted({_key(name) for name in names})
    if connection.vendor != "postgresql" or not keys:
        yield
        return
    taken = []
    try:
        with connection.cursor() as cursor:
            for key in keys:
                cursor.execute("SELECT pg_advisory_lock(%s)", [key])
                taken.append(key)
        yield
    finally:
        with connection.cursor() as cursor:
            for key in reversed(taken):
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def launch_permission_locks(image_id: str, account_ids):
    """One lock per (image, account): an addition and a removal for the same pair never overlap."""
    return advisory_locks(f"launch:{image_id}:{account_id}" for account_id in account_ids)
