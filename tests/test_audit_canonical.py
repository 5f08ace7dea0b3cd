"""Canonical form (AUD-08), the secret guard (AUD-15) and safe display of stored text (AUD-16)."""

import datetime
import decimal
import hashlib
import json
import uuid

import pytest
from django.template import Context, Template
from hypothesis import given
from hypothesis import strategies as st

from audit import guard, hashing
from audit.errors import AuditError
from audit.text import safe_text

WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)


def _fields(**overrides):
    fields = {
        "seq": 1, "public_id": uuid.UUID(int=1), "occurred_at": WHEN, "actor_id": 7, "actor_name": "Ada",
        "team_id": 3, "team_name": "Alpha", "action": "share.approved", "target_type": "transfers.share",
        "target_id": "abc", "target_label": "Share", "outcome": "success", "details": {"a": 1, "b": [1, "x"]},
        "request_id": "r1", "ip": "10.0.0.1", "user_agent": "ua", "cloud_request_ids": ["req-1"],
    }
    return fields | overrides


def _hash(**overrides):
    return hashing.event_hash(prev_hash=hashing.GENESIS_HASH, fields=_fields(**overrides))


def test_it_hashes_the_previous_hash_followed_by_the_canonical_bytes():
    canonical = hashing.canonical_bytes(_fields())
    expected = hashlib.sha256(hashing.GENESIS_HASH.encode() + canonical).hexdigest()
    assert _hash() == expected
    assert canonical.startswith(b'{"action":"share.approved","actor_id":7,')
    assert b" " not in canonical.replace(b"Share", b"")


def test_it_ignores_dict_key_order():
    assert _hash(details={"a": 1, "b": {"x": 1, "y": 2}}) == _hash(details={"b": {"y": 2, "x": 1}, "a": 1})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"details": {"n": 1}}, {"details": {"n": "1"}}),
        ({"details": {"n": None}}, {"details": {"n": "None"}}),
        ({"details": {"n": True}}, {"details": {"n": 1}}),
        ({"details": {"n": []}}, {"details": {"n": {}}}),
        ({"details": {"n": ""}}, {"details": {"n": None}}),
        ({"details": {"l": ["a|b", "c"]}}, {"details": {"l": ["a", "b|c"]}}),
        ({"target_type": "a|b", "target_id": "c"}, {"target_type": "a", "target_id": "b|c"}),
        ({"actor_id": None}, {"actor_id": 0}),
        ({"actor_name": "é"}, {"actor_name": "e\u0301"}),  # no Unicode normalisation
        ({"occurred_at": WHEN}, {"occurred_at": WHEN + datetime.timedelta(microseconds=1)}),
        ({"seq": 1}, {"seq": 2}),
        ({"ip": None}, {"ip": ""}),
    ],
)
def test_it_hashes_different_values_differently(left, right):
    assert _hash(**left) != _hash(**right)


def test_it_treats_tuples_as_lists():
    assert _hash(details={"l": (1, 2)}) == _hash(details={"l": [1, 2]})


def test_it_formats_times_in_utc_with_microseconds():
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert hashing.format_timestamp(WHEN.astimezone(paris)) == "2026-01-02T03:04:05.678901Z"
    assert hashing.format_timestamp(WHEN.replace(microsecond=0)) == "2026-01-02T03:04:05.000000Z"
    with pytest.raises(AuditError):
        hashing.format_timestamp(WHEN.replace(tzinfo=None))


@pytest.mark.parametrize(
    "value",
    [1.0, float("nan"), decimal.Decimal("1"), WHEN, uuid.UUID(int=1), b"bytes", {1, 2}, object(), 2**63, -(2**63) - 1],
    ids=lambda value: type(value).__name__,
)
def test_it_refuses_values_json_cannot_hold_exactly(value):
    with pytest.raises(AuditError):
        hashing.normalise_json({"nested": [{"value": value}]})


@pytest.mark.parametrize("value", [{1: "int key"}, {"nul": "a\x00b"}, {"a\x00": 1}, {"s": "\ud800"}])
def test_it_refuses_keys_and_strings_databases_would_alter(value):
    with pytest.raises(AuditError):
        hashing.normalise_json(value)


def test_it_names_where_a_float_was_found():
    with pytest.raises(AuditError, match=r"floats \(at details\['size'\]\[1\]\)"):
        hashing.normalise_json({"size": [1, 2.5]})


@given(st.dictionaries(st.text(), st.integers(-(2**63), 2**63 - 1) | st.text() | st.none(), max_size=6))
def test_it_serialises_any_key_order_to_the_same_bytes(mapping):
    mapping = {key.replace("\x00", ""): value for key, value in mapping.items()}
    mapping = {k: (v.replace("\x00", "") if isinstance(v, str) else v) for k, v in mapping.items()}
    try:
        forward = hashing.dumps(hashing.normalise_json(mapping))
    except AuditError:
        return  # lone surrogates: refused in both orders alike
    backward = hashing.dumps(hashing.normalise_json(dict(reversed(list(mapping.items())))))
    assert forward == backward


_TEXT = st.text() | st.none() | st.integers(-(2**70), 2**70) | st.booleans()
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text() | st.floats(),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                     max_leaves=8)


@given(actor_name=_TEXT, target_label=_TEXT, ip=_TEXT, actor_id=_TEXT, details=_JSON, ids=_JSON,
       public_id=st.uuids() | st.just("00000000-0000-0000-0000-00000000000A"),
       when=st.just(WHEN) | st.just(WHEN.replace(tzinfo=None)) | st.just(WHEN.astimezone(
           datetime.timezone(datetime.timedelta(hours=5)))))
def test_the_fast_canonical_form_is_the_careful_one(actor_name, target_label, ip, actor_id, details, ids,
                                                    public_id, when):
    """canonical_bytes' written-out path gives dumps(payload)'s bytes, or leaves the case to the careful path."""
    fields = _fields(actor_name=actor_name, target_label=target_label, ip=ip, actor_id=actor_id, details=details,
                     cloud_request_ids=ids, public_id=public_id, occurred_at=when)
    _assert_as_careful(fields, lambda: hashing.canonical_bytes(fields))


def _assert_as_careful(read, fast) -> bool:
    """``fast()`` gives the careful path's bytes for the event ``read``, or raises its very error;
    True when there were bytes."""
    try:
        careful = hashing._canonical_bytes_checked(read)
    except AuditError as exc:
        with pytest.raises(AuditError) as raised:
            fast()
        assert str(raised.value) == str(exc)
        return False
    assert fast() == careful
    return True


# --- AUD-15: the secret guard --------------------------------------------------------

@pytest.mark.parametrize(
    "key",
    ["password", "Password", "new_password", "secret", "secret_key", "SecretKey", "secretAccessKey",
     "aws-secret-access-key", "SECRET_ACCESS_KEY", "presigned_url", "preSignedUrl", "signed_url", "api_key",
     "apiKey", "session_key", "sessionid", "csrftoken", "token", "refresh_token", "Authorization", "cookie",
     "private_key", "otp_code", "signature", "passphrase"],
)
def test_the_guard_refuses_keys_that_name_a_secret(key):
    assert guard.is_secret_key(key)
    with pytest.raises(AuditError, match="must not hold secrets"):
        guard.check_details({"outer": [{key: "x"}]})


@pytest.mark.parametrize(
    "value",
    [
        "https://oos.eu-west-2.outscale.com/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F2026"
        "&X-Amz-Signature=abcdef",
        "see x-amz-signature=00ff in the link",
        "https://b.s3.example/o?AWSAccessKeyId=AK&Expires=1&Signature=abc",
        "AWS4-HMAC-SHA256 Credential=AK/20260101/eu-west-2/s3/aws4_request, Signature=ab",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "?X-Amz-Security-Token=FwoG",
    ],
)
def test_the_guard_refuses_values_carrying_a_signature(value):
    with pytest.raises(AuditError, match="signed URL"):
        guard.check_details({"link": {"urls": ["fine", value]}})


@pytest.mark.parametrize(
    "details",
    [
        {"access_key": "AKIA****0001"},
        {"username": "bob@example.com", "role": "approver", "keys_replaced": True},
        {"url": "https://oos.eu-west-2.outscale.com/bucket/manifest.xml"},
        {"reason": "not_a_member", "before": "member", "after": "admin"},
    ],
)
def test_the_guard_lets_ordinary_details_through(details):
    guard.check_details(details)


def test_the_guard_reads_words_not_substrings():
    assert guard.is_secret_key("my_token") and guard.is_secret_key("tokenValue")
    assert not guard.is_secret_key("tokenised") and not guard.is_secret_key("secretary_count")
    assert not guard.is_secret_key("keys_replaced") and not guard.is_secret_key("access_key")


# --- AUD-16: showing stored text ------------------------------------------------------

INJECTION = "line one\nFAKE 2026-01-01 INFO admin logged in\r\x1b[31mred\x1b[0m\u202eevil<script>alert(1)</script>"


def test_safe_text_makes_control_and_direction_characters_visible():
    shown = safe_text(INJECTION)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert shown == (
        "line one\\nFAKE 2026-01-01 INFO admin logged in\\r\\x1b[31mred\\x1b[0m\\u202eevil<script>alert(1)</script>"
    )
    assert safe_text(None) == ""
    assert safe_text("abcdef", max_length=4) == "abc…"


def test_safe_text_skips_only_text_with_nothing_to_escape():
    # Its fast path takes a printable text as it is: no printable character may be one it escapes.
    import sys
    import unicodedata

    from audit import text

    assert not [hex(code) for code in range(sys.maxunicode + 1)
                if chr(code).isprintable() and unicodedata.category(chr(code)) in text._ESCAPED]
    assert safe_text("plain, accentué, 日本, emoji \U0001f600") == "plain, accentué, 日本, emoji \U0001f600"
    assert safe_text("a\u2028b\u00adc") == "a\\u2028b\\xadc"  # line separator, soft hyphen (Cf)


def test_the_safe_text_filter_still_html_escapes():
    rendered = Template("{% load audit_text %}{{ value|safe_text }}").render(Context({"value": INJECTION}))
    assert "<script>" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    assert "\n" not in rendered and "\x1b" not in rendered


# --- The stored-row path: verification's reading of PostgreSQL's text -------------------------

def _jsonb_text(value):
    """JSON text as PostgreSQL prints jsonb: ", " and ": " between items, object keys shortest
    first, then by their bytes (numbers as written; jsonb keeps 1.0 as 1.0)."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: (len(item[0].encode("utf-8", "surrogatepass")),
                                                         item[0].encode("utf-8", "surrogatepass")))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_jsonb_text(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _stored_values(fields):
    """``fields`` as stored.stored_rows reads them from PostgreSQL."""
    values = [fields[name] for name in hashing.HASHED_FIELDS]
    values[1] = str(fields["public_id"])
    values[2] = hashing.format_timestamp(fields["occurred_at"])
    values[12], values[16] = _jsonb_text(fields["details"]), _jsonb_text(fields["cloud_request_ids"])
    return values


_LIST_TEXT = st.text(alphabet=st.sampled_from('ab", \\[]{}:1\n\x7fé'), max_size=6)


@given(actor_name=_TEXT, target_label=_TEXT, ip=_TEXT, team_id=_TEXT, details=_JSON, ids=_JSON | st.lists(_LIST_TEXT),
       public_id=st.uuids())
def test_the_stored_row_path_gives_the_careful_forms_bytes(actor_name, target_label, ip, team_id, details, ids,
                                                            public_id):
    """canonical_bytes_stored of the row PostgreSQL would give equals the careful path's bytes of the
    event as the ORM reads it (its JSON decoded), or fails with the same error."""
    fields = _fields(actor_name=actor_name, target_label=target_label, ip=ip, team_id=team_id, details=details,
                     cloud_request_ids=ids, public_id=public_id)
    values = _stored_values(fields)
    read = fields | {"details": json.loads(values[12]), "cloud_request_ids": json.loads(values[16])}
    if _assert_as_careful(read, lambda: hashing.canonical_bytes_stored(values)):
        assert hashing.stored_event_hash(hashing.GENESIS_HASH, values) == \
            hashing.event_hash(prev_hash=hashing.GENESIS_HASH, fields=read)


@pytest.mark.parametrize("text", [
    '["a", "b"]', '["a, b", "c"]', '["a", ", ", "b"]', '["a", 1, "b"]', '["a", null, "b"]', '["a", ["b", "c"], "d"]',
    '["a", {"b": "c"}, "d"]', '["x\\"y", "z"]', '["back\\\\", "slash"]', '["\\u0000"]', '["é", "\\n"]', '[1, "a"]',
    '{"b": 1, "aa": [1.5]}', '{"n": 12345678901234567890}', '{"n": 1e3}', '["1234567890123456789"]', '"text"', '5',
])
def test_the_stored_row_path_reads_json_lists_and_edge_cases_as_the_decoder_does(text):
    values = _stored_values(_fields())
    values[16] = text
    _assert_as_careful(_fields(cloud_request_ids=json.loads(text)), lambda: hashing.canonical_bytes_stored(values))


def test_the_stored_row_path_refuses_a_time_the_database_would_not_write_as_text():
    values = _stored_values(_fields())
    values[2] = None  # stored.timestamp_text_sql: outside the years 1000 to 9999
    with pytest.raises(AuditError, match="years 1000 to 9999"):
        hashing.canonical_bytes_stored(values)
    values = _stored_values(_fields())
    values[1] = str(uuid.UUID(int=1)).upper()  # not how PostgreSQL writes a uuid: the careful path decides
    assert hashing.canonical_bytes_stored(values) == hashing._canonical_bytes_checked(_fields())
