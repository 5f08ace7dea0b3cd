"""Check an audit export file (``download_format``) on its own, optionally against a signed checkpoint.

Streams the file (one row in memory at a time). Every row's hash must recompute
from its own fields and ``prev_hash``; rows with adjacent ``seq`` must link; a row
``seq`` 1 must link to genesis. A filtered export leaves gaps, so only rows that
are adjacent are linked. A checkpoint file, if given, must carry a valid
signature from a known key, and the row at its ``seq`` (if exported) must have
its hash; a complete export (from #1, no gaps) must reach it. A ``chain_head``
line is checked the same way.
"""

import csv
import datetime
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit import checkpoints, hashing
from audit.download_format import (
    CSV_INT_COLUMNS,
    CSV_JSON_COLUMNS,
    CSV_NULLABLE_COLUMNS,
    DOWNLOAD_COLUMNS,
    HEAD_KEY,
    unescape_cell,
)
from audit.errors import AuditError

BAD_ROW = "bad_row"
ORDER = "order"


@dataclass(frozen=True)
class DownloadResult:
    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str | None = None
    message: str = ""
    contiguous: bool = True  # no gaps between rows (a complete export if it starts at #1)

    def __bool__(self) -> bool:
        return self.ok


class _RowError(Exception):
    def __init__(self, line: int, message: str, seq: Any = None):
        super().__init__(message)
        self.line, self.seq = line, seq


def _head(obj: Any) -> tuple[int, str] | None:
    if isinstance(obj, dict) and set(obj) == {HEAD_KEY}:
        head = obj[HEAD_KEY]
        if isinstance(head, dict) and type(head.get("seq")) is int and isinstance(head.get("hash"), str):
            return head["seq"], head["hash"]
        raise _RowError(1, "the chain_head line is malformed")
    return None


def _jsonl(handle) -> Iterator[tuple[int, dict | tuple]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise _RowError(number, f"line {number} is not JSON") from None
        head = _head(obj) if number == 1 else None
        yield number, (head if head else obj)


def _csv(handle) -> Iterator[tuple[int, dict | tuple]]:
    first = handle.readline()
    if first.startswith("#"):
        try:
            head = _head(json.loads(first.lstrip("#").strip()))
        except ValueError:
            raise _RowError(1, "the comment line is not a chain_head JSON object") from None
        if head:
            yield 1, head
        lines = handle
    else:
        lines = itertools.chain([first], handle)
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(header) != DOWNLOAD_COLUMNS:
        raise _RowError(1, "the CSV header is not DOWNLOAD_COLUMNS")
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(DOWNLOAD_COLUMNS):
            raise _RowError(reader.line_num, f"CSV line {reader.line_num} has {len(cells)} cells")
        row: dict[str, Any] = dict(zip(DOWNLOAD_COLUMNS, map(unescape_cell, cells), strict=True))
        try:
            for column in CSV_NULLABLE_COLUMNS:
                row[column] = row[column] or None
            for column in CSV_INT_COLUMNS:
                row[column] = int(row[column]) if row[column] is not None else None
            for column in CSV_JSON_COLUMNS:
                row[column] = json.loads(row[column])
        except ValueError:
            raise _RowError(reader.line_num, f"CSV line {reader.line_num} has a malformed cell",
                            seq=row.get("seq")) from None
        yield reader.line_num, row


def _fields(row: dict) -> dict[str, Any]:
    if set(row) != set(DOWNLOAD_COLUMNS):
        raise AuditError("wrong columns")
    if type(row["seq"]) is not int:
        raise AuditError("seq is not an integer")
    fields = {name: row[name] for name in hashing.HASHED_FIELDS}
    try:
        fields["occurred_at"] = datetime.datetime.strptime(row["occurred_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.UTC)
    except (TypeError, ValueError):
        raise AuditError("occurred_at is not a UTC timestamp") from None
    return fields


def _detect_csv(path: Path, handle) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return False
    start = handle.read(1)
    handle.seek(0)
    return start != "{"


def verify_download(path: str | Path, *, checkpoint: checkpoints.Checkpoint | None = None) -> DownloadResult:
    path = Path(path)
    rows, contiguous, direction = 0, True, 0
    previous: dict | None = None
    first_seq: int | None = None
    head: tuple[int, str] | None = None
    anchors: dict[int, tuple[str, str]] = {}  # seq -> (hash, what)
    seen_anchor: set[int] = set()
    if checkpoint is not None:
        anchors[checkpoint.seq] = (checkpoint.hash, f"signed checkpoint #{checkpoint.number}")

    def fail(seq, reason, message):
        return DownloadResult(ok=False, rows=rows, first_bad_seq=seq, reason=reason, message=message,
                            contiguous=contiguous)

    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = _csv(handle) if _detect_csv(path, handle) else _jsonl(handle)
            for line, item in reader:
                if isinstance(item, tuple):
                    head = item
                    anchors.setdefault(head[0], (head[1], "the export's chain_head line"))
                    continue
                try:
                    fields = _fields(item)
                    recomputed = hashing.event_hash(prev_hash=str(item["prev_hash"]), fields=fields)
                except (AuditError, TypeError, ValueError) as exc:
                    seq = item.get("seq") if isinstance(item, dict) else None
                    return fail(seq, BAD_ROW, f"line {line} (event #{seq}) cannot be read: {exc}")
                seq = fields["seq"]
                if recomputed != item["hash"]:
                    return fail(seq, "hash_mismatch", f"event #{seq} (line {line}) has been altered "
                                                      f"(its content does not match its hash)")
                if seq == 1 and item["prev_hash"] != hashing.GENESIS_HASH:
                    return fail(seq, "broken_link", "event #1 does not start from the genesis hash")
                if previous is not None:
                    step = seq - previous["seq"]
                    if step == 0 or (direction and (step > 0) != (direction > 0)):
                        return fail(seq, ORDER, f"event #{seq} (line {line}) is out of order")
                    direction = direction or (1 if step > 0 else -1)
                    if abs(step) != 1:
                        contiguous = False
                    else:
                        later, earlier = (item, previous) if step > 0 else (previous, item)
                        if later["prev_hash"] != earlier["hash"]:
                            return fail(later["seq"], "broken_link",
                                        f"event #{later['seq']} does not link to event #{earlier['seq']}")
                if seq in anchors:
                    expected, what = anchors[seq]
                    if expected != item["hash"]:
                        return fail(seq, "checkpoint_mismatch", f"event #{seq} differs from {what}")
                    seen_anchor.add(seq)
                first_seq = seq if first_seq is None else first_seq
                previous, rows = item, rows + 1
    except _RowError as exc:
        return fail(exc.seq, BAD_ROW, str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        return fail(None, BAD_ROW, f"the export cannot be read: {exc}")

    if previous is not None and contiguous:
        low, high = sorted((first_seq, previous["seq"]))
        complete = low == 1
        for seq, (_hash, what) in sorted(anchors.items()):
            if complete and seq > high and seq not in seen_anchor:
                return fail(high + 1, "checkpoint_beyond_chain",
                            f"{what} is at event #{seq} but this complete export ends at #{high}")
    kind = "complete" if contiguous and first_seq in (1, None) else ("contiguous" if contiguous else "filtered")
    checked = f"; matches {len(seen_anchor)} anchor(s)" if seen_anchor else ""
    return DownloadResult(ok=True, rows=rows, contiguous=contiguous,
                        message=f"export intact: {rows} row(s), {kind}{checked}")
