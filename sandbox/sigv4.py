"""AWS Signature Version 4 for OOS: header-signed requests and pre-signed URLs.

Off-the-shelf S3 mocks accept expired and tampered pre-signed URLs (DESIGN §7), so the sandbox
checks both itself: the signature over the canonical request, the credential scope, the clock skew
of header-signed requests, and `X-Amz-Date + X-Amz-Expires` of pre-signed ones (at most 7 days).
Canonicalisation follows botocore's S3 signer: the path is used as sent (no re-encoding), the query
is sorted, and the payload hash is the `x-amz-content-sha256` header (or `UNSIGNED-PAYLOAD`).

Pre-signed URLs of the older Signature Version 2 (`?AWSAccessKeyId=…&Expires=…&Signature=…`, the
form OUTSCALE's guide prints for `CreateImage --FileLocation`) are verified too, as S3 does:
base64 HMAC-SHA1 of `METHOD\n\n\n<Expires>\n<x-amz-* headers><path>`, then `Expires` (epoch
seconds) against the clock. SigV2 sets no 7-day ceiling on `Expires`, and neither does the sandbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote

from . import signing
from .world import Account, World

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES = 604800
MAX_SKEW_SECONDS = 15 * 60
UNSIGNED = "UNSIGNED-PAYLOAD"


class S3Error(Exception):
    """An S3-style error, turned into the XML error body by the OOS handler."""

    def __init__(self, status: int, code: str, message: str, **extra: str):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(frozen=True)
class S3Request:
    method: str
    raw_path: str  # percent-encoded, as received
    raw_query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    region: str


def _scope_parts(credential: str, region: str, presigned: bool) -> tuple[str, str]:
    error_code = "AuthorizationQueryParametersError" if presigned else "AuthorizationHeaderMalformed"
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
        raise S3Error(400, error_code, "The credential is malformed; expecting <key>/<date>/<region>/s3/aws4_request.")
    if parts[2] != region:
        raise S3Error(400, error_code, f"The region '{parts[2]}' is wrong; expecting '{region}'")
    return parts[0], parts[1]


def _lookup(world: World, access_key: str, region: str) -> Account:
    account = world.account_by_key(access_key, region)
    if account is None:
        raise S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    return account


def _check_signature(
    request: S3Request,
    account: Account,
    scope_date: str,
    date_iso: str,
    signed: list[str],
    payload_hash: str,
    given: str,
    exclude_signature: bool,
) -> None:
    key = signing.signing_key("AWS4", account.secret_key, scope_date, request.region, "s3", "aws4_request")
    scope = f"{scope_date}/{request.region}/s3/aws4_request"
    exclude = ("X-Amz-Signature",) if exclude_signature else ()
    for normalise in (True, False):
        canonical = "\n".join(
            [
                request.method,
                request.raw_path or "/",
                signing.canonical_query(request.raw_query, exclude, normalise),
                signing.canonical_headers(request.headers, signed),
                ";".join(signed),
                payload_hash,
            ]
        )
        expected = signing.signature(key, signing.string_to_sign(ALGORITHM, date_iso, scope, canonical))
        if signing.same(expected, given):
            return
    raise S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def is_presigned(raw_query: str) -> bool:
    """A SigV4 (`X-Amz-Signature`) or SigV2 (`Signature` with `AWSAccessKeyId`) query signature."""
    return "x-amz-signature=" in raw_query.lower() or is_presigned_v2(raw_query)


def is_presigned_v2(raw_query: str) -> bool:
    names = {name for name, _ in parse_qsl(raw_query, keep_blank_values=True)}
    return {"AWSAccessKeyId", "Signature"} <= names


def authenticate(world: World, request: S3Request, now: datetime | None = None) -> Account | None:
    """Return the signing account, None for an anonymous request, or raise S3Error."""
    now = now or datetime.now(UTC)
    if is_presigned_v2(request.raw_query) and "x-amz-signature=" not in request.raw_query.lower():
        return _authenticate_presigned_v2(world, request, now)
    if is_presigned(request.raw_query):
        return _authenticate_presigned(world, request, now)
    header = request.headers.get("authorization", "")
    if not header:
        return None
    if not header.startswith(ALGORITHM + " "):
        raise S3Error(400, "InvalidArgument", "Only AWS4-HMAC-SHA256 signatures are supported.")
    parts = signing.parse_credential_parts(header)
    signed = [h for h in parts.get("SignedHeaders", "").split(";") if h]
    given = parts.get("Signature", "")
    access_key, scope_date = _scope_parts(parts.get("Credential", ""), request.region, presigned=False)
    date_iso = request.headers.get("x-amz-date", "")
    when = signing.parse_date(date_iso)
    if when is None or date_iso[:8] != scope_date or "host" not in signed or not given:
        raise S3Error(403, "AccessDenied", "X-Amz-Date, the signed headers or the signature are missing or malformed.")
    payload_hash = request.headers.get("x-amz-content-sha256", "")
    if not payload_hash:
        raise S3Error(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if payload_hash not in (UNSIGNED, "STREAMING-UNSIGNED-PAYLOAD-TRAILER") and payload_hash != signing.sha256_hex(
        request.body
    ):
        raise S3Error(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match.")
    with world.lock:
        account = _lookup(world, access_key, request.region)
    _check_signature(request, account, scope_date, date_iso, signed, payload_hash, given, exclude_signature=False)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise S3Error(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            RequestTime=date_iso,
            ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    return account


def _authenticate_presigned(world: World, request: S3Request, now: datetime) -> Account:
    params = dict(parse_qsl(request.raw_query, keep_blank_values=True))
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error(400, "AuthorizationQueryParametersError", 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    try:
        expires = int(params.get("X-Amz-Expires", ""))
    except ValueError as exc:
        raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Expires should be a number") from exc
    if expires < 0:
        raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES:
        raise S3Error(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        )
    access_key, scope_date = _scope_parts(params.get("X-Amz-Credential", ""), request.region, presigned=True)
    date_iso = params.get("X-Amz-Date", "")
    when = signing.parse_date(date_iso)
    signed = [h for h in params.get("X-Amz-SignedHeaders", "").split(";") if h]
    if when is None or date_iso[:8] != scope_date or "host" not in signed:
        raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-SignedHeaders is malformed.")
    with world.lock:
        account = _lookup(world, access_key, request.region)
    payload_hash = request.headers.get("x-amz-content-sha256") or UNSIGNED
    _check_signature(
        request, account, scope_date, date_iso, signed, payload_hash, params.get("X-Amz-Signature", ""), True
    )
    # Expiry is checked after the signature, as S3 does: a forged URL is a forgery whatever its age.
    expiry = when + timedelta(seconds=expires)
    if now > expiry:
        raise S3Error(
            403,
            "AccessDenied",
            "Request has expired",
            **{
                "X-Amz-Expires": str(expires),
                "Expires": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
    if when - now > timedelta(seconds=MAX_SKEW_SECONDS):
        raise S3Error(403, "AccessDenied", "Request is not valid yet")
    return account


# Sub-resources that SigV2 signs as part of the resource (the ones the sandbox serves).
_V2_SUBRESOURCES = ("acl",)


def _authenticate_presigned_v2(world: World, request: S3Request, now: datetime) -> Account:
    params = dict(parse_qsl(request.raw_query, keep_blank_values=True))
    try:
        expires = int(params.get("Expires", ""))
    except ValueError as exc:
        raise S3Error(403, "AccessDenied", "Query-string authentication requires the Expires parameter") from exc
    with world.lock:
        account = _lookup(world, params["AWSAccessKeyId"], request.region)
    amz = sorted(
        (name, " ".join(value.split())) for name, value in request.headers.items() if name.startswith("x-amz-")
    )
    subresources = [name for name in _V2_SUBRESOURCES if name in params]
    suffix = "?" + "&".join(subresources) if subresources else ""
    # The path as sent (botocore signs it percent-encoded), or decoded, as clients differ.
    for path in dict.fromkeys((request.raw_path or "/", unquote(request.raw_path or "/"))):
        string_to_sign = "\n".join(
            [
                request.method,
                request.headers.get("content-md5", ""),
                request.headers.get("content-type", ""),
                str(expires),
                *(f"{name}:{value}" for name, value in amz),
                path + suffix,
            ]
        )
        expected = base64.b64encode(
            hmac.new(account.secret_key.encode(), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
        ).decode()
        if signing.same(expected, params.get("Signature", "")):
            break
    else:
        raise S3Error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    if now.timestamp() > expires:
        expiry = datetime.fromtimestamp(expires, UTC)
        raise S3Error(
            403,
            "AccessDenied",
            "Request has expired",
            Expires=expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    return account


def presign_get(
    endpoint: str, bucket: str, key: str, account: Account, region: str, expires: int, when: datetime
) -> str:
    """A path-style pre-signed GET URL, as boto3's generate_presigned_url builds it; used for the
    snapshot URLs that an export embeds in its manifest."""
    host = endpoint.split("://", 1)[1].rstrip("/")
    path = "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")
    date_iso = signing.format_date(when)
    scope_date = date_iso[:8]
    scope = f"{scope_date}/{region}/s3/aws4_request"
    query = "&".join(
        f"{name}={quote(value, safe='-_.~')}"
        for name, value in (
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{account.access_key}/{scope}"),
            ("X-Amz-Date", date_iso),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", "host"),
        )
    )
    canonical = "\n".join(["GET", path, signing.canonical_query(query), f"host:{host}\n", "host", UNSIGNED])
    key_bytes = signing.signing_key("AWS4", account.secret_key, scope_date, region, "s3", "aws4_request")
    sig = signing.signature(key_bytes, signing.string_to_sign(ALGORITHM, date_iso, scope, canonical))
    return f"{endpoint.rstrip('/')}{path}?{query}&X-Amz-Signature={sig}"
