"""HMAC-SHA256 request signing shared by OAPI (OSC4) and OOS (AWS SigV4).

Both schemes are the same construction with different prefixes, so the key derivation and the
canonical pieces live here once; `auth_osc4` and `sigv4` add what is specific to each protocol.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, unquote

DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(prefix: str, secret: str, date: str, region: str, service: str, terminator: str) -> bytes:
    k_date = _hmac((prefix + secret).encode("utf-8"), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, terminator)


def signature(key: bytes, string_to_sign: str) -> str:
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def string_to_sign(algorithm: str, date_iso: str, scope: str, canonical_request: str) -> str:
    return "\n".join([algorithm, date_iso, scope, sha256_hex(canonical_request.encode("utf-8"))])


def same(a: str, b: str) -> bool:
    """Constant-time comparison, so a forger learns nothing from response timing."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def parse_date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def format_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime(DATE_FORMAT)


def trim_header(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(headers: dict[str, str], signed: list[str]) -> str:
    return "".join(f"{name}:{trim_header(headers.get(name, ''))}\n" for name in signed)


def canonical_query(raw_query: str, exclude: tuple[str, ...] = (), normalise: bool = True) -> str:
    """Sorted `k=v` pairs. Clients differ in how they percent-encode, so by default each pair is
    decoded then re-encoded with the SigV4 rules; `normalise=False` keeps the bytes as sent."""
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        key, _, value = part.partition("=")
        if unquote(key) in exclude:
            continue
        if normalise:
            key, value = quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")
        pairs.append((key, value))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def parse_credential_parts(header_value: str) -> dict[str, str]:
    """`ALGO Credential=..., SignedHeaders=..., Signature=...` -> {"Credential": ..., ...}."""
    _, _, rest = header_value.partition(" ")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key] = value
    return parts
