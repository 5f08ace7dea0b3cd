"""Checking an OOS manifest URL that a user pastes ("import from a link"): text in,
`ManifestLink` or `LinkError` out, no I/O. The services that reveal a link or import from a pasted
one are in `transfers/services/external_links.py`.

Three forms are accepted, as OUTSCALE users paste them (`ManifestLink.form`):

- SIGV4: a query signature (`X-Amz-Algorithm`, `X-Amz-Credential`, …), what boto3 and the portal make;
- SIGV2: the form OUTSCALE's guide shows ("Importing an OMI from a Bucket"), `AWSAccessKeyId`,
  `Expires` (an epoch) and `Signature` (base64 of an HMAC-SHA1); it names no Region, so the host must;
- UNSIGNED: the full path with no query string at all, which works only for an account of the
  same Region that the owner granted read on the manifest (an object ACL); the import service
  checks the Region against the account it imports into.

The portal never fetches a user-supplied URL: it checks the text and, if it passes, hands it to
OUTSCALE as `CreateImage{FileLocation}`. The checks are deliberately strict, and they are done on
the raw text, with no help from a lenient URL parser:

- the address is the OOS of one of the five Regions over https (`oos.<region>.outscale.com`), or
  the exact scheme, host and port that `OMIPORTAL_OUTSCALE_ENDPOINTS` configures for a Region
  (the sandbox, plain http on loopback); a configured Region's real host is then not accepted;
- no user name or password, no other port, no IP literal, no percent-encoding or non-ASCII
  character in the address, no fragment, no whitespace, control character or backslash anywhere,
  at most 4096 characters;
- a path-style `/<bucket>/<key>` path;
- a complete, unexpired SigV4 query signature (each parameter once), signed for the Region of the
  address, valid at most 604,800 s and not dated more than 15 minutes in the future; or a complete
  SigV2 signature that has not expired and expires at most 7 days (and 15 minutes of clock skew)
  ahead; or no query string at all. A query that mixes the two signature forms, or carries other
  parameters without a signature, is refused.

A pre-signed URL is a bearer secret (DESIGN §2): `ManifestLink` keeps it out of `repr`/`str`, and
no error message quotes the URL, its signature or any other part of what the user pasted (messages
name only fixed parameter names, or the host when it is one of ours).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ValidationError

import outscale
from outscale.regions import REGIONS

MAX_URL_LENGTH = 4096
MAX_EXPIRES_SECONDS = 604_800
MAX_FUTURE_SKEW = timedelta(minutes=15)

ALGORITHM = "AWS4-HMAC-SHA256"
REQUIRED_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)

SIGV4 = "sigv4"
SIGV2 = "sigv2"
UNSIGNED = "unsigned"
V2_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
V2_SIGNATURE_BYTES = 20  # HMAC-SHA1

# --- Messages (user-facing; never contain the URL, its signature or other pasted text) ----------

MSG_NOT_A_URL = "Paste the whole link, starting with https://."
MSG_TOO_LONG = f"This link is too long to be an OUTSCALE OOS link (at most {MAX_URL_LENGTH} characters)."
MSG_BAD_CHARACTERS = (
    "The link contains spaces, line breaks, backslashes or other characters that never appear in an "
    "OOS link. Copy it again exactly as you received it."
)
MSG_SCHEME = "Only https:// links to OUTSCALE OOS are accepted."
MSG_WRONG_SCHEME = "Links to {host} must start with {scheme}://, not {given}://."
MSG_USERINFO = "The link has a user name or password in its address (an “@” before the host); OOS links never do."
MSG_ENCODED_HOST = "The link's address contains percent-encoded characters; OOS addresses never do."
MSG_LOOKALIKE_HOST = (
    "The link's address contains non-Latin characters that imitate Latin letters: "
    "it is not an OUTSCALE OOS address."
)
MSG_IP_LITERAL = "The link points at an IP address: it is not an OUTSCALE OOS address."
MSG_FOREIGN_HOST = (
    "The link is not an OUTSCALE OOS address. Only links to the OOS of an OUTSCALE Region "
    "(https://oos.<region>.outscale.com/…) are accepted."
)
MSG_PORT = "The link names a port that {host} does not use. Remove the port or ask the sender for a new link."
MSG_FRAGMENT = (
    "The link ends with a “#…” fragment, which OOS links never have. Copy it again exactly as you received it."
)
MSG_BAD_PATH = (
    "The link does not name a bucket and a manifest file "
    "(https://oos.<region>.outscale.com/<bucket>/<manifest>)."
)
MSG_MISSING_PARAM = "The link is not a complete pre-signed link: {param} is missing. Copy the whole link again."
MSG_DUPLICATE_PARAM = "The link repeats the query parameter {param}; a pre-signed link names each one once."
MSG_DUPLICATE_QUERY = "The link repeats a query parameter; a pre-signed link names each one once."
MSG_ALGORITHM = f"The link is not signed with {ALGORITHM} (X-Amz-Algorithm)."
MSG_CREDENTIAL = "The link's X-Amz-Credential is malformed or does not match its X-Amz-Date."
MSG_DATE = "The link's X-Amz-Date is not a date of the form YYYYMMDDTHHMMSSZ."
MSG_EXPIRES_INVALID = (
    f"The link's X-Amz-Expires is not a whole number of seconds between 1 and {MAX_EXPIRES_SECONDS}."
)
MSG_EXPIRES_TOO_LONG = (
    f"The link claims to stay valid longer than 7 days (X-Amz-Expires over {MAX_EXPIRES_SECONDS} seconds), "
    "which OUTSCALE never allows."
)
MSG_SIGNED_HEADERS = "The link's X-Amz-SignedHeaders is malformed: it must list the signed headers, host included."
MSG_SIGNATURE = "The link's X-Amz-Signature is not a 64-character hexadecimal signature."
MSG_REGION_MISMATCH = (
    "The link is signed for another Region than the one {host} serves, so OUTSCALE would refuse it. "
    "Ask the sender to produce a new link."
)
MSG_EXPIRED = "This link expired at {expired_at}. Ask the sender to produce a new link."
MSG_FUTURE = (
    "This link is dated {signed_at}, in the future. Check the sender's clock and ask them to produce a new link."
)
MSG_MIXED_SIGNATURES = (
    "The link carries parts of two different signatures (X-Amz-… and AWSAccessKeyId/Expires/Signature); "
    "a pre-signed link has one. Copy it again exactly as you received it."
)
MSG_UNSIGNED_QUERY = (
    "The link has a query string but no signature. Paste either the whole pre-signed link, or the plain "
    "path of the manifest (https://oos.<region>.outscale.com/<bucket>/<manifest>) with nothing after it."
)
MSG_V2_ACCESS_KEY = "The link's AWSAccessKeyId is not an OUTSCALE access key (letters and digits only)."
MSG_V2_EXPIRES_INVALID = "The link's Expires is not a time in whole seconds since 1970 (digits only)."
MSG_V2_TOO_FAR = (
    "This link claims to stay valid until {expires_at}, more than 7 days from now, which OUTSCALE never allows. "
    "Ask the sender to produce a new link."
)
MSG_V2_SIGNATURE = "The link's Signature is not a base64 HMAC-SHA1 signature (28 characters ending in “=”)."
MSG_REGION_UNKNOWN = (
    "{host} serves several Regions and this link does not say which one it was signed for: "
    "ask the sender for a SigV4 link (X-Amz-Credential names the Region)."
)
MSG_UNSIGNED_REFUSED = (
    "OUTSCALE would not import from this manifest path ({reason}). A path without a signature works only for an "
    "account its owner granted read on the manifest and its snapshots (an object ACL): ask them to grant read to "
    "the OOS user ID of account {account}, or to send a pre-signed link instead."
)
MSG_UNSIGNED_REGION = (
    "A manifest path without a signature can only be imported into an account of its own Region ({region}), "
    "and only if the image's owner granted that account read on the manifest. Choose an account in {region}, "
    "or ask the sender for a pre-signed link."
)

# --- Character classes ---------------------------------------------------------------------------

# RFC 3986 unreserved + reserved (minus "[" "]", allowed in the address only) + "%".
_URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#@!$&'()*+,;=%")
_AUTHORITY_EXTRA = frozenset("[]")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Dotted forms that resolvers read as IPv4: 127.0.0.1, 2130706433, 0177.0.0.1, 0x7f.1, …
_IPV4_LIKE_RE = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*")
_IPV6_CHARS = frozenset("0123456789abcdef:.")
_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_EXPIRES_RE = re.compile(r"[0-9]+")
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9]{1,128}")
_REGION_RE = re.compile(r"[a-z0-9-]{1,64}")
_SIGNED_HEADERS_RE = re.compile(r"[a-z0-9-]+(?:;[a-z0-9-]+)*")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_V2_SIGNATURE_RE = re.compile(r"[A-Za-z0-9+/]{27}=")
_EPOCH_RE = re.compile(r"[0-9]{1,11}")
_V4_NAMES = frozenset(name.lower() for name in REQUIRED_PARAMS)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class LinkError(ValidationError):
    """A pasted link was refused. `.messages` (Django) holds one user-facing sentence; `.code` a short key."""

    def __init__(self, message: str, code: str | None = None, params=None):
        super().__init__(message, code=code, params=params)


@dataclass(frozen=True, slots=True)
class ManifestLink:
    """A checked manifest URL. `url` is a bearer secret when signed: it is left out of repr/str.
    `expires_at` is None for an unsigned path (it never expires; the manifest inside does)."""

    url: str = field(repr=False)
    region: str
    bucket: str
    key: str
    expires_at: datetime | None
    fingerprint: str
    form: str = SIGV4

    @property
    def signed(self) -> bool:
        return self.form != UNSIGNED

    def __getstate__(self):
        # Like Credentials: a pickled link would carry the bearer URL into job payloads or caches.
        raise TypeError("ManifestLink is not picklable: store its fingerprint, never the URL.")


def link_fingerprint(url: str) -> str:
    """SHA-256 (hex) of a link, for audit and de-duplication: the fingerprint, never the URL, is stored.
    Pass `ManifestLink.url` (the normalised form) so that variants of one link share a fingerprint."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Origin:
    region: str
    scheme: str
    host: str  # lower-case, no trailing dot; IPv6 literals keep their brackets
    port: int
    path_prefix: str  # "" or "/something" (no trailing slash)


def validate_manifest_url(raw: str, *, now: datetime | None = None) -> ManifestLink:
    """Check a pasted manifest URL (pre-signed, or an unsigned path) without any network I/O;
    raise LinkError if it is refused."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware.")
    if not isinstance(raw, str) or not raw:
        raise LinkError(MSG_NOT_A_URL, "empty")
    if len(raw) > MAX_URL_LENGTH:
        raise LinkError(MSG_TOO_LONG, "too_long")

    scheme, authority, rest = _split(raw)
    host, port = _check_authority(authority)
    origin = _match_origin(scheme, host, port)
    if "#" in rest:
        raise LinkError(MSG_FRAGMENT, "fragment")
    path, _, query = rest.partition("?")
    bucket, key = _bucket_and_key(path, origin.path_prefix)
    params = _query_params(query)
    form = _form(params)
    expires_at: datetime | None = None
    if form == SIGV4:
        signed_at, expires, credential_region = _check_signature_fields(params)
        region = _resolve_region(scheme, host, port, path, credential_region)
        expires_at = signed_at + timedelta(seconds=expires)
        if expires_at <= now:
            raise LinkError(MSG_EXPIRED.format(expired_at=_when(expires_at)), "expired")
        if signed_at > now + MAX_FUTURE_SKEW:
            raise LinkError(MSG_FUTURE.format(signed_at=_when(signed_at)), "future")
    else:
        region = _region_of_host(scheme, host, port, path)
        if form == SIGV2:
            expires_at = _check_v2_fields(params, now)
        else:
            rest = path  # "…/manifest?" with nothing after it is the same path

    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    url = f"{scheme}://{netloc}{rest}"
    return ManifestLink(url=url, region=region, bucket=bucket, key=key, expires_at=expires_at,
                        fingerprint=link_fingerprint(url), form=form)


# --- Steps ---------------------------------------------------------------------------------------


def _split(raw: str) -> tuple[str, str, str]:
    """(lower-case scheme, authority, rest from the first "/", "?" or "#"), after the character checks."""
    if any(ord(char) < 0x21 or ord(char) == 0x7F or char == "\\" for char in raw):
        raise LinkError(MSG_BAD_CHARACTERS, "bad_characters")
    scheme_text, colon, after = raw.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme_text):
        raise LinkError(MSG_NOT_A_URL, "not_a_url")
    scheme = scheme_text.lower()
    if scheme not in _DEFAULT_PORTS:
        raise LinkError(MSG_SCHEME, "scheme")
    if not after.startswith("//"):
        raise LinkError(MSG_NOT_A_URL, "not_a_url")
    after = after[2:]
    end = len(after)
    for delimiter in "/?#":
        found = after.find(delimiter)
        if found != -1:
            end = min(end, found)
    authority, rest = after[:end], after[end:]
    if not authority.isascii():
        raise LinkError(MSG_LOOKALIKE_HOST, "lookalike_host")
    if not rest.isascii() or any(char not in _URL_CHARS for char in rest) or _BAD_PERCENT_RE.search(rest):
        raise LinkError(MSG_BAD_CHARACTERS, "bad_characters")
    if any(char not in _URL_CHARS and char not in _AUTHORITY_EXTRA for char in authority):
        raise LinkError(MSG_BAD_CHARACTERS, "bad_characters")
    return scheme, authority, rest


def _split_host_port(authority: str) -> tuple[str, str | None]:
    """Split an ASCII authority without userinfo into (host, port text or None). Host is lower-cased
    (safe: ASCII only) with one trailing dot removed; IPv6 literals keep their brackets."""
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise LinkError(MSG_NOT_A_URL, "not_a_url")
        host, tail = authority[: close + 1], authority[close + 1 :]
        if tail and not tail.startswith(":"):
            raise LinkError(MSG_NOT_A_URL, "not_a_url")
        port = tail[1:] if tail else None
    else:
        if authority.count(":") > 1 and set(authority.lower()) <= _IPV6_CHARS:
            raise LinkError(MSG_IP_LITERAL, "ip_literal")  # an unbracketed IPv6 address
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
        if "[" in host or "]" in host:
            raise LinkError(MSG_FOREIGN_HOST, "foreign_host")
    host = host.lower()
    if host.endswith(".") and not host.startswith("["):
        host = host[:-1]
    return host, port


def _check_authority(authority: str) -> tuple[str, int | str | None]:
    """(normalised host, port: None when absent, a number, or the raw text when it is not a plain number)."""
    if "@" in authority:
        raise LinkError(MSG_USERINFO, "userinfo")
    if "%" in authority:
        raise LinkError(MSG_ENCODED_HOST, "encoded_host")
    host, port_text = _split_host_port(authority)
    if not host:
        raise LinkError(MSG_NOT_A_URL, "not_a_url")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5 or str(int(port_text)) != port_text:
        return host, port_text  # refused in _match_origin, with the right message for the host
    return host, int(port_text)


def _configured_origins() -> list[_Origin]:
    origins = []
    for region in REGIONS:
        endpoint = urlsplit(outscale.endpoints_for(region).oos)
        scheme = endpoint.scheme.lower()
        netloc = endpoint.netloc.rpartition("@")[2]
        host, port_text = _split_host_port(netloc)
        port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
        origins.append(_Origin(region, scheme, host, port, endpoint.path.rstrip("/")))
    return origins


def _is_ip_literal(host: str) -> bool:
    return host.startswith("[") or ":" in host or bool(_IPV4_LIKE_RE.fullmatch(host))


def _match_origin(scheme: str, host: str, port: int | str | None) -> _Origin:
    """The configured origin this (scheme, host, port) is exactly, else the reason it is refused."""
    origins = _configured_origins()
    effective_port = _DEFAULT_PORTS[scheme] if port is None else port
    exact = [o for o in origins if (o.scheme, o.host, o.port) == (scheme, host, effective_port)]
    if exact:
        return exact[0]
    ours = [o for o in origins if o.host == host]
    if not ours:
        if _is_ip_literal(host):
            raise LinkError(MSG_IP_LITERAL, "ip_literal")
        raise LinkError(MSG_FOREIGN_HOST, "foreign_host")
    # The host is one of ours (configured), so naming it leaks nothing.
    schemes = {o.scheme for o in ours}
    if scheme not in schemes:
        expected = "https" if "https" in schemes else sorted(schemes)[0]
        raise LinkError(MSG_WRONG_SCHEME.format(host=host, scheme=expected, given=scheme), "wrong_scheme")
    raise LinkError(MSG_PORT.format(host=host), "port")


def _bucket_and_key(path: str, prefix: str) -> tuple[str, str]:
    if prefix:
        if not path.startswith(prefix + "/"):
            raise LinkError(MSG_BAD_PATH, "bad_path")
        path = path[len(prefix) :]
    if not path.startswith("/"):
        raise LinkError(MSG_BAD_PATH, "bad_path")
    bucket_text, slash, key_text = path[1:].partition("/")
    if not slash or not bucket_text or not key_text:
        raise LinkError(MSG_BAD_PATH, "bad_path")
    try:
        bucket, key = unquote(bucket_text, errors="strict"), unquote(key_text, errors="strict")
    except UnicodeDecodeError:
        raise LinkError(MSG_BAD_PATH, "bad_path") from None
    segments = [bucket, *key.split("/")]
    if "/" in bucket or any(segment in (".", "..") for segment in segments):
        raise LinkError(MSG_BAD_PATH, "bad_path")
    if any(ord(char) < 0x20 or ord(char) == 0x7F or char == "\\" for char in bucket + key):
        raise LinkError(MSG_BAD_PATH, "bad_path")
    return bucket, key


def _query_params(query: str) -> dict[str, str]:
    """Decoded query parameters; any name given twice (case-insensitively) is refused."""
    params: dict[str, str] = {}
    seen: set[str] = set()
    for part in query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        try:
            name = unquote(raw_name, errors="strict")
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise LinkError(MSG_BAD_CHARACTERS, "bad_characters") from None
        folded = name.lower()
        if folded in seen:
            known = next((p for p in (*REQUIRED_PARAMS, *V2_PARAMS) if p.lower() == folded), None)
            message = MSG_DUPLICATE_PARAM.format(param=known) if known else MSG_DUPLICATE_QUERY
            raise LinkError(message, "duplicate_param")
        seen.add(folded)
        params[name] = value
    return params


def _form(params: dict[str, str]) -> str:
    """Which signature the query carries: SigV4, SigV2, or none (then no query at all)."""
    v4 = any(name.lower() in _V4_NAMES for name in params)
    v2 = any(name in V2_PARAMS for name in params)
    if v4 and v2:
        raise LinkError(MSG_MIXED_SIGNATURES, "mixed_signatures")
    if v4:
        return SIGV4
    if v2:
        return SIGV2
    if params:
        raise LinkError(MSG_UNSIGNED_QUERY, "unsigned_query")
    return UNSIGNED


def _check_v2_fields(params: dict[str, str], now: datetime) -> datetime:
    """When a SigV2 link expires, from well-formed fields: not past, at most 7 days ahead."""
    for name in V2_PARAMS:
        if name not in params:
            raise LinkError(MSG_MISSING_PARAM.format(param=name), "missing_param")
    if not _ACCESS_KEY_RE.fullmatch(params["AWSAccessKeyId"]):
        raise LinkError(MSG_V2_ACCESS_KEY, "access_key")
    if not _EPOCH_RE.fullmatch(params["Expires"]):
        raise LinkError(MSG_V2_EXPIRES_INVALID, "expires")
    signature = params["Signature"]
    if not _V2_SIGNATURE_RE.fullmatch(signature) or len(base64.b64decode(signature)) != V2_SIGNATURE_BYTES:
        raise LinkError(MSG_V2_SIGNATURE, "signature")
    try:
        expires_at = datetime.fromtimestamp(int(params["Expires"]), tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise LinkError(MSG_V2_TOO_FAR.format(expires_at="a date beyond any calendar"), "expires_too_long") from None
    if expires_at <= now:
        raise LinkError(MSG_EXPIRED.format(expired_at=_when(expires_at)), "expired")
    if expires_at > now + timedelta(seconds=MAX_EXPIRES_SECONDS) + MAX_FUTURE_SKEW:
        raise LinkError(MSG_V2_TOO_FAR.format(expires_at=_when(expires_at)), "expires_too_long")
    return expires_at


def _region_of_host(scheme: str, host: str, port: int | str | None, path: str) -> str:
    """The one Region whose OOS this address is (a link that names no Region of its own)."""
    regions = _candidate_regions(scheme, host, port, path)
    if len(regions) != 1:
        raise LinkError(MSG_REGION_UNKNOWN.format(host=host), "region_unknown")
    return regions[0]


def _check_signature_fields(params: dict[str, str]) -> tuple[datetime, int, str]:
    """(signing time, X-Amz-Expires, the credential scope's Region) from well-formed SigV4 fields."""
    for name in REQUIRED_PARAMS:
        if name not in params:
            raise LinkError(MSG_MISSING_PARAM.format(param=name), "missing_param")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise LinkError(MSG_ALGORITHM, "algorithm")

    date_text = params["X-Amz-Date"]
    try:
        if not _DATE_RE.fullmatch(date_text):
            raise ValueError(date_text)
        signed_at = datetime.strptime(date_text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise LinkError(MSG_DATE, "date") from None

    expires_text = params["X-Amz-Expires"]
    if not _EXPIRES_RE.fullmatch(expires_text):
        raise LinkError(MSG_EXPIRES_INVALID, "expires")
    if len(expires_text) > 7 or int(expires_text) > MAX_EXPIRES_SECONDS:
        raise LinkError(MSG_EXPIRES_TOO_LONG, "expires_too_long")
    expires = int(expires_text)
    if expires < 1:
        raise LinkError(MSG_EXPIRES_INVALID, "expires")

    parts = params["X-Amz-Credential"].split("/")
    if (
        len(parts) != 5
        or not _ACCESS_KEY_RE.fullmatch(parts[0])
        or parts[1] != date_text[:8]
        or not _REGION_RE.fullmatch(parts[2])
        or parts[3] != "s3"
        or parts[4] != "aws4_request"
    ):
        raise LinkError(MSG_CREDENTIAL, "credential")

    signed_headers = params["X-Amz-SignedHeaders"]
    if not _SIGNED_HEADERS_RE.fullmatch(signed_headers) or "host" not in signed_headers.split(";"):
        raise LinkError(MSG_SIGNED_HEADERS, "signed_headers")
    if not _SIGNATURE_RE.fullmatch(params["X-Amz-Signature"]):
        raise LinkError(MSG_SIGNATURE, "signature")
    return signed_at, expires, parts[2]


def _resolve_region(scheme: str, host: str, port: int | str | None, path: str, credential_region: str) -> str:
    """The Region whose OOS the link names. When several Regions share one configured endpoint (a
    sandbox serving every Region), the credential scope picks among them; otherwise it must agree."""
    if credential_region in _candidate_regions(scheme, host, port, path):
        return credential_region
    raise LinkError(MSG_REGION_MISMATCH.format(host=host), "region_mismatch")


def _candidate_regions(scheme: str, host: str, port: int | str | None, path: str) -> list[str]:
    effective_port = _DEFAULT_PORTS[scheme] if port is None else port
    return [
        o.region
        for o in _configured_origins()
        if (o.scheme, o.host, o.port) == (scheme, host, effective_port)
        and (not o.path_prefix or path.startswith(o.path_prefix + "/"))
    ]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
