"""A PostgreSQL connection of a test's own, outside Django's: the other side of an interleaving
(a transaction holding a lock while the code under test runs), or a monitor of pg_locks."""

import psycopg
from django.db import connection


def own_connection() -> psycopg.Connection:
    """An autocommit connection to the test database, apart from Django's connection."""
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                           password=db["PASSWORD"] or None, dbname=db["NAME"], autocommit=True)
