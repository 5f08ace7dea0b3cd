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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from audit.errors import AuditError

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
TIME_RANGE = "Audit timestamps must fall in the years 1000 to 9999 (at occurred_at); the recorder writes the present."


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
# _written writes these keys in this order: sorted, as dumps would.
_WRITTEN_KEYS = ("action", "actor_id", "actor_name", "cloud_request_ids", "details", "ip", "occurred_at", "outcome",
                 "public_id", "request_id", "seq", "target_id", "target_label", "target_type", "team_id", "team_name",
                 "user_agent", "v")
assert tuple(sorted((*HASHED_FIELDS, "v"))) == _WRITTEN_KEYS  # noqa: S101 - a canonical-form invariant


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The canonical form of one event: every ``HASHED_FIELDS`` entry, nothing else."""
    # Try the written-out form first. Anything it does not handle, and any text that may hold a
    # refused character, takes the careful path, which gives the same bytes or the error.
    try:
        values = [fields[name] for name in HASHED_FIELDS]
        values[_PUBLIC_ID] = _uuid_text(values[_PUBLIC_ID])
        values[_OCCURRED_AT] = _utc_text(values[_OCCURRED_AT])
        text = _written(values, _encode_json(_plain(values[_DETAILS])),
                        _encode_json(_plain(values[_CLOUD_REQUEST_IDS])))
    except (_NotPlain, KeyError, AuditError, TypeError):
        return _canonical_bytes_checked(fields)
    return _checked_text(text, lambda: fields)


def canonical_bytes_stored(values: Sequence[Any]) -> bytes:
    """``canonical_bytes`` of an event as PostgreSQL writes its columns as text.

    ``values`` are the ``HASHED_FIELDS`` in order, with ``public_id`` as ``uuid::text``,
    ``occurred_at`` as ``format_timestamp``'s text (``stored.timestamp_text_sql``: NULL outside
    the years 1000 to 9999, which the recorder never writes) and the two JSON fields as stored
    text. Verification reads every event this way: nothing is converted twice, and the JSON text
    is decoded straight into plain data (floats refused by the decoder, integers too long for
    64 bits sent to the careful path). Same bytes, or the same error, as ``canonical_bytes`` of
    the decoded event.
    """
    try:
        if _UUID_TEXT.fullmatch(values[_PUBLIC_ID]) is None or type(values[_OCCURRED_AT]) is not str:
            raise _NotPlain
        text = _written(values, _stored_json_text(values[_DETAILS]),
                        _stored_json_text(values[_CLOUD_REQUEST_IDS]))
    except (_NotPlain, AuditError, TypeError, ValueError):
        return canonical_bytes(_decoded(values))
    return _checked_text(text, lambda: _decoded(values))


def _decoded(values: Sequence[Any]) -> dict[str, Any]:
    """The event ``canonical_bytes_stored`` was given, as the ORM would read it."""
    fields = dict(zip(HASHED_FIELDS, values, strict=True))
    when = fields["occurred_at"]
    if when is None:
        raise AuditError(TIME_RANGE)
    fields["occurred_at"] = datetime.datetime.fromisoformat(when) if isinstance(when, str) else when
    for name in ("details", "cloud_request_ids"):
        if isinstance(fields[name], str):
            try:
                fields[name] = json.loads(fields[name])
            except ValueError:
                raise AuditError(f"The stored {name} are not JSON.") from None
    return fields


def _checked_text(text: str, fields: Callable[[], Mapping[str, Any]]) -> bytes:
    # The written-out form checked no text for refused characters: the result is checked once.
    # A NUL is written as its escape (an escape written out as text also sends the event to the
    # careful path, which tells the two apart); a lone surrogate cannot be encoded as UTF-8.
    if "\\u0000" not in text:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
    return _canonical_bytes_checked(fields())


_PUBLIC_ID, _OCCURRED_AT, _DETAILS, _CLOUD_REQUEST_IDS = (
    HASHED_FIELDS.index(name) for name in ("public_id", "occurred_at", "details", "cloud_request_ids"))
_UUID_TEXT = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# 19 digits in a row may be an integer beyond 64 bits (or text that looks like one): careful path.
_LONG_DIGITS = re.compile("[0-9]{19}")


def _uuid_text(value: Any) -> str:
    if type(value) is not uuid.UUID:
        raise _NotPlain
    return str(value)


def _utc_text(value: Any) -> str:
    if type(value) is not datetime.datetime:
        raise _NotPlain
    if value.tzinfo is datetime.UTC and value.year >= 1000:  # as the ORM reads it: nothing to convert
        return value.isoformat(timespec="microseconds")[:-6] + "Z"  # without its "+00:00"
    return format_timestamp(value)


def _no_float(_text: str):
    raise _NotPlain


# Made once: json.loads with options makes a decoder per call.
_DECODER = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_float)
_scan = _DECODER.scan_once


def _stored_json_text(text: str) -> str:
    """The canonical JSON text of stored JSON text, or ``_NotPlain`` (floats, NaN, long integers)."""
    if text == "{}" or text == "[]":  # most events' details and request ids: already canonical
        return text
    # A list of strings without escapes, as cloud request ids are: the stored text differs from
    # the canonical one only by the space after each comma. With no backslash every quote is a
    # string's own; only when each string but the last is followed by '", "' is the text nothing
    # else (a number, null, list or object anywhere breaks the count).
    if text[:2] == '["' and text[-2:] == '"]' and "\\" not in text \
            and text.count('"') == 2 + 2 * text.count('", "'):
        return text.replace('", "', '","')
    if _LONG_DIGITS.search(text) is not None:
        raise _NotPlain
    try:
        value, end = _scan(text, 0)  # what JSONDecoder.decode does, less its whitespace handling
    except StopIteration:
        raise _NotPlain from None
    if end != len(text):
        raise _NotPlain
    return _encode_json(value)


def _refuse_other(_value: Any):
    raise _NotPlain


# The C encoder with _ENCODER's options, made once: JSONEncoder.encode makes one per call, about
# half its cost for an event's small details. No circular-reference markers: it only sees plain
# data from _plain or the JSON decoder, which cannot refer to itself.
_C_ENCODE = json.encoder.c_make_encoder(None, _refuse_other, _encode_string, None, ":", ",", True, False, False) \
    if json.encoder.c_make_encoder is not None else None


def _encode_json(value: Any) -> str:
    """``dumps`` of plain data."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def _written(values: Sequence[Any], details: str, cloud_request_ids: str) -> str:
    """``dumps`` of the canonical payload, key by key in sorted order: about twice as fast as
    building the payload dict and encoding it. ``values`` are the ``HASHED_FIELDS`` in order,
    with ``public_id`` and ``occurred_at`` already written as their text; the two JSON fields
    come written apart, in their place.
    Exact types only (text, integers, nulls): anything else raises ``_NotPlain`` or
    ``TypeError``. Does not look for refused characters: the caller does."""
    (seq, public_id, occurred_at, actor_id, actor_name, team_id, team_name, action, target_type, target_id,
     target_label, outcome, _details, request_id, ip, user_agent, _cloud_request_ids) = values
    text = _encode_string  # for the columns that are never null: anything but a str raises TypeError
    return (f'{{"action":{text(action)},"actor_id":{_scalar(actor_id)},"actor_name":{text(actor_name)},'
            f'"cloud_request_ids":{cloud_request_ids},"details":{details},"ip":{_scalar(ip)},'
            f'"occurred_at":"{occurred_at}","outcome":{text(outcome)},"public_id":"{public_id}",'
            f'"request_id":{text(request_id)},"seq":{_scalar(seq)},"target_id":{text(target_id)},'
            f'"target_label":{text(target_label)},"target_type":{text(target_type)},"team_id":{_scalar(team_id)},'
            f'"team_name":{text(team_name)},"user_agent":{text(user_agent)},"v":{CANONICAL_VERSION}}}')


# _written unpacks HASHED_FIELDS in this order.
assert HASHED_FIELDS == ("seq", "public_id", "occurred_at", "actor_id", "actor_name", "team_id", "team_name",  # noqa: S101
                         "action", "target_type", "target_id", "target_label", "outcome", "details", "request_id",
                         "ip", "user_agent", "cloud_request_ids")


def _scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    raise _NotPlain


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


def stored_event_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """``event_hash`` of an event as PostgreSQL writes its columns (``canonical_bytes_stored``)."""
    return hashlib.sha256(prev_hash.encode("utf-8") + canonical_bytes_stored(values)).hexdigest()
