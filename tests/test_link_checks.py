"""Checking pasted pre-signed manifest URLs (transfers/link_checks.py): SECURITY-TESTS URL-01 and URL-02.

No database and no network: links are built by hand (a fake, recognisable signature) or pre-signed
locally with boto3, and validated against a fixed clock.
"""

import hashlib
import pickle
import socket
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import outscale
from outscale.regions import REGIONS
from transfers import link_checks
from transfers.link_checks import LinkError, link_fingerprint, validate_manifest_url

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
SIGNED_AT = NOW - timedelta(minutes=10)
SIGNATURE = hashlib.sha256(b"a recognisable fake signature").hexdigest()
ACCESS_KEY = "AKIAEXAMPLEKEY123456"
BUCKET = "exports-alpha"
KEY = "omi-portal/share-42/ami-12345678/manifest.json"
GOOD_HOST = "oos.eu-west-2.outscale.com"
SANDBOX_OOS = "http://127.0.0.1:8711"
REAL_HOSTS = {f"oos.{region}.outscale.com" for region in REGIONS}

FAST_PROPERTY = hypothesis_settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def _real_endpoints(settings):
    """The suite's conftest points every Region at a closed loopback port; these tests check the
    real OOS hosts unless they configure a sandbox themselves."""
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {}


def query(
    region="eu-west-2",
    *,
    signed_at=SIGNED_AT,
    expires="3600",
    signature=SIGNATURE,
    credential=None,
    algorithm="AWS4-HMAC-SHA256",
    signed_headers="host",
    omit=(),
    extra=(),
):
    """A SigV4 query string in botocore's order, with the fake signature unless told otherwise."""
    date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    credential = credential or f"{ACCESS_KEY}/{date[:8]}/{region}/s3/aws4_request"
    fields = [
        ("X-Amz-Algorithm", algorithm),
        ("X-Amz-Credential", credential),
        ("X-Amz-Date", date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", signed_headers),
        ("X-Amz-Signature", signature),
        *extra,
    ]
    return "&".join(f"{name}={quote(value, safe='-_.~')}" for name, value in fields if name not in omit)


def url(region="eu-west-2", *, host=None, scheme="https", path=None, **query_args):
    host = host or f"oos.{region}.outscale.com"
    path = f"/{BUCKET}/{KEY}" if path is None else path
    return f"{scheme}://{host}{path}?{query(region, **query_args)}"


GOOD_TAIL = url()[len(f"https://{GOOD_HOST}") :]  # "/bucket/key?…signature"


def refused(raw, expected, *, now=NOW):
    """Validate, expect exactly `expected`, and check that the message quotes nothing pasted."""
    with pytest.raises(LinkError) as caught:
        validate_manifest_url(raw, now=now)
    message = caught.value.messages[0]
    assert message == expected
    assert caught.value.messages == [message]
    assert SIGNATURE not in message and SIGNATURE not in str(caught.value) and SIGNATURE not in repr(caught.value)
    if isinstance(raw, str) and raw:
        assert raw not in message
    assert "evil" not in message and ACCESS_KEY not in message and KEY not in message
    return caught.value


# --- Accepted links (URL-01) ---------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_it_accepts_a_pre_signed_link_to_the_oos_of_each_region(region):
    raw = url(region)

    link = validate_manifest_url(raw, now=NOW)

    assert link.url == raw
    assert link.region == region
    assert (link.bucket, link.key) == (BUCKET, KEY)
    assert link.expires_at == SIGNED_AT + timedelta(seconds=3600)
    assert link.expires_at.tzinfo is UTC
    assert link.fingerprint == hashlib.sha256(raw.encode()).hexdigest()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(f"https://OOS.EU-WEST-2.OUTSCALE.COM{GOOD_TAIL}", id="upper-case host"),
        pytest.param(f"https://Oos.Eu-West-2.Outscale.Com{GOOD_TAIL}", id="mixed-case host"),
        pytest.param(f"https://{GOOD_HOST}.{GOOD_TAIL}", id="trailing dot"),
        pytest.param(f"https://OOS.EU-WEST-2.OUTSCALE.COM.{GOOD_TAIL}", id="upper case and trailing dot"),
        pytest.param(f"HTTPS://{GOOD_HOST}{GOOD_TAIL}", id="upper-case scheme"),
        pytest.param(f"https://{GOOD_HOST}:443{GOOD_TAIL}", id="explicit default port"),
    ],
)
def test_it_accepts_case_and_trailing_dot_variants_of_a_good_host_and_normalises_them(raw):
    link = validate_manifest_url(raw, now=NOW)

    assert link.url == url()
    assert link.region == "eu-west-2"
    assert link.fingerprint == link_fingerprint(url())


def test_it_decodes_a_percent_encoded_bucket_and_key():
    raw = url(path="/my-bucket/exports/ami%20copy/manifest%2B1.json")

    link = validate_manifest_url(raw, now=NOW)

    assert (link.bucket, link.key) == ("my-bucket", "exports/ami copy/manifest+1.json")
    assert link.url == raw  # the URL itself is kept as signed


def test_it_accepts_a_link_of_exactly_the_maximum_length():
    padding = link_checks.MAX_URL_LENGTH - len(url(path=f"/{BUCKET}/"))
    raw = url(path=f"/{BUCKET}/" + "k" * padding)
    assert len(raw) == link_checks.MAX_URL_LENGTH

    assert validate_manifest_url(raw, now=NOW).key == "k" * padding


def test_it_accepts_extra_query_parameters_that_s3_knows():
    raw = url(extra=[("response-content-type", "application/json"), ("x-id", "GetObject")])

    assert validate_manifest_url(raw, now=NOW).url == raw


# --- Refused addresses (URL-01) ------------------------------------------------------------------

WRONG_SCHEME = link_checks.MSG_WRONG_SCHEME.format(host=GOOD_HOST, scheme="https", given="http")
BAD_PORT = link_checks.MSG_PORT.format(host=GOOD_HOST)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # scheme
        pytest.param(f"http://{GOOD_HOST}{GOOD_TAIL}", WRONG_SCHEME, id="http on the real host"),
        pytest.param(f"HTTP://{GOOD_HOST}{GOOD_TAIL}", WRONG_SCHEME, id="upper-case http"),
        pytest.param(f"http://{GOOD_HOST}:443{GOOD_TAIL}", WRONG_SCHEME, id="http on port 443"),
        pytest.param("file:///etc/passwd", link_checks.MSG_SCHEME, id="file"),
        pytest.param(f"file://{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_SCHEME, id="file with our host"),
        pytest.param(f"gopher://{GOOD_HOST}:70/_GET%20/{GOOD_TAIL}", link_checks.MSG_SCHEME, id="gopher"),
        pytest.param(f"ftp://{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_SCHEME, id="ftp"),
        pytest.param(f"ftps://{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_SCHEME, id="ftps"),
        pytest.param("javascript:alert(1)//" + GOOD_HOST, link_checks.MSG_SCHEME, id="javascript"),
        pytest.param("data:text/html,https://" + GOOD_HOST, link_checks.MSG_SCHEME, id="data"),
        pytest.param(f"s3://{BUCKET}/{KEY}", link_checks.MSG_SCHEME, id="s3"),
        pytest.param(f"{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_NOT_A_URL, id="no scheme"),
        pytest.param(f"//{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_NOT_A_URL, id="scheme-relative"),
        pytest.param(f"https:{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_NOT_A_URL, id="no slashes"),
        pytest.param(f"https:/{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_NOT_A_URL, id="one slash"),
        pytest.param(f"https://{GOOD_TAIL}", link_checks.MSG_NOT_A_URL, id="no host"),
        pytest.param("", link_checks.MSG_NOT_A_URL, id="empty"),
        # foreign hosts and look-alikes
        pytest.param(
            f"https://{GOOD_HOST}.evil.com{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="our host as a prefix"
        ),
        pytest.param(f"https://evil-{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="our host as a suffix"),
        pytest.param(f"https://x.{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="a subdomain of our host"),
        pytest.param(f"https://evil.com/?x={GOOD_HOST}", link_checks.MSG_FOREIGN_HOST, id="our host in the query"),
        pytest.param(
            f"https://evil.com/{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="our host in the path"
        ),
        pytest.param(f"https://evil.com#@{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="fragment then at"),
        pytest.param(f"https://evil.com?@{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="query then at"),
        pytest.param(f"https://{GOOD_HOST}..{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="two trailing dots"),
        pytest.param(
            f"https://oos.eu-west-9.outscale.com{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="unknown region"
        ),
        pytest.param(f"https://api.eu-west-2.outscale.com{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="the api host"),
        pytest.param(f"https://oos.eu-west-2.outscale.com_{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="underscore"),
        pytest.param(
            f"https://xn--os-gmc.eu-west-2.outscale.com{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="punycode"
        ),
        pytest.param(f"https://localhost{GOOD_TAIL}", link_checks.MSG_FOREIGN_HOST, id="localhost"),
        pytest.param(
            f"https://\u043eos.eu-west-2.outscale.com{GOOD_TAIL}",
            link_checks.MSG_LOOKALIKE_HOST,
            id="cyrillic o in oos",
        ),
        pytest.param(
            f"https://oos.eu-west-2.outs\u0441ale.com{GOOD_TAIL}", link_checks.MSG_LOOKALIKE_HOST, id="cyrillic es"
        ),
        pytest.param(
            f"https://\uff4f\uff4f\uff53.eu-west-2.outscale.com{GOOD_TAIL}",
            link_checks.MSG_LOOKALIKE_HOST,
            id="fullwidth",
        ),
        pytest.param(
            f"https://oos.eu-west-2\u3002outscale.com{GOOD_TAIL}", link_checks.MSG_LOOKALIKE_HOST, id="ideographic dot"
        ),
        pytest.param(
            f"https://oos.eu-west-2.outscale.com\u200b{GOOD_TAIL}",
            link_checks.MSG_LOOKALIKE_HOST,
            id="zero-width space",
        ),
        # credentials in the address
        pytest.param(f"https://{GOOD_HOST}@evil.com/{GOOD_TAIL}", link_checks.MSG_USERINFO, id="our host as userinfo"),
        pytest.param(f"https://user@{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_USERINFO, id="user name"),
        pytest.param(f"https://:secret@{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_USERINFO, id="password only"),
        pytest.param(f"https://user:secret@{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_USERINFO, id="user and password"),
        pytest.param(f"https://@{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_USERINFO, id="empty userinfo"),
        # ports
        pytest.param(f"https://{GOOD_HOST}:8443{GOOD_TAIL}", BAD_PORT, id="port 8443"),
        pytest.param(f"https://{GOOD_HOST}:80{GOOD_TAIL}", BAD_PORT, id="port 80 over https"),
        pytest.param(f"https://{GOOD_HOST}:0443{GOOD_TAIL}", BAD_PORT, id="zero-padded 443"),
        pytest.param(f"https://{GOOD_HOST}:{GOOD_TAIL}", BAD_PORT, id="empty port"),
        pytest.param(f"https://{GOOD_HOST}:443:443{GOOD_TAIL}", BAD_PORT, id="two ports"),
        pytest.param(f"https://{GOOD_HOST}:65979{GOOD_TAIL}", BAD_PORT, id="port that wraps to 443"),
        # IP literals
        pytest.param(f"https://169.254.169.254{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="metadata service"),
        pytest.param(f"https://169.254.169.254.{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="ip with trailing dot"),
        pytest.param(f"https://127.0.0.1{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="loopback"),
        pytest.param(f"https://[::1]{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="ipv6 loopback"),
        pytest.param(f"https://[::1]:443{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="ipv6 loopback with port"),
        pytest.param(f"https://[::ffff:169.254.169.254]{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="ipv4-mapped ipv6"),
        pytest.param(f"https://[fd00:ec2::254]{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="ipv6 metadata"),
        pytest.param(f"https://2130706433{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="decimal ip"),
        pytest.param(f"https://0177.0.0.1{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="octal ip"),
        pytest.param(f"https://0x7f.0.0.1{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="hex ip"),
        pytest.param(f"https://0x7f000001{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="hex integer ip"),
        pytest.param(f"https://127.1{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="short ip"),
        pytest.param(f"https://0251.0376.0251.0376{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="octal metadata"),
        pytest.param(f"https://::1{GOOD_TAIL}", link_checks.MSG_IP_LITERAL, id="unbracketed ipv6"),
        # percent-encoding in the address
        pytest.param(
            f"https://oos%2eeu-west-2.outscale.com{GOOD_TAIL}", link_checks.MSG_ENCODED_HOST, id="encoded dot"
        ),
        pytest.param(
            f"https://oos%2Eeu-west-2.outscale.com{GOOD_TAIL}", link_checks.MSG_ENCODED_HOST, id="encoded DOT"
        ),
        pytest.param(f"https://{GOOD_HOST}%40evil.com{GOOD_TAIL}", link_checks.MSG_ENCODED_HOST, id="encoded at"),
        pytest.param(
            f"https://%6f%6f%73.eu-west-2.outscale.com{GOOD_TAIL}", link_checks.MSG_ENCODED_HOST, id="encoded oos"
        ),
        pytest.param(f"https://{GOOD_HOST}%3a443{GOOD_TAIL}", link_checks.MSG_ENCODED_HOST, id="encoded colon"),
        pytest.param(f"https://{GOOD_HOST}%00{GOOD_TAIL}", link_checks.MSG_ENCODED_HOST, id="encoded nul"),
        # backslashes, whitespace and control characters anywhere
        pytest.param(f"https://{GOOD_HOST}\\@evil.com{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="backslash at"),
        pytest.param(f"https:\\\\{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="backslash slashes"),
        pytest.param(f"https://evil.com\\.{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="backslash dot"),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}\\", link_checks.MSG_BAD_CHARACTERS, id="trailing backslash"),
        pytest.param(f"https://{GOOD_HOST}\t{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="tab in host"),
        pytest.param(f"https://oos.eu-west-2\n.outscale.com{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="newline"),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}\r\nX-Injected: 1", link_checks.MSG_BAD_CHARACTERS, id="crlf"),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}\n", link_checks.MSG_BAD_CHARACTERS, id="trailing newline"),
        pytest.param(f" https://{GOOD_HOST}{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="leading space"),
        pytest.param(
            f"https://{GOOD_HOST}/{BUCKET}/a b{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="space in path"
        ),
        pytest.param(f"https://{GOOD_HOST}\x00{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="nul"),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}\x7f", link_checks.MSG_BAD_CHARACTERS, id="delete"),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}\x1b[2J", link_checks.MSG_BAD_CHARACTERS, id="escape"),
        pytest.param(
            f"https://{GOOD_HOST}/{BUCKET}/\u00e9{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="raw non-ascii"
        ),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}\u2028", link_checks.MSG_BAD_CHARACTERS, id="line separator"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/<script>{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="angle"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/a%zz{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="bad escape"),
        pytest.param(
            f"https://{GOOD_HOST}/[{BUCKET}]/k{GOOD_TAIL}", link_checks.MSG_BAD_CHARACTERS, id="bracket in path"
        ),
        # fragment
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}#", link_checks.MSG_FRAGMENT, id="empty fragment"),
        pytest.param(f"https://{GOOD_HOST}{GOOD_TAIL}#@evil.com", link_checks.MSG_FRAGMENT, id="fragment"),
        # path
        pytest.param(f"https://{GOOD_HOST}?{query()}", link_checks.MSG_BAD_PATH, id="no path"),
        pytest.param(f"https://{GOOD_HOST}/?{query()}", link_checks.MSG_BAD_PATH, id="root"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}?{query()}", link_checks.MSG_BAD_PATH, id="bucket only"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/?{query()}", link_checks.MSG_BAD_PATH, id="empty key"),
        pytest.param(f"https://{GOOD_HOST}//{KEY}?{query()}", link_checks.MSG_BAD_PATH, id="empty bucket"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/../x?{query()}", link_checks.MSG_BAD_PATH, id="dot-dot"),
        pytest.param(f"https://{GOOD_HOST}/../{BUCKET}/x?{query()}", link_checks.MSG_BAD_PATH, id="dot-dot bucket"),
        pytest.param(
            f"https://{GOOD_HOST}/{BUCKET}/%2e%2e/x?{query()}", link_checks.MSG_BAD_PATH, id="encoded dot-dot"
        ),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/./x?{query()}", link_checks.MSG_BAD_PATH, id="dot"),
        pytest.param(f"https://{GOOD_HOST}/a%2Fb/x?{query()}", link_checks.MSG_BAD_PATH, id="encoded slash in bucket"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/a%0Ab?{query()}", link_checks.MSG_BAD_PATH, id="encoded newline"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/a%5Cb?{query()}", link_checks.MSG_BAD_PATH, id="encoded backslash"),
        pytest.param(f"https://{GOOD_HOST}/{BUCKET}/%ff?{query()}", link_checks.MSG_BAD_PATH, id="not utf-8"),
    ],
)
def test_it_refuses_addresses_other_than_the_oos_of_a_region(raw, expected):
    refused(raw, expected)


@pytest.mark.parametrize("extra", [1, 1000])
def test_it_refuses_an_over_long_link(extra):
    raw = url(path=f"/{BUCKET}/" + "k" * (link_checks.MAX_URL_LENGTH + extra))

    refused(raw, link_checks.MSG_TOO_LONG)


def test_it_refuses_an_over_long_link_before_looking_at_anything_else():
    refused("\\" * (link_checks.MAX_URL_LENGTH + 1), link_checks.MSG_TOO_LONG)


@pytest.mark.parametrize("value", [None, 42, b"https://oos.eu-west-2.outscale.com/b/k"])
def test_it_refuses_something_that_is_not_text(value):
    refused(value, link_checks.MSG_NOT_A_URL)


def test_it_requires_an_aware_clock():
    with pytest.raises(ValueError):
        validate_manifest_url(url(), now=datetime(2025, 3, 14, 12, 0))  # noqa: DTZ001


# --- Signature fields (URL-02) -------------------------------------------------------------------


@pytest.mark.parametrize("param", link_checks.REQUIRED_PARAMS)
def test_it_refuses_a_link_missing_a_signature_parameter(param):
    refused(url(omit=(param,)), link_checks.MSG_MISSING_PARAM.format(param=param))


def test_a_link_without_any_query_is_an_unsigned_path():
    link = validate_manifest_url(f"https://{GOOD_HOST}/{BUCKET}/{KEY}", now=NOW)

    assert (link.form, link.signed, link.expires_at) == (link_checks.UNSIGNED, False, None)


def test_it_refuses_a_signature_parameter_spelled_in_another_case_as_missing():
    raw = url().replace("X-Amz-Signature=", "x-amz-signature=")

    refused(raw, link_checks.MSG_MISSING_PARAM.format(param="X-Amz-Signature"))


@pytest.mark.parametrize("param", link_checks.REQUIRED_PARAMS)
def test_it_refuses_a_link_that_repeats_a_signature_parameter(param):
    original = dict(pair.split("=", 1) for pair in query().split("&"))[param]

    refused(url(extra=[(param, original)]), link_checks.MSG_DUPLICATE_PARAM.format(param=param))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([("x-amz-signature", "0" * 64)], id="lower-case twin"),
        pytest.param([("X-AMZ-EXPIRES", "604800")], id="upper-case twin"),
        pytest.param([("X%2DAmz%2DSignature", "0" * 64)], id="percent-encoded name"),
    ],
)
def test_it_refuses_a_signature_parameter_repeated_under_another_spelling(extra):
    name = {"x-amz-signature": "X-Amz-Signature", "x-amz-expires": "X-Amz-Expires"}[
        extra[0][0].replace("%2D", "-").lower()
    ]
    refused(url(extra=extra), link_checks.MSG_DUPLICATE_PARAM.format(param=name))


def test_it_refuses_any_repeated_query_parameter():
    raw = url(extra=[("response-content-type", "text/plain"), ("response-content-type", "text/html")])

    refused(raw, link_checks.MSG_DUPLICATE_QUERY)


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        pytest.param("604801", link_checks.MSG_EXPIRES_TOO_LONG, id="one second over 7 days"),
        pytest.param("1209600", link_checks.MSG_EXPIRES_TOO_LONG, id="14 days"),
        pytest.param("9" * 40, link_checks.MSG_EXPIRES_TOO_LONG, id="huge"),
        pytest.param("0", link_checks.MSG_EXPIRES_INVALID, id="zero"),
        pytest.param("-1", link_checks.MSG_EXPIRES_INVALID, id="negative"),
        pytest.param("+3600", link_checks.MSG_EXPIRES_INVALID, id="signed"),
        pytest.param("3600.0", link_checks.MSG_EXPIRES_INVALID, id="decimal"),
        pytest.param("1e3", link_checks.MSG_EXPIRES_INVALID, id="exponent"),
        pytest.param("", link_checks.MSG_EXPIRES_INVALID, id="empty"),
        pytest.param("\u0663", link_checks.MSG_EXPIRES_INVALID, id="arabic-indic digit"),
    ],
)
def test_it_refuses_an_expiry_that_is_not_between_one_second_and_seven_days(expires, expected):
    refused(url(expires=expires), expected)


def test_it_accepts_the_seven_day_maximum():
    link = validate_manifest_url(url(expires="604800"), now=NOW)

    assert link.expires_at == SIGNED_AT + timedelta(days=7)


def test_it_refuses_an_expired_link_and_says_when_it_expired():
    raw = url(signed_at=NOW - timedelta(days=8), expires="604800")

    error = refused(raw, link_checks.MSG_EXPIRED.format(expired_at="2025-03-13 12:00 UTC"))

    assert error.code == "expired"
    assert "new link" in error.messages[0]


def test_it_refuses_a_link_at_the_very_second_it_expires():
    refused(
        url(signed_at=NOW - timedelta(seconds=3600)), link_checks.MSG_EXPIRED.format(expired_at="2025-03-14 12:00 UTC")
    )


def test_it_accepts_a_link_one_second_before_it_expires():
    assert validate_manifest_url(url(signed_at=NOW - timedelta(seconds=3599)), now=NOW).expires_at == NOW + timedelta(
        seconds=1
    )


def test_it_refuses_a_link_dated_more_than_fifteen_minutes_in_the_future():
    refused(url(signed_at=NOW + timedelta(minutes=16)), link_checks.MSG_FUTURE.format(signed_at="2025-03-14 12:16 UTC"))


def test_it_tolerates_a_sender_clock_a_few_minutes_ahead():
    assert validate_manifest_url(url(signed_at=NOW + timedelta(minutes=15)), now=NOW).region == "eu-west-2"


def test_it_checks_expiry_against_the_current_time_by_default():
    fresh = url(signed_at=datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))
    stale = url(signed_at=datetime.now(UTC) - timedelta(hours=2))

    assert validate_manifest_url(fresh).region == "eu-west-2"
    with pytest.raises(LinkError) as caught:
        validate_manifest_url(stale)
    assert caught.value.code == "expired"


@pytest.mark.parametrize(
    ("query_args", "expected"),
    [
        pytest.param({"signature": SIGNATURE[:-1]}, link_checks.MSG_SIGNATURE, id="63 hex digits"),
        pytest.param({"signature": SIGNATURE + "0"}, link_checks.MSG_SIGNATURE, id="65 hex digits"),
        pytest.param({"signature": SIGNATURE.upper()}, link_checks.MSG_SIGNATURE, id="upper-case hex"),
        pytest.param({"signature": "g" * 64}, link_checks.MSG_SIGNATURE, id="not hex"),
        pytest.param({"signature": ""}, link_checks.MSG_SIGNATURE, id="empty"),
        pytest.param({"signature": SIGNATURE[:32] + " " * 32}, link_checks.MSG_SIGNATURE, id="encoded spaces"),
        pytest.param({"algorithm": "AWS4-HMAC-SHA1"}, link_checks.MSG_ALGORITHM, id="other algorithm"),
        pytest.param({"algorithm": "aws4-hmac-sha256"}, link_checks.MSG_ALGORITHM, id="lower-case algorithm"),
        pytest.param({"algorithm": ""}, link_checks.MSG_ALGORITHM, id="empty algorithm"),
        pytest.param({"signed_headers": "x-amz-content-sha256"}, link_checks.MSG_SIGNED_HEADERS, id="host not signed"),
        pytest.param({"signed_headers": ""}, link_checks.MSG_SIGNED_HEADERS, id="no signed headers"),
        pytest.param({"signed_headers": "Host"}, link_checks.MSG_SIGNED_HEADERS, id="upper-case header"),
        pytest.param({"signed_headers": "host;"}, link_checks.MSG_SIGNED_HEADERS, id="trailing separator"),
        pytest.param(
            {"credential": f"{ACCESS_KEY}/20250314/eu-west-2/s3"}, link_checks.MSG_CREDENTIAL, id="short scope"
        ),
        pytest.param(
            {"credential": f"{ACCESS_KEY}/20250313/eu-west-2/s3/aws4_request"},
            link_checks.MSG_CREDENTIAL,
            id="other day",
        ),
        pytest.param(
            {"credential": f"{ACCESS_KEY}/20250314/eu-west-2/ec2/aws4_request"},
            link_checks.MSG_CREDENTIAL,
            id="service",
        ),
        pytest.param({"credential": "/20250314/eu-west-2/s3/aws4_request"}, link_checks.MSG_CREDENTIAL, id="no key id"),
        pytest.param(
            {"credential": f"{ACCESS_KEY}/20250314/eu-west-2/s3/aws4_request/x"}, link_checks.MSG_CREDENTIAL, id="long"
        ),
    ],
)
def test_it_refuses_malformed_signature_fields(query_args, expected):
    refused(url(**query_args), expected)


@pytest.mark.parametrize(
    "date", ["2025-03-14T11:00:00Z", "20250314T110000", "20251314T110000Z", "20250230T110000Z", "20250314T250000Z", ""]
)
def test_it_refuses_a_malformed_signing_date(date):
    raw = url().replace("X-Amz-Date=20250314T115000Z", f"X-Amz-Date={quote(date)}")
    assert raw != url() or date == ""

    refused(raw, link_checks.MSG_DATE)


def test_it_refuses_a_link_signed_for_another_region_than_its_host():
    raw = f"https://{GOOD_HOST}/{BUCKET}/{KEY}?{query('us-east-2')}"

    refused(raw, link_checks.MSG_REGION_MISMATCH.format(host=GOOD_HOST))


# --- The link object never shows the bearer URL --------------------------------------------------


def test_the_link_never_shows_its_url_or_signature():
    link = validate_manifest_url(url(), now=NOW)

    for text in (repr(link), str(link), f"{link}", f"{link!r}"):
        assert SIGNATURE not in text
        assert "X-Amz" not in text and ACCESS_KEY not in text
        assert link.fingerprint in text  # what to log instead


def test_the_link_is_frozen_and_cannot_be_pickled():
    link = validate_manifest_url(url(), now=NOW)

    with pytest.raises(FrozenInstanceError):
        link.url = "https://evil.com/"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pickle.dumps(link)


def test_the_fingerprint_is_the_sha256_of_the_normalised_url_and_is_stable_across_variants():
    plain = validate_manifest_url(url(), now=NOW)
    shouted = validate_manifest_url(f"https://OOS.EU-WEST-2.OUTSCALE.COM.{GOOD_TAIL}", now=NOW)
    other = validate_manifest_url(url(signed_at=SIGNED_AT + timedelta(seconds=1)), now=NOW)

    assert plain.fingerprint == shouted.fingerprint == link_fingerprint(url())
    assert plain.fingerprint == hashlib.sha256(url().encode("utf-8")).hexdigest()
    assert len(plain.fingerprint) == 64 and SIGNATURE not in plain.fingerprint
    assert other.fingerprint != plain.fingerprint


def test_a_link_error_is_a_django_validation_error_with_a_code():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        validate_manifest_url(f"https://evil.com{GOOD_TAIL}", now=NOW)

    assert caught.value.messages == [link_checks.MSG_FOREIGN_HOST]
    assert caught.value.code == "foreign_host"


def test_a_link_error_survives_pickling_with_its_message_and_code():
    with pytest.raises(LinkError) as caught:
        validate_manifest_url(f"https://{GOOD_HOST}:8443{GOOD_TAIL}", now=NOW)

    copy = pickle.loads(pickle.dumps(caught.value))

    assert (copy.messages, copy.code) == ([BAD_PORT], "port")


def test_no_message_constant_quotes_a_link():
    for name in dir(link_checks):
        if name.startswith("MSG_"):
            message = getattr(link_checks, name)
            assert "X-Amz-Signature=" not in message and "?" not in message.replace("…", "")


# --- Sandbox endpoints ---------------------------------------------------------------------------


@pytest.fixture
def sandbox(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"eu-west-2": {"api": "http://127.0.0.1:8701/api/v1", "oos": SANDBOX_OOS}}


def test_it_accepts_plain_http_on_the_configured_sandbox_and_maps_it_to_its_region(sandbox):
    raw = f"{SANDBOX_OOS}/{BUCKET}/{KEY}?{query()}"

    link = validate_manifest_url(raw, now=NOW)

    assert (link.url, link.region, link.bucket, link.key) == (raw, "eu-west-2", BUCKET, KEY)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:8712", link_checks.MSG_PORT.format(host="127.0.0.1"), id="another loopback port"
        ),
        pytest.param("http://127.0.0.1", link_checks.MSG_PORT.format(host="127.0.0.1"), id="no port"),
        pytest.param("http://127.0.0.1:80", link_checks.MSG_PORT.format(host="127.0.0.1"), id="port 80"),
        pytest.param(
            "https://127.0.0.1:8711",
            link_checks.MSG_WRONG_SCHEME.format(host="127.0.0.1", scheme="http", given="https"),
            id="https on the sandbox",
        ),
        pytest.param("http://127.0.0.2:8711", link_checks.MSG_IP_LITERAL, id="another loopback address"),
        pytest.param("http://localhost:8711", link_checks.MSG_FOREIGN_HOST, id="localhost"),
        pytest.param("http://[::1]:8711", link_checks.MSG_IP_LITERAL, id="ipv6 loopback"),
        pytest.param("http://2130706433:8711", link_checks.MSG_IP_LITERAL, id="decimal loopback"),
        pytest.param("http://user@127.0.0.1:8711", link_checks.MSG_USERINFO, id="userinfo"),
        pytest.param(f"https://{GOOD_HOST}", link_checks.MSG_FOREIGN_HOST, id="the real host of the overridden region"),
        pytest.param(
            "http://oos.us-east-2.outscale.com",
            link_checks.MSG_WRONG_SCHEME.format(host="oos.us-east-2.outscale.com", scheme="https", given="http"),
            id="http on another region's real host",
        ),
    ],
)
def test_it_refuses_anything_but_the_exact_sandbox_origin(sandbox, base, expected):
    region = "us-east-2" if "us-east-2" in base else "eu-west-2"
    refused(f"{base}/{BUCKET}/{KEY}?{query(region)}", expected)


def test_the_regions_that_are_not_overridden_keep_their_real_host(sandbox):
    assert validate_manifest_url(url("us-east-2"), now=NOW).region == "us-east-2"


def test_a_sandbox_serving_every_region_maps_a_link_by_its_signing_region(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {
        region: {"api": "http://127.0.0.1:8701/api/v1", "oos": SANDBOX_OOS} for region in REGIONS
    }

    for region in REGIONS:
        raw = f"{SANDBOX_OOS}/{BUCKET}/{KEY}?{query(region)}"
        assert validate_manifest_url(raw, now=NOW).region == region
    refused(
        f"{SANDBOX_OOS}/{BUCKET}/{KEY}?{query('eu-west-9')}", link_checks.MSG_REGION_MISMATCH.format(host="127.0.0.1")
    )


def test_a_sandbox_endpoint_with_a_path_prefix_requires_it(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"eu-west-2": {"oos": f"{SANDBOX_OOS}/oos/"}}

    link = validate_manifest_url(f"{SANDBOX_OOS}/oos/{BUCKET}/{KEY}?{query()}", now=NOW)

    assert (link.bucket, link.key) == (BUCKET, KEY)
    refused(f"{SANDBOX_OOS}/{BUCKET}/{KEY}?{query()}", link_checks.MSG_BAD_PATH)


# --- Links pre-signed by real tools --------------------------------------------------------------


def boto3_link(endpoint, region, *, expires=3600, key=KEY):
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key="dummy-secret-key", region_name=region
    )
    client = session.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, region_name=region),
    )
    return client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires)


@pytest.mark.parametrize("region", REGIONS)
def test_a_link_pre_signed_by_boto3_validates(region):
    raw = boto3_link(f"https://oos.{region}.outscale.com", region, expires=604800, key="exports/ami 1/manifest.json")

    link = validate_manifest_url(raw)

    assert (link.url, link.region, link.bucket, link.key) == (raw, region, BUCKET, "exports/ami 1/manifest.json")
    assert timedelta(days=7) - timedelta(minutes=1) < link.expires_at - datetime.now(UTC) <= timedelta(days=7)
    signature = raw.rsplit("X-Amz-Signature=", 1)[1]
    assert signature not in repr(link)


def test_a_link_pre_signed_by_boto3_for_the_sandbox_validates(sandbox):
    raw = boto3_link(SANDBOX_OOS, "eu-west-2")

    assert validate_manifest_url(raw).region == "eu-west-2"


def test_a_link_pre_signed_by_boto3_and_tampered_with_is_refused():
    raw = boto3_link(f"https://{GOOD_HOST}", "eu-west-2", expires=604800)

    refused(raw.replace("X-Amz-Expires=604800", "X-Amz-Expires=604801"), link_checks.MSG_EXPIRES_TOO_LONG, now=None)
    refused(raw.replace(GOOD_HOST, "oos.eu-west-2.outscale.com.evil.com"), link_checks.MSG_FOREIGN_HOST, now=None)


@pytest.mark.parametrize("use_sandbox", [False, True], ids=["real host", "sandbox"])
def test_a_link_the_portal_pre_signs_itself_validates(settings, use_sandbox):
    if use_sandbox:
        settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"us-west-1": {"oos": SANDBOX_OOS}}
    creds = outscale.Credentials(ACCESS_KEY, "dummy-secret-key", "us-west-1")
    try:
        presigned = outscale.presign_manifest(
            creds=creds, bucket=BUCKET, key=KEY, not_after=datetime.now(UTC) + timedelta(days=3)
        )
    finally:
        outscale.clear_clients()

    link = validate_manifest_url(presigned.url)

    assert (link.region, link.bucket, link.key, link.expires_at) == ("us-west-1", BUCKET, KEY, presigned.expires_at)


# --- No network I/O (URL-03 for this validator) --------------------------------------------------


def test_validation_performs_no_network_io():
    real_link = boto3_link(f"https://{GOOD_HOST}", "eu-west-2")  # signing is local too, but done before the trap
    trap = mock.Mock(side_effect=AssertionError("network I/O attempted"))
    with (
        mock.patch.object(socket.socket, "connect", trap),
        mock.patch.object(socket.socket, "connect_ex", trap),
        mock.patch.object(socket, "getaddrinfo", trap),
        mock.patch.object(socket, "gethostbyname", trap),
        mock.patch.object(socket, "create_connection", trap),
    ):
        assert validate_manifest_url(real_link).region == "eu-west-2"
        for raw in (
            f"https://evil.com{GOOD_TAIL}",
            f"https://169.254.169.254{GOOD_TAIL}",
            f"https://\u043eos.eu-west-2.outscale.com{GOOD_TAIL}",
            f"https://{GOOD_HOST}.evil.com{GOOD_TAIL}",
            url(signed_at=NOW - timedelta(days=30)),
        ):
            with pytest.raises(LinkError):
                validate_manifest_url(raw, now=NOW)
    trap.assert_not_called()


# --- Properties ----------------------------------------------------------------------------------

TRICKY = st.sampled_from(
    list("@:.%[]\\/#?-_~ \t\n\r\x00\x7fAOSZaosz0123456789")
    + [
        "\u043e",
        "\u0455",
        "\u212a",
        "\u3002",
        "\uff0e",
        "\u200b",
        "\u00a0",
        "%2e",
        "%40",
        ".evil.com",
        "@evil.com",
        ":443",
        ":8443",
        "..",
        "xn--",
        "\u0131",
        "\u017f",
    ]
)
INSERTION = st.one_of(st.text(max_size=6), st.lists(TRICKY, max_size=4).map("".join))


@FAST_PROPERTY
@given(
    position=st.integers(min_value=0, max_value=len(GOOD_HOST)),
    deleted=st.integers(min_value=0, max_value=4),
    inserted=INSERTION,
    upper=st.booleans(),
)
def test_a_mutated_host_is_refused_or_normalises_to_an_allowed_host(position, deleted, inserted, upper):
    host = GOOD_HOST[:position] + inserted + GOOD_HOST[position + deleted :]
    raw = f"https://{host.upper() if upper else host}{GOOD_TAIL}"

    try:
        link = validate_manifest_url(raw, now=NOW)
    except LinkError as error:
        assert SIGNATURE not in error.messages[0]
        return
    final_host = link.url.split("/")[2]
    assert final_host in REAL_HOSTS
    assert link.url == f"https://{final_host}{GOOD_TAIL}"
    assert link.region == "eu-west-2"


@FAST_PROPERTY
@given(raw=st.one_of(st.text(max_size=300), st.lists(TRICKY, max_size=30).map(lambda p: "https://" + "".join(p))))
def test_any_text_is_either_a_link_to_our_oos_or_a_link_error(raw):
    try:
        link = validate_manifest_url(raw, now=NOW)
    except LinkError:
        return
    assert link.url.split("/")[2] in REAL_HOSTS


@FAST_PROPERTY
@given(
    position=st.integers(min_value=0, max_value=len(GOOD_TAIL)),
    inserted=st.lists(TRICKY, min_size=1, max_size=3).map("".join),
)
def test_a_mutated_path_or_query_never_lets_a_link_leave_our_host(position, inserted):
    raw = f"https://{GOOD_HOST}{GOOD_TAIL[:position]}{inserted}{GOOD_TAIL[position:]}"

    try:
        link = validate_manifest_url(raw, now=NOW)
    except LinkError as error:
        assert SIGNATURE not in error.messages[0]
        return
    assert link.url.startswith(f"https://{GOOD_HOST}/")
    assert "#" not in link.url and "\\" not in link.url and link.url.isascii()
