"""Interleavings on PostgreSQL: a connection of a test's own, outside Django's (the other side of
an interleaving, a transaction holding a lock while the code under test runs, or a monitor of
pg_locks), a gate that holds a row's lock, and services run on connections of their own."""

import contextlib
import threading
import time

import psycopg
from django.db import connection, connections

WAIT = 10.0  # seconds any step may take before the test gives up (a regression fails, never hangs)


def own_connection() -> psycopg.Connection:
    """An autocommit connection to the test database, apart from Django's connection."""
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                           password=db["PASSWORD"] or None, dbname=db["NAME"], autocommit=True)


def lock_waiters(monitor) -> int:
    return monitor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()[0]


def wait_for_waiters(monitor, n: int, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while lock_waiters(monitor) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never queued on the gate's lock")
        time.sleep(0.02)


class Run(threading.Thread):
    """A service on its own connection. Deadlocks are reported within a fraction of a second,
    and no lock is waited for longer than WAIT: a regression is an error, never a hang."""

    def __init__(self, name, func):
        super().__init__(name=name, daemon=True)
        self.func, self.error = func, None

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = '{int(WAIT * 1000)}ms'")
                cursor.execute("SET deadlock_timeout = '200ms'")
            self.func()
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            connections.close_all()


@contextlib.contextmanager
def gate(table_model, pk):
    """Hold ``pk``'s row lock from a third connection until the block ends."""
    gate = own_connection()
    try:
        gate.execute("BEGIN")
        gate.execute(f'SELECT 1 FROM "{table_model._meta.db_table}" WHERE id = %s FOR UPDATE', [pk])
        yield gate
    finally:
        with contextlib.suppress(Exception):
            gate.execute("ROLLBACK")
        gate.close()
