"""Streamed CSV and JSON Lines exports of the audit trail, cut at the chain head.

The file format belongs to ``export_format`` (shared with ``audit_verify --export``): its
``EXPORT_COLUMNS``, ``event_row``, ``csv_cells`` and ``head_line`` write every byte here, oldest
event first (``seq`` order). The first line names the chain head the export was cut at; the
export holds only events with ``seq`` <= that head, whatever is appended while it streams.

CSV::

    # {"chain_head": {"hash": "<hex>", "seq": <n>}}
    seq,public_id,occurred_at,...            (EXPORT_COLUMNS)
    <one row per event>

JSON Lines::

    {"chain_head": {"hash": "<hex>", "seq": <n>}}
    {"seq": 1, "public_id": "...", ...}      (one object per event)

**Formula injection (CSV only).** A spreadsheet runs a cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return. ``escape_cell`` prefixes such cells, and cells that
already start with ``'``, with one ``'``; ``unescape_cell`` drops exactly one leading ``'``. The
mapping is reversible, so ``audit_verify --export`` MUST apply ``unescape_cell`` to every CSV cell
(not the ``#`` head line) before recomputing hashes. JSON Lines values are never escaped.

Memory stays constant whatever the size: rows come from ``.values().iterator(chunk_size=...)``
(a server-side cursor on PostgreSQL, ``fetchmany`` on SQLite) and leave one line at a time.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse

# Re-exported: the escaping lives with the export format so the verifier can undo it.
from omiportal.audit.export_format import FORMULA_PREFIXES, escape_cell, unescape_cell  # noqa: F401

CHUNK_SIZE = 2000
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


def _format():
    # The format is shared with `audit_verify --export`, which reads the same module.
    from omiportal.audit import export_format

    return export_format


class _Line:
    """A file-like sink for csv.writer that hands back each written line."""

    def __init__(self):
        self.buffer = io.StringIO()

    def write(self, text: str) -> None:
        self.buffer.write(text)

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def csv_lines(rows: Iterable[dict], *, head: tuple[int, str]) -> Iterator[str]:
    fmt = _format()
    sink = _Line()
    writer = csv.writer(sink, lineterminator="\r\n")
    writer.writerow(fmt.EXPORT_COLUMNS)
    yield fmt.head_line(seq=head[0], hash=head[1], csv=True) + "\r\n" + sink.take()
    for values in rows:
        writer.writerow([escape_cell(cell) for cell in fmt.csv_cells(fmt.event_row(values))])
        yield sink.take()


def jsonl_lines(rows: Iterable[dict], *, head: tuple[int, str]) -> Iterator[str]:
    fmt = _format()
    yield fmt.head_line(seq=head[0], hash=head[1]) + "\n"
    for values in rows:
        yield json.dumps(fmt.event_row(values), ensure_ascii=False, separators=(",", ":")) + "\n"


def export_rows(qs, *, head_seq: int):
    """The events of ``qs`` the export includes, as column values: up to the head, in chain order."""
    return qs.filter(seq__lte=head_seq).order_by("seq").values(*_format().EXPORT_COLUMNS)


def export_response(qs, *, fmt: str, head: tuple[int, str], scope: str) -> StreamingHttpResponse:
    """Stream ``qs`` (already scoped and filtered) as ``fmt``; no event is read until the body is."""
    rows = export_rows(qs, head_seq=head[0]).iterator(chunk_size=CHUNK_SIZE)
    body = csv_lines(rows, head=head) if fmt == "csv" else jsonl_lines(rows, head=head)
    response = StreamingHttpResponse(body, content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="audit-{scope}-{head[0]}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response
