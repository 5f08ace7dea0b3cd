"""Streamed CSV and JSON Lines exports of the audit trail, cut at the chain head.

The file format belongs to ``download_format`` (shared with ``audit_verify --export``): its
``DOWNLOAD_COLUMNS``, ``event_row``, ``csv_cells`` and ``head_line`` write every byte here, oldest
event first (``seq`` order). The first line names the chain head the export was cut at; the
export holds only events with ``seq`` <= that head, whatever is appended while it streams.

CSV::

    # {"chain_head": {"hash": "<hex>", "seq": <n>}}
    seq,public_id,occurred_at,...            (DOWNLOAD_COLUMNS)
    <one row per event>

JSON Lines::

    {"chain_head": {"hash": "<hex>", "seq": <n>}}
    {"seq": 1, "public_id": "...", ...}      (one object per event)

**Formula injection (CSV only).** A spreadsheet runs a cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return. ``escape_cell`` prefixes such cells, and cells that
already start with ``'``, with one ``'``; ``unescape_cell`` drops exactly one leading ``'``. The
mapping is reversible, so ``audit_verify --export`` MUST apply ``unescape_cell`` to every CSV cell
(not the ``#`` head line) before recomputing hashes. JSON Lines values are never escaped.

Memory stays constant whatever the size: rows come from ``.values_list().iterator(chunk_size=...)``
(``fetchmany`` on SQLite) and leave ``CHUNK_SIZE`` lines at a time.

**CSV on PostgreSQL** is written by the database itself (``COPY (SELECT ...) TO STDOUT``), several
times faster than formatting rows in Python: the same columns, cells and escaping, except that lines
end with LF (CRLF elsewhere), an empty text cell is written ``""`` (a null stays empty), and
``details`` / ``cloud_request_ids`` are JSON text as PostgreSQL prints ``jsonb`` (its key order, a
space after ``:`` and ``,``). Readers parse those cells as JSON, as ``audit_verify --export`` does.
"""

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator

from django.db import connections
from django.http import StreamingHttpResponse

# The format is shared with `audit_verify --export`, which reads the same module; the escaping is
# re-exported from it so a reader of a download can undo it.
from audit import download_format, stored
from audit.download_format import FORMULA_PREFIXES, escape_cell, unescape_cell  # noqa: F401

CHUNK_SIZE = 2000
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


class _Sink:
    """A file-like sink for csv.writer that hands back what was written since the last take."""

    def __init__(self):
        self.buffer = io.StringIO()

    def write(self, text: str) -> None:
        self.buffer.write(text)

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def _chunks(rows: Iterable[tuple]) -> Iterator[list[tuple]]:
    # One yield per CHUNK_SIZE rows: per-row yields and writes cost more than the rows themselves.
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, CHUNK_SIZE)):
        yield chunk


def csv_lines(rows: Iterable[tuple], *, head: tuple[int, str]) -> Iterator[str]:
    """``rows``: values in ``DOWNLOAD_COLUMNS`` order. Yields the head, then one block of lines per chunk."""
    fmt = download_format
    sink = _Sink()
    writer = csv.writer(sink, lineterminator="\r\n")
    writer.writerow(fmt.DOWNLOAD_COLUMNS)
    yield fmt.head_line(seq=head[0], hash=head[1], csv=True) + "\r\n" + sink.take()
    for chunk in _chunks(rows):
        writer.writerows(fmt.csv_cells_of_values(chunk))
        yield sink.take()


def jsonl_lines(rows: Iterable[tuple], *, head: tuple[int, str]) -> Iterator[str]:
    fmt = download_format
    yield fmt.head_line(seq=head[0], hash=head[1]) + "\n"
    for chunk in _chunks(rows):
        yield "".join(json.dumps(fmt.event_row(dict(zip(fmt.DOWNLOAD_COLUMNS, values, strict=True))),
                                 ensure_ascii=False, separators=(",", ":")) + "\n" for values in chunk)


def download_rows(qs, *, head_seq: int):
    """The events of ``qs`` the export includes, as tuples of ``DOWNLOAD_COLUMNS``: up to the head, in chain order."""
    return qs.filter(seq__lte=head_seq).order_by("seq").values_list(*download_format.DOWNLOAD_COLUMNS)


# escape_cell, in SQL: one leading "'" before a cell a spreadsheet would run (or one already quoted).
_SQL_ESCAPE = "CASE WHEN left({0}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r', '''') THEN '''' || {0} ELSE {0} END"
_SQL_AS_IS = ("seq", "public_id", "actor_id", "team_id", "prev_hash", "hash")  # digits, a UUID, hex: never escaped


def _sql_cell(column: str) -> str:
    col = f't."{column}"'
    if column in _SQL_AS_IS:
        return f"{col}::text"
    if column == "occurred_at":  # hashing.format_timestamp
        return stored.timestamp_text_sql(col)
    if column == "ip":
        return _SQL_ESCAPE.format(f"host({col}::inet)")
    return _SQL_ESCAPE.format(f"{col}::text")


def copy_csv_lines(qs, *, head: tuple[int, str], using: str = "default") -> Iterator[bytes]:
    """The CSV export written by PostgreSQL's COPY: the query Django builds for ``download_rows``,
    wrapped in a SELECT that formats and escapes each cell, streamed in blocks of about 256 kB."""
    fmt = download_format
    inner, params = download_rows(qs, head_seq=head[0]).query.sql_with_params()
    columns = ", ".join(f'"{c}"' for c in fmt.DOWNLOAD_COLUMNS)
    cells = ", ".join(_sql_cell(c) for c in fmt.DOWNLOAD_COLUMNS)
    # Only constant column names and Django's own SQL are pasted in; filter values stay parameters.
    statement = f"COPY (SELECT {cells} FROM ({inner}) AS t({columns}) ORDER BY t.seq) TO STDOUT WITH (FORMAT csv)"  # noqa: S608
    sink = _Sink()
    csv.writer(sink, lineterminator="\n").writerow(fmt.DOWNLOAD_COLUMNS)
    yield (fmt.head_line(seq=head[0], hash=head[1], csv=True) + "\n" + sink.take()).encode()
    connection = connections[using]
    connection.ensure_connection()
    block = bytearray()
    with connection.connection.cursor() as cursor, cursor.copy(statement, params) as copy:
        for data in copy:  # one message per row: gathered, or each row would be its own write
            block += data
            if len(block) >= 262144:
                yield bytes(block)
                block.clear()
    if block:
        yield bytes(block)


def download_response(qs, *, fmt: str, head: tuple[int, str], scope: str) -> StreamingHttpResponse:
    """Stream ``qs`` (already scoped and filtered) as ``fmt``; no event is read until the body is."""
    if fmt == "csv" and connections[qs.db].vendor == "postgresql":
        body = copy_csv_lines(qs, head=head, using=qs.db)
    else:
        rows = download_rows(qs, head_seq=head[0]).iterator(chunk_size=CHUNK_SIZE)
        body = csv_lines(rows, head=head) if fmt == "csv" else jsonl_lines(rows, head=head)
    response = StreamingHttpResponse(body, content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="audit-{scope}-{head[0]}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response
