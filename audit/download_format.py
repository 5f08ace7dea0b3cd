"""The audit export file format, shared by the streamed exports and ``audit_verify --export``.

Two encodings with the same columns, ``DOWNLOAD_COLUMNS``, in that order:

- JSON Lines (``.jsonl``): one JSON object per line, keys = ``DOWNLOAD_COLUMNS``.
  ``seq``, ``actor_id``, ``team_id`` are integers or null; ``ip`` a string or null;
  ``details`` an object and ``cloud_request_ids`` a list (as stored);
  ``occurred_at`` is ``hashing.format_timestamp`` (``2025-01-02T03:04:05.000006Z``);
  ``public_id`` the UUID with hyphens; ``prev_hash``/``hash`` 64 hex characters.
  The first line may instead be ``{"chain_head": {"seq": <int>, "hash": "<hex>"}}``.
- CSV (``.csv``, RFC 4180, UTF-8): a header row naming ``DOWNLOAD_COLUMNS``, then one
  row per event. Null is the empty cell (``actor_id``, ``team_id``, ``ip``);
  ``details`` and ``cloud_request_ids`` are JSON text (``hashing.dumps``, or on PostgreSQL the
  database's own ``jsonb`` text: read them as JSON, never compare them as text). Lines end with
  CRLF, or LF when PostgreSQL's COPY wrote the file (``downloads.copy_csv_lines``).
  The very first line may be a comment: ``# {"chain_head": {"seq": <int>, "hash": "<hex>"}}``.

Rows should be in ascending ``seq`` order (descending is accepted). A filtered export
simply leaves rows out. Use ``event_row`` / ``csv_cells`` / ``head_line`` to write
rows, so what is written is what verification reads back.
"""

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from audit import hashing

DOWNLOAD_COLUMNS: tuple[str, ...] = (
    "seq", "public_id", "occurred_at", "actor_id", "actor_name", "team_id", "team_name", "action",
    "target_type", "target_id", "target_label", "outcome", "details", "request_id", "ip", "user_agent",
    "cloud_request_ids", "prev_hash", "hash",
)
# Columns carried as JSON text in CSV.
CSV_JSON_COLUMNS = ("details", "cloud_request_ids")
# Columns where an empty CSV cell means null.
CSV_NULLABLE_COLUMNS = ("actor_id", "team_id", "ip")
CSV_INT_COLUMNS = ("seq", "actor_id", "team_id")
CSV_COMMENT = "# "
HEAD_KEY = "chain_head"

assert set(DOWNLOAD_COLUMNS) == {*hashing.HASHED_FIELDS, "prev_hash", "hash"}  # noqa: S101 - a format invariant


def event_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSONL object of one event, from a mapping of its model attributes (``values()`` of an AuditEvent)."""
    row = {column: values[column] for column in DOWNLOAD_COLUMNS}
    row["occurred_at"] = hashing.format_timestamp(row["occurred_at"])
    row["public_id"] = str(row["public_id"])
    return row


def csv_cells(row: Mapping[str, Any]) -> list[str]:
    """The CSV cells of an ``event_row``."""
    cells = []
    for column in DOWNLOAD_COLUMNS:
        value = row[column]
        if column in CSV_JSON_COLUMNS:
            cells.append(hashing.dumps(value))
        elif value is None:
            cells.append("")
        else:
            cells.append(str(value))
    return cells


def csv_cells_of_values(rows: Iterable[Sequence[Any]]) -> Iterator[list[str]]:
    """``escape_cell`` applied to ``csv_cells(event_row(...))`` of each row of values in
    ``DOWNLOAD_COLUMNS`` order (``values_list``), the same cells without the intermediate dicts.

    The export runs this on every row; tests check it against ``csv_cells`` and ``event_row``.
    """
    dumps, timestamp, escaped = hashing.dumps, hashing.format_timestamp, _ESCAPED
    for (seq, public_id, occurred_at, actor_id, actor_name, team_id, team_name, action, target_type, target_id,
         target_label, outcome, details, request_id, ip, user_agent, cloud_request_ids, prev_hash, hash_) in rows:
        cells = [
            "" if seq is None else str(seq), str(public_id), timestamp(occurred_at),
            "" if actor_id is None else str(actor_id), _text(actor_name),
            "" if team_id is None else str(team_id), _text(team_name), _text(action),
            _text(target_type), _text(target_id), _text(target_label), _text(outcome), dumps(details),
            _text(request_id), _text(ip), _text(user_agent), dumps(cloud_request_ids), _text(prev_hash), _text(hash_),
        ]
        yield [("'" + cell) if cell.startswith(escaped) else cell for cell in cells]


def _text(value: Any) -> str:
    # csv_cells: null is the empty cell, anything else its str().
    return "" if value is None else value if type(value) is str else str(value)


def head_line(*, seq: int, hash: str, csv: bool = False) -> str:
    """The optional first line naming the chain head at export time (without newline)."""
    text = json.dumps({HEAD_KEY: {"seq": seq, "hash": hash}}, sort_keys=True)
    return CSV_COMMENT + text if csv else text


# Spreadsheets run a cell that starts like a formula: CSV exports defuse such cells with one
# leading "'", and `audit_verify --export` removes exactly that before checking hashes.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED = (*FORMULA_PREFIXES, "'")


def escape_cell(value: str) -> str:
    """Defuse a CSV cell a spreadsheet would run as a formula. Reversed by ``unescape_cell``."""
    return "'" + value if value.startswith(_ESCAPED) else value


def unescape_cell(value: str) -> str:
    """The exact inverse of ``escape_cell``: drop one leading ``'``."""
    return value[1:] if value.startswith("'") else value
