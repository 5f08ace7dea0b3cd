"""Canonical serialisation and the hash chain, shared by the recorder and verification.

An event's hash is ``sha256(prev_hash + canonical)`` where ``canonical`` is the
UTF-8 of a deterministic JSON object holding every hashed field. The rules exist
so the same event always gives the same bytes, and different events never do:

- keys sorted, no whitespace, non-ASCII kept as is (no escaping variants);
- only JSON's own types in ``details``: str, int, bool, None, lists and objects
  with string keys. Floats are refused (``1.0`` vs ``1`` and rounding across
  databases would make hashes unstable); so are dates, UUIDs, Decimals, bytes:
  the caller chooses their string form, we don't guess it;
- typed values stay typed: ``1`` and ``"1"``, ``None`` and ``"None"`` differ;
- strings may hold anything PostgreSQL can store: NUL and lone surrogates are
  refused because they would fail (or change) on the way into the database.

This module knows nothing about models, so a later checkpoint feature can reuse it.
"""

import datetime
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from omiportal.audit.errors import AuditError

GENESIS_HASH = "0" * 64
# Bumped if the canonical form ever changes; hashed, so old events keep verifying
# under the rules they were written with.
CANONICAL_VERSION = 1

# Every column that goes into an event's hash (model attribute names). ``prev_hash``
# is chained in by concatenation, ``hash`` is the result.
HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "public_id",
    "occurred_at",
    "actor_id",
    "actor_name",
    "team_id",
    "team_name",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "outcome",
    "details",
    "request_id",
    "ip",
    "user_agent",
    "cloud_request_ids",
)

# JSON integers beyond 64 bits don't survive every database and every parser.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

FLOAT_REFUSED = "Audit details cannot hold floats (at {path}); record a string or an integer instead."
TYPE_REFUSED = "Audit details cannot hold a {type} (at {path}); convert it to a string, number, list or object first."
KEY_REFUSED = "Audit details keys must be strings (at {path}, got a {type})."
INT_REFUSED = "Audit details integers must fit in 64 bits (at {path})."
CHAR_REFUSED = "Audit strings cannot contain NUL characters or lone surrogates (at {path})."
FIELD_MISSING = "Cannot hash an audit event without its {field!r} field."


def check_text(value: str, *, path: str) -> str:
    """Refuse strings the database would reject or silently alter."""
    if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
        raise AuditError(CHAR_REFUSED.format(path=path))
    return value


def normalise_json(value: Any, *, path: str = "details") -> Any:
    """Return ``value`` as plain JSON data (tuples become lists), refusing anything else.

    The result is what gets stored and hashed, so what the database gives back
    later serialises to the very same bytes.
    """
    # bool before int: bool is an int subclass but a different JSON value.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise AuditError(INT_REFUSED.format(path=path))
        return int(value)
    if isinstance(value, float):
        raise AuditError(FLOAT_REFUSED.format(path=path))
    if isinstance(value, str):
        return check_text(str(value), path=path)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditError(KEY_REFUSED.format(path=path, type=type(key).__name__))
            check_text(key, path=f"{path}.{key!r}")
            result[str(key)] = normalise_json(item, path=f"{path}[{key!r}]")
        return result
    if isinstance(value, list | tuple):
        return [normalise_json(item, path=f"{path}[{index}]") for index, item in enumerate(value)]
    raise AuditError(TYPE_REFUSED.format(path=path, type=type(value).__name__))


def dumps(value: Any) -> str:
    """Deterministic JSON text of already-normalised data."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_timestamp(value: datetime.datetime) -> str:
    """UTC, always with microseconds, so a stored and re-read time formats identically."""
    if value.tzinfo is None:
        raise AuditError("Audit timestamps must be timezone-aware.")
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hashable(name: str, value: Any) -> Any:
    if name == "occurred_at":
        return format_timestamp(value)
    if name == "public_id":
        return str(uuid.UUID(str(value)))
    if name in ("details", "cloud_request_ids"):
        return normalise_json(value, path=name)
    if isinstance(value, str):
        return check_text(value, path=name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise AuditError(TYPE_REFUSED.format(path=name, type=type(value).__name__))


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The canonical form of one event: every ``HASHED_FIELDS`` entry, nothing else."""
    payload: dict[str, Any] = {"v": CANONICAL_VERSION}
    for name in HASHED_FIELDS:
        if name not in fields:
            raise AuditError(FIELD_MISSING.format(field=name))
        payload[name] = _hashable(name, fields[name])
    return dumps(payload).encode("utf-8")


def chain_hash(*, prev_hash: str, canonical: bytes) -> str:
    """Hex SHA-256 of the previous hash (64 hex chars, so unambiguous) and this event."""
    return hashlib.sha256(prev_hash.encode("utf-8") + canonical).hexdigest()


def event_hash(*, prev_hash: str, fields: Mapping[str, Any]) -> str:
    return chain_hash(prev_hash=prev_hash, canonical=canonical_bytes(fields))
