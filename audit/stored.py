"""Reading stored events in bulk for hashing: verification, and the benchmark's bare loop.

On PostgreSQL the rows come from a server-side cursor of psycopg's own, with ``public_id`` and
``occurred_at`` written as text by the database in the form the canonical JSON holds them, and
the JSON columns left as their stored text: ``hashing.stored_event_hash`` takes them as they
are. Reading through the ORM, Django's Python timestamp loader and its per-row converters, then
formatting the values back into text, were about half of verification's time. Elsewhere the
ORM's rows and ``hashing.event_hash``.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections, transaction

from audit import hashing

# What verification reads of each event, in this order.
COLUMNS = ("prev_hash", "hash", *hashing.HASHED_FIELDS)

HashEvent = Callable[[str, tuple], str]  # (prev_hash, HASHED_FIELDS values) -> hash


def timestamp_text_sql(column: str) -> str:
    """SQL for ``hashing.format_timestamp`` of a timestamptz column, NULL outside the years 1000
    to 9999: there ``to_char`` would pad the year where Python does not, and would write a year
    BC like the same year AD. The recorder stamps the present, so such a time was not written
    by it."""
    return (f"CASE WHEN {column} >= '1000-01-01T00:00:00Z' AND {column} < '10000-01-01T00:00:00Z' "
            f"""THEN to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END""")


def _orm_hash(prev_hash: str, values: tuple) -> str:
    return hashing.event_hash(prev_hash=prev_hash, fields=dict(zip(hashing.HASHED_FIELDS, values, strict=True)))


def _cell(column: str) -> str:
    if column == "public_id":
        return 't."public_id"::text'
    if column == "occurred_at":
        return timestamp_text_sql('t."occurred_at"')
    return f't."{column}"'


@contextmanager
def stored_rows(queryset, chunk_size: int = 2000) -> Iterator[tuple[Iterable[tuple[Any, ...]], HashEvent]]:
    """``(rows, hash_event)``: the ``COLUMNS`` of ``queryset``'s events in ``seq`` order, in
    bounded memory, and the function that hashes an event's ``HASHED_FIELDS`` as the rows give
    them. The rows can be read until the block ends."""
    values = queryset.values_list(*COLUMNS)
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        yield values.order_by("seq").iterator(chunk_size=chunk_size), _orm_hash
        return
    inner, params = values.query.sql_with_params()
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    cells = ", ".join(_cell(c) for c in COLUMNS)
    # Only constant column names and Django's own SQL are pasted in; filter values stay parameters.
    sql = f"SELECT {cells} FROM ({inner}) AS t({names}) ORDER BY t.seq"  # noqa: S608
    connection.ensure_connection()
    # A named cursor needs a transaction; Django has psycopg read jsonb and inet as text already.
    with transaction.atomic(using=queryset.db), connection.connection.cursor(name="audit_stored_rows") as cursor:
        cursor.itersize = chunk_size
        cursor.execute(sql, params)
        yield cursor, hashing.stored_event_hash
