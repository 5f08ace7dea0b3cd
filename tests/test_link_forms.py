"""The two other link forms OUTSCALE users paste (transfers/link_checks.py): the SigV2 pre-signed
link of OUTSCALE's guide (AWSAccessKeyId, Expires, Signature) and the unsigned full OOS path that an
object ACL makes readable. The same checks as SigV4 links (tests/test_link_checks.py): host, scheme,
no credentials, expiry, at most 7 days ahead, and messages that quote nothing pasted.

No database and no network: links are built by hand or pre-signed locally by boto3.
"""

import base64
import hashlib
import pickle
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from outscale.regions import REGIONS
from transfers import link_checks
from transfers.link_checks import LinkError, validate_manifest_url

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
ACCESS_KEY = "ABCDEFGHIJ0123456789"
SIGNATURE = base64.b64encode(hashlib.sha1(b"a recognisable fake signature").digest()).decode()  # noqa: S324
BUCKET = "exports-alpha"
KEY = "omiportal/6f1c/ami-12345678/manifest.json"
HOST = "oos.eu-west-2.outscale.com"
SANDBOX_OOS = "http://127.0.0.1:8711"
REAL_HOSTS = {f"oos.{region}.outscale.com" for region in REGIONS}

FAST_PROPERTY = hypothesis_settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def _real_endpoints(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {}


def v2_query(*, expires=None, signature=SIGNATURE, access_key=ACCESS_KEY, omit=(), extra=()):
    expires = str(int((NOW + timedelta(hours=1)).timestamp())) if expires is None else expires
    fields = [("AWSAccessKeyId", access_key), ("Expires", expires), ("Signature", signature), *extra]
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in fields if name not in omit)


def v2_url(host=HOST, *, scheme="https", path=f"/{BUCKET}/{KEY}", **query_args):
    return f"{scheme}://{host}{path}?{v2_query(**query_args)}"


def refused(raw, expected, *, now=NOW):
    with pytest.raises(LinkError) as caught:
        validate_manifest_url(raw, now=now)
    message = caught.value.messages[0]
    assert caught.value.messages == [expected]
    assert SIGNATURE not in message and quote(SIGNATURE, safe="") not in message
    assert ACCESS_KEY not in message and KEY not in message and "evil" not in message
    return caught.value


# --- SigV2, the guide's form ---------------------------------------------------------------------


def test_it_accepts_the_form_of_outscales_guide():
    # The request sample of "Importing an OMI from a Bucket", with a real-length signature.
    raw = f"https://{HOST}/BUCKET/KEY?AWSAccessKeyId=ABCDEFGHIJ0123456789&Expires=1741957200&Signature={SIGNATURE}"

    link = validate_manifest_url(raw, now=NOW)

    assert (link.form, link.signed, link.region, link.bucket, link.key) == (
        link_checks.SIGV2, True, "eu-west-2", "BUCKET", "KEY")
    assert link.expires_at == datetime(2025, 3, 14, 13, 0, tzinfo=UTC)
    assert link.url == raw


@pytest.mark.parametrize("region", REGIONS)
def test_it_accepts_a_sigv2_link_to_the_oos_of_each_region_and_takes_the_region_from_the_host(region):
    link = validate_manifest_url(v2_url(f"oos.{region}.outscale.com"), now=NOW)

    assert link.region == region and link.form == link_checks.SIGV2


@pytest.mark.parametrize("region", REGIONS)
def test_a_link_pre_signed_by_boto3_with_sigv2_validates(region):
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key="x", region_name=region)
    client = session.client("s3", endpoint_url=f"https://oos.{region}.outscale.com",
                            config=Config(signature_version="s3", s3={"addressing_style": "path"}))
    raw = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "exports/ami 1/manifest.json"},
                                        ExpiresIn=604800)

    link = validate_manifest_url(raw)

    assert (link.url, link.region, link.key, link.form) == (raw, region, "exports/ami 1/manifest.json",
                                                            link_checks.SIGV2)
    assert timedelta(days=7) - timedelta(minutes=1) < link.expires_at - datetime.now(UTC) <= timedelta(days=7)
    assert raw.rsplit("Signature=", 1)[1].split("&")[0] not in repr(link)


def test_it_accepts_the_parameters_in_any_order_and_with_s3_extras():
    raw = f"https://{HOST}/{BUCKET}/{KEY}?Signature={quote(SIGNATURE, safe='')}&response-content-type=a%2Fb" \
          f"&Expires={int(NOW.timestamp()) + 60}&AWSAccessKeyId={ACCESS_KEY}"

    assert validate_manifest_url(raw, now=NOW).form == link_checks.SIGV2


def test_it_accepts_a_sigv2_link_up_to_seven_days_and_the_clock_skew_ahead():
    edge = NOW + timedelta(days=7) + link_checks.MAX_FUTURE_SKEW

    assert validate_manifest_url(v2_url(expires=str(int(edge.timestamp()))), now=NOW).expires_at == edge


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        pytest.param(str(int(NOW.timestamp())), link_checks.MSG_EXPIRED.format(expired_at="2025-03-14 12:00 UTC"),
                     id="at this very second"),
        pytest.param("1493372309", link_checks.MSG_EXPIRED.format(expired_at="2017-04-28 09:38 UTC"),
                     id="the guide's example, long gone"),
        pytest.param("0", link_checks.MSG_EXPIRED.format(expired_at="1970-01-01 00:00 UTC"), id="zero"),
        pytest.param(str(int((NOW + timedelta(days=7, minutes=16)).timestamp())),
                     link_checks.MSG_V2_TOO_FAR.format(expires_at="2025-03-21 12:16 UTC"), id="past 7 days"),
        pytest.param(str(int((NOW + timedelta(days=365)).timestamp())),
                     link_checks.MSG_V2_TOO_FAR.format(expires_at="2026-03-14 12:00 UTC"), id="a year"),
        pytest.param("99999999999", link_checks.MSG_V2_TOO_FAR.format(expires_at="5138-11-16 09:46 UTC"),
                     id="eleven digits"),
        pytest.param("999999999999", link_checks.MSG_V2_EXPIRES_INVALID, id="twelve digits"),
        pytest.param("-1", link_checks.MSG_V2_EXPIRES_INVALID, id="negative"),
        pytest.param("+1741957200", link_checks.MSG_V2_EXPIRES_INVALID, id="signed"),
        pytest.param("1741957200.5", link_checks.MSG_V2_EXPIRES_INVALID, id="decimal"),
        pytest.param("2025-03-14T13:00:00Z", link_checks.MSG_V2_EXPIRES_INVALID, id="a date"),
        pytest.param("", link_checks.MSG_V2_EXPIRES_INVALID, id="empty"),
        pytest.param("\u0661\u0667", link_checks.MSG_V2_EXPIRES_INVALID, id="arabic-indic digits"),
    ],
)
def test_it_refuses_a_sigv2_expiry_that_is_past_malformed_or_too_far(expires, expected):
    refused(v2_url(expires=expires), expected)


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        pytest.param(SIGNATURE[:-1], link_checks.MSG_V2_SIGNATURE, id="no padding"),
        pytest.param(SIGNATURE[:-2] + "==", link_checks.MSG_V2_SIGNATURE, id="two pads"),
        pytest.param("X" * 34, link_checks.MSG_V2_SIGNATURE, id="the guide's placeholder"),
        pytest.param(base64.b64encode(b"x" * 32).decode(), link_checks.MSG_V2_SIGNATURE, id="sha-256 length"),
        pytest.param(SIGNATURE.replace("=", "%"), link_checks.MSG_V2_SIGNATURE, id="not base64"),
        pytest.param(SIGNATURE[:10] + "-_" + SIGNATURE[12:], link_checks.MSG_V2_SIGNATURE, id="url-safe alphabet"),
        pytest.param("", link_checks.MSG_V2_SIGNATURE, id="empty"),
        pytest.param(" " + SIGNATURE[1:], link_checks.MSG_V2_SIGNATURE, id="encoded space"),
    ],
)
def test_it_refuses_a_malformed_sigv2_signature(signature, expected):
    refused(v2_url(signature=signature), expected)


@pytest.mark.parametrize("access_key", ["", "ABC-DEF", "A" * 129, "ABC DEF", "ABCDEF\u00e9"])
def test_it_refuses_a_malformed_access_key(access_key):
    refused(v2_url(access_key=access_key), link_checks.MSG_V2_ACCESS_KEY)


@pytest.mark.parametrize("param", link_checks.V2_PARAMS)
def test_it_refuses_a_sigv2_link_missing_a_parameter(param):
    refused(v2_url(omit=(param,)), link_checks.MSG_MISSING_PARAM.format(param=param))


@pytest.mark.parametrize("param", link_checks.V2_PARAMS)
def test_it_refuses_a_sigv2_link_that_repeats_a_parameter(param):
    twin = {"AWSAccessKeyId": ACCESS_KEY, "Expires": "1741957200", "Signature": SIGNATURE}[param]

    refused(v2_url(extra=[(param.upper(), twin)]), link_checks.MSG_DUPLICATE_PARAM.format(param=param))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([("X-Amz-Signature", "0" * 64)], id="a sigv4 signature too"),
        pytest.param([("x-amz-credential", f"{ACCESS_KEY}/20250314/eu-west-2/s3/aws4_request")], id="a credential"),
        pytest.param([("X-Amz-Algorithm", "AWS4-HMAC-SHA256")], id="an algorithm"),
    ],
)
def test_it_refuses_a_link_that_mixes_the_two_signatures(extra):
    refused(v2_url(extra=extra), link_checks.MSG_MIXED_SIGNATURES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(v2_url(scheme="http"),
                     link_checks.MSG_WRONG_SCHEME.format(host=HOST, scheme="https", given="http"), id="http"),
        pytest.param(v2_url("evil.com"), link_checks.MSG_FOREIGN_HOST, id="foreign host"),
        pytest.param(v2_url(f"{HOST}.evil.com"), link_checks.MSG_FOREIGN_HOST, id="our host as a prefix"),
        pytest.param(v2_url(f"{ACCESS_KEY}:secret@{HOST}"), link_checks.MSG_USERINFO, id="credentials"),
        pytest.param(v2_url(f"{HOST}:8443"), link_checks.MSG_PORT.format(host=HOST), id="port"),
        pytest.param(v2_url("169.254.169.254"), link_checks.MSG_IP_LITERAL, id="metadata service"),
        pytest.param(v2_url(path=f"/{BUCKET}"), link_checks.MSG_BAD_PATH, id="bucket only"),
        pytest.param(v2_url() + "#x", link_checks.MSG_FRAGMENT, id="fragment"),
        pytest.param(v2_url() + "\n", link_checks.MSG_BAD_CHARACTERS, id="trailing newline"),
    ],
)
def test_a_sigv2_link_gets_the_same_address_checks_as_sigv4(raw, expected):
    refused(raw, expected)


def test_a_sigv2_link_never_shows_its_signature():
    link = validate_manifest_url(v2_url(), now=NOW)

    for text in (repr(link), str(link)):
        assert quote(SIGNATURE, safe="") not in text and SIGNATURE not in text and ACCESS_KEY not in text
    with pytest.raises(TypeError):
        pickle.dumps(link)


# --- The unsigned full path (object ACL) ---------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_it_accepts_an_unsigned_path_in_each_region(region):
    raw = f"https://oos.{region}.outscale.com/{BUCKET}/{KEY}"

    link = validate_manifest_url(raw, now=NOW)

    assert (link.url, link.region, link.bucket, link.key) == (raw, region, BUCKET, KEY)
    assert (link.form, link.signed, link.expires_at) == (link_checks.UNSIGNED, False, None)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(f"https://{HOST}/{BUCKET}/{KEY}?", id="an empty query"),
        pytest.param(f"HTTPS://OOS.EU-WEST-2.OUTSCALE.COM./{BUCKET}/{KEY}", id="case and trailing dot"),
        pytest.param(f"https://{HOST}:443/{BUCKET}/{KEY}", id="default port"),
    ],
)
def test_it_normalises_an_unsigned_path(raw):
    assert validate_manifest_url(raw, now=NOW).url == f"https://{HOST}/{BUCKET}/{KEY}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(f"https://{HOST}/{BUCKET}/{KEY}?x-id=GetObject", link_checks.MSG_UNSIGNED_QUERY,
                     id="a query without signature"),
        pytest.param(f"https://{HOST}/{BUCKET}/{KEY}?versionId=3", link_checks.MSG_UNSIGNED_QUERY, id="a version"),
        pytest.param(f"https://{HOST}/{BUCKET}/{KEY}?X-Amz-Foo=1", link_checks.MSG_UNSIGNED_QUERY,
                     id="an x-amz name that is no signature field"),
        pytest.param(f"http://{HOST}/{BUCKET}/{KEY}",
                     link_checks.MSG_WRONG_SCHEME.format(host=HOST, scheme="https", given="http"), id="http"),
        pytest.param(f"https://user:pw@{HOST}/{BUCKET}/{KEY}", link_checks.MSG_USERINFO, id="credentials"),
        pytest.param(f"https://evil.com/{BUCKET}/{KEY}", link_checks.MSG_FOREIGN_HOST, id="foreign host"),
        pytest.param(f"https://{HOST}/{BUCKET}", link_checks.MSG_BAD_PATH, id="bucket only"),
        pytest.param(f"https://{HOST}/{BUCKET}/../{KEY}", link_checks.MSG_BAD_PATH, id="dot-dot"),
        pytest.param(f"https://{HOST}/{BUCKET}/{KEY}#frag", link_checks.MSG_FRAGMENT, id="fragment"),
        pytest.param(f"s3://{BUCKET}/{KEY}", link_checks.MSG_SCHEME, id="an s3 uri"),
    ],
)
def test_it_refuses_an_unsigned_path_that_is_not_a_plain_oos_path(raw, expected):
    refused(raw, expected)


def test_an_unsigned_path_on_the_sandbox_takes_its_region_from_the_port(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"eu-west-2": {"oos": SANDBOX_OOS}, "us-east-2": {"oos": "http://127.0.0.1:8713"}}

    assert validate_manifest_url(f"{SANDBOX_OOS}/{BUCKET}/{KEY}", now=NOW).region == "eu-west-2"
    assert validate_manifest_url(f"http://127.0.0.1:8713/{BUCKET}/{KEY}", now=NOW).region == "us-east-2"


def test_a_link_that_names_no_region_on_a_host_serving_several_is_refused(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {region: {"oos": SANDBOX_OOS} for region in REGIONS}

    refused(f"{SANDBOX_OOS}/{BUCKET}/{KEY}", link_checks.MSG_REGION_UNKNOWN.format(host="127.0.0.1"))
    refused(v2_url(host="127.0.0.1:8711", scheme="http"), link_checks.MSG_REGION_UNKNOWN.format(host="127.0.0.1"))


def test_no_new_message_quotes_a_link():
    for name in ("MSG_MIXED_SIGNATURES", "MSG_UNSIGNED_QUERY", "MSG_V2_ACCESS_KEY", "MSG_V2_EXPIRES_INVALID",
                 "MSG_V2_TOO_FAR", "MSG_V2_SIGNATURE", "MSG_REGION_UNKNOWN", "MSG_UNSIGNED_REGION"):
        message = getattr(link_checks, name)
        assert "Signature=" not in message and "?" not in message


# --- Properties ----------------------------------------------------------------------------------

TRICKY = st.sampled_from(list("@:.%[]\\/#?&=+-_~ \t\n\x00AOSZaosz019") + ["%2B", "%3D", "%2F", ".evil.com", "\u043e"])


@FAST_PROPERTY
@given(position=st.integers(min_value=0, max_value=len(v2_url())),
       inserted=st.lists(TRICKY, min_size=1, max_size=3).map("".join))
def test_a_mutated_sigv2_link_is_refused_or_stays_on_our_host_and_signed(position, inserted):
    good = v2_url()
    raw = good[:position] + inserted + good[position:]

    try:
        link = validate_manifest_url(raw, now=NOW)
    except LinkError as error:
        assert SIGNATURE not in error.messages[0] and quote(SIGNATURE, safe="") not in error.messages[0]
        return
    assert link.url.split("/")[2] in REAL_HOSTS
    assert "#" not in link.url and "\\" not in link.url and link.url.isascii()
    if link.form == link_checks.UNSIGNED:
        assert "?" not in link.url
    else:
        assert link.expires_at is not None and NOW < link.expires_at <= NOW + timedelta(days=7, minutes=15)


@FAST_PROPERTY
@given(query=st.dictionaries(st.sampled_from([*link_checks.V2_PARAMS, *link_checks.REQUIRED_PARAMS, "x-id",
                                              "versionId", "Expires"]),
                             st.sampled_from([SIGNATURE, ACCESS_KEY, "1741957200", "", "0" * 64]), max_size=6))
def test_any_query_is_refused_or_gives_a_form_whose_fields_are_complete(query):
    raw = f"https://{HOST}/{BUCKET}/{KEY}" + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
                                              if query else "")
    try:
        link = validate_manifest_url(raw, now=NOW)
    except LinkError:
        return
    if link.form == link_checks.SIGV2:
        assert set(link_checks.V2_PARAMS) <= set(query)
    elif link.form == link_checks.UNSIGNED:
        assert not query
    else:
        assert set(link_checks.REQUIRED_PARAMS) <= set(query)
