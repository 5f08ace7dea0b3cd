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
import re
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


# NUL and the surrogate range. One regex scan in C: a per-character Python loop was about a
# third of audit_verify's time.
_REFUSED_CHARS = re.compile("[\x00\ud800-\udfff]")


def check_text(value: str, *, path: str) -> str:
    """Refuse strings the database would reject or silently alter."""
    if _REFUSED_CHARS.search(value) is not None:
        raise AuditError(CHAR_REFUSED.format(path=path))
    return value


class _NotPlain(Exception):
    """Raised by the fast path for anything it does not handle; the careful path decides."""


def _plain(value: Any) -> Any:
    """``normalise_json`` for exact JSON types only, without building error paths.

    Verification runs this on every stored event, so it avoids the per-item path strings
    and ABC checks; any other type, or a value to refuse, sends the caller to the careful
    path, which gives the same result or the error with its path.
    """
    kind = type(value)
    if kind is str:
        if _REFUSED_CHARS.search(value) is not None:
            raise _NotPlain
        return value
    if value is None or kind is bool:
        return value
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _NotPlain
        return value
    if kind is dict:
        result = {}
        for key, item in value.items():
            if type(key) is not str or _REFUSED_CHARS.search(key) is not None:
                raise _NotPlain
            result[key] = _plain(item)
        return result
    if kind is list:
        return [_plain(item) for item in value]
    raise _NotPlain


def normalise_json(value: Any, *, path: str = "details") -> Any:
    """Return ``value`` as plain JSON data (tuples become lists), refusing anything else.

    The result is what gets stored and hashed, so what the database gives back
    later serialises to the very same bytes.
    """
    try:
        return _plain(value)
    except _NotPlain:
        return _normalise_checked(value, path=path)


def _normalise_checked(value: Any, *, path: str) -> Any:
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
            result[str(key)] = _normalise_checked(item, path=f"{path}[{key!r}]")
        return result
    if isinstance(value, list | tuple):
        return [_normalise_checked(item, path=f"{path}[{index}]") for index, item in enumerate(value)]
    raise AuditError(TYPE_REFUSED.format(path=path, type=type(value).__name__))


# One encoder for every call: json.dumps builds a new one whenever options are given.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode_string = json.encoder.encode_basestring  # what _ENCODER writes a str with (ensure_ascii=False)


def dumps(value: Any) -> str:
    """Deterministic JSON text of already-normalised data."""
    return _ENCODER.encode(value)


def format_timestamp(value: datetime.datetime) -> str:
    """UTC, always with microseconds, so a stored and re-read time formats identically."""
    if value.tzinfo is None:
        raise AuditError("Audit timestamps must be timezone-aware.")
    utc = value.astimezone(datetime.UTC)
    if utc.year < 1000:  # strftime's %Y does not pad them; isoformat would
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # the same text, faster


_CONVERTED = frozenset({"occurred_at", "public_id", "details", "cloud_request_ids"})


def _hashable(name: str, value: Any) -> Any:
    if name == "occurred_at":
        return format_timestamp(value)
    if name == "public_id":
        return str(value) if type(value) is uuid.UUID else str(uuid.UUID(str(value)))
    if name in ("details", "cloud_request_ids"):
        return normalise_json(value, path=name)
    if isinstance(value, str):
        return check_text(value, path=name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise AuditError(TYPE_REFUSED.format(path=name, type=type(value).__name__))


_PLAIN_FIELDS = tuple(name for name in HASHED_FIELDS if name not in _CONVERTED)
# _canonical_text_plain writes these keys in this order: sorted, as dumps would.
_WRITTEN_KEYS = ("action", "actor_id", "actor_name", "cloud_request_ids", "details", "ip", "occurred_at", "outcome",
                 "public_id", "request_id", "seq", "target_id", "target_label", "target_type", "team_id", "team_name",
                 "user_agent", "v")
assert tuple(sorted((*HASHED_FIELDS, "v"))) == _WRITTEN_KEYS  # noqa: S101 - a canonical-form invariant


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The canonical form of one event: every ``HASHED_FIELDS`` entry, nothing else."""
    # Verification hashes every stored event: try the written-out form first. Anything it does
    # not handle, and any text that may hold a refused character, takes the careful path, which
    # gives the same bytes or the error.
    try:
        text = _canonical_text_plain(fields)
    except (_NotPlain, KeyError, AuditError):
        pass
    else:
        if "\\u0000" not in text and _SURROGATES.search(text) is None:
            return text.encode("utf-8")
    return _canonical_bytes_checked(fields)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _json_scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    raise _NotPlain


def _canonical_text_plain(f: Mapping[str, Any]) -> str:
    """``dumps`` of the canonical payload, key by key in sorted order, for exact types only
    (text, integers and nulls; a datetime, a UUID; plain JSON details): about twice as fast as
    building the payload dict and encoding it. Raises ``_NotPlain`` for anything else. Does not
    look for refused characters: the caller does."""
    occurred_at, public_id = f["occurred_at"], f["public_id"]
    if type(occurred_at) is not datetime.datetime or type(public_id) is not uuid.UUID:
        raise _NotPlain
    scalar, encode = _json_scalar, _ENCODER.encode
    return "".join((
        '{"action":', scalar(f["action"]),
        ',"actor_id":', scalar(f["actor_id"]),
        ',"actor_name":', scalar(f["actor_name"]),
        ',"cloud_request_ids":', encode(_plain(f["cloud_request_ids"])),
        ',"details":', encode(_plain(f["details"])),
        ',"ip":', scalar(f["ip"]),
        ',"occurred_at":"', format_timestamp(occurred_at),
        '","outcome":', scalar(f["outcome"]),
        ',"public_id":"', str(public_id),
        '","request_id":', scalar(f["request_id"]),
        ',"seq":', scalar(f["seq"]),
        ',"target_id":', scalar(f["target_id"]),
        ',"target_label":', scalar(f["target_label"]),
        ',"target_type":', scalar(f["target_type"]),
        ',"team_id":', scalar(f["team_id"]),
        ',"team_name":', scalar(f["team_name"]),
        ',"user_agent":', scalar(f["user_agent"]),
        ',"v":', str(CANONICAL_VERSION), "}",
    ))


def _canonical_bytes_checked(fields: Mapping[str, Any]) -> bytes:
    # The plain fields (text, integers, nulls) are copied as they are and their text is checked
    # in one regex scan; anything else goes through _hashable, which converts or refuses it.
    try:
        payload: dict[str, Any] = {name: fields[name] for name in HASHED_FIELDS}
    except KeyError:
        missing = next(name for name in HASHED_FIELDS if name not in fields)
        raise AuditError(FIELD_MISSING.format(field=missing)) from None
    texts = []
    for name in _PLAIN_FIELDS:
        value = payload[name]
        kind = type(value)
        if kind is str:
            texts.append(value)
        elif value is not None and kind is not int:
            payload[name] = _hashable(name, value)
    if _REFUSED_CHARS.search("".join(texts)) is not None:
        for name in _PLAIN_FIELDS:  # which field: the error names it
            _hashable(name, payload[name])
    for name in _CONVERTED:
        payload[name] = _hashable(name, payload[name])
    payload["v"] = CANONICAL_VERSION
    return _ENCODER.encode(payload).encode("utf-8")


def chain_hash(*, prev_hash: str, canonical: bytes) -> str:
    """Hex SHA-256 of the previous hash (64 hex chars, so unambiguous) and this event."""
    return hashlib.sha256(prev_hash.encode("utf-8") + canonical).hexdigest()


def event_hash(*, prev_hash: str, fields: Mapping[str, Any]) -> str:
    return chain_hash(prev_hash=prev_hash, canonical=canonical_bytes(fields))
