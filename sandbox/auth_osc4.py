"""Verification of OUTSCALE's `OSC4-HMAC-SHA256` request signatures (OAPI).

It mirrors what osc_sdk_python/authentication.py signs: method, path, an empty query, the headers
`content-type;host;x-osc-date`, and the SHA-256 of the JSON body, with keys derived from
`"OSC4" + secret` and the scope `<date>/<region>/api/osc4_request`. The SDK signs the host without
its port (urllib3's `parse_url(...).host`), so the port-less host is tried first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import oapi_errors as codes
from . import signing
from .oapi_errors import OapiError
from .world import Account, World

ALGORITHM = "OSC4-HMAC-SHA256"
MAX_SKEW_SECONDS = 15 * 60
LOCK_SECONDS = 60.0


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


def _fail(reason: str) -> OapiError:
    # OUTSCALE answers every signature problem with the same code; the reason helps debugging.
    return OapiError(codes.AUTHENTICATION_FAILED, reason)


def authenticate(world: World, region: str, request: SignedRequest, lockout_after: int = 4) -> Account:
    """Return the calling account or raise the 401 OapiError OUTSCALE would send."""
    header = request.headers.get("authorization", "")
    if not header.startswith(ALGORITHM + " "):
        raise _fail("The Authorization header is missing or does not use OSC4-HMAC-SHA256.")
    parts = signing.parse_credential_parts(header)
    credential = parts.get("Credential", "").split("/")
    signed_headers = [h for h in parts.get("SignedHeaders", "").split(";") if h]
    given_signature = parts.get("Signature", "")
    if len(credential) != 5 or not signed_headers or not given_signature:
        raise _fail("The Authorization header is malformed.")
    access_key, scope_date, scope_region, scope_service, terminator = credential
    if scope_service != "api" or terminator != "osc4_request":
        raise _fail("The credential scope must end with api/osc4_request.")
    if scope_region != region:
        raise _fail(f"The credential scope names Region {scope_region!r}, this endpoint serves {region!r}.")
    if "host" not in signed_headers or "x-osc-date" not in signed_headers:
        raise _fail("The host and x-osc-date headers must be signed.")

    date_iso = request.headers.get("x-osc-date", "")
    when = signing.parse_date(date_iso)
    if when is None or date_iso[:8] != scope_date:
        raise _fail("X-Osc-Date is missing, malformed or does not match the credential scope.")

    with world.lock:
        account = world.account_by_key(access_key, region)
        if account is None:
            raise _fail("The access key is not known in this Region.")
        locked = world.locked_until.get(access_key, 0.0)
        if locked > time.monotonic():
            raise OapiError(
                codes.ACCESS_LOCKED,
                "Too many failed connection attempts. Your access has been locked for 60 seconds.",
            )

    skew = abs((datetime.now(UTC) - when).total_seconds())
    if skew > MAX_SKEW_SECONDS:
        _record_failure(world, access_key, lockout_after)
        raise _fail("The request date is more than 15 minutes away from the server's clock.")

    payload_hash = signing.sha256_hex(request.body)
    key = signing.signing_key("OSC4", account.secret_key, scope_date, region, "api", "osc4_request")
    scope = f"{scope_date}/{region}/api/osc4_request"
    raw_host = request.headers.get("host", "")
    for host in dict.fromkeys((raw_host.rsplit(":", 1)[0] if ":" in raw_host else raw_host, raw_host)):
        headers = dict(request.headers, host=host)
        canonical = "\n".join(
            [
                request.method,
                request.path,
                "",  # OAPI carries its parameters in the body
                signing.canonical_headers(headers, signed_headers),
                ";".join(signed_headers),
                payload_hash,
            ]
        )
        expected = signing.signature(key, signing.string_to_sign(ALGORITHM, date_iso, scope, canonical))
        if signing.same(expected, given_signature):
            with world.lock:
                world.auth_failures.pop(access_key, None)
            return account
    _record_failure(world, access_key, lockout_after)
    raise _fail("The request signature does not match (wrong secret key or altered request).")


def _record_failure(world: World, access_key: str, lockout_after: int) -> None:
    """Four bad signatures lock the key for a minute, as on the real platform (DESIGN §2)."""
    if lockout_after <= 0:
        return
    with world.lock:
        world.auth_failures[access_key] += 1
        if world.auth_failures[access_key] >= lockout_after:
            world.auth_failures[access_key] = 0
            world.locked_until[access_key] = time.monotonic() + LOCK_SECONDS
