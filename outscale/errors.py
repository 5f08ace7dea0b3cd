"""The few exception types the rest of the portal sees from OUTSCALE.

Each type says what a caller can do about it: wait and retry (RetryLater), ask a
human to fix the keys and never retry (CredentialError), give up on a missing
resource (NotFound), fix the request (InvalidInput), look up what already
exists (Conflict), or free a quota (QuotaExceeded). Everything carries the
cloud RequestIds for the audit trail and a `user_message` that is safe to show
and store: it never contains keys, request bodies or pre-signed URLs.
"""

import functools
import json
import re
from pathlib import Path

import osc_sdk_python
import ruamel.yaml

# Codes from DESIGN §2 and OUTSCALE's error reference. The SDK's catalogue
# (gateway_errors.yaml) only covers 4000 and up, so the low codes live here.
CREDENTIAL_CODES = frozenset({"1", "4", "5", "7", "8", "11", "13", "14", "20"})
THROTTLE_CODES = frozenset({"6", "24", "25"})
BUSY_CODES = frozenset({"9002"})

# Anything that looks like a URL: cloud messages (StateComment, export
# Comment, error Details) may echo a FileLocation, which is a bearer secret.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_MAX_DETAIL = 300


def scrub(text: str | None) -> str:
    """Make a cloud-provided message safe to log, store and show."""
    if not text:
        return ""
    text = _URL.sub("<url>", str(text))
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


@functools.cache
def _catalogue() -> dict[str, dict]:
    path = Path(osc_sdk_python.__file__).parent / "resources" / "gateway_errors.yaml"
    data = ruamel.yaml.YAML(typ="safe").load(path.read_text())
    return {str(code): entry for code, entry in data.items()}


def code_name(code: str | None) -> str:
    """The catalogue's short name for a code ("no-such-image"), or ""."""
    if not code:
        return ""
    return str(_catalogue().get(str(code), {}).get("Name", "")).strip()


class CloudError(Exception):
    """OUTSCALE refused or failed a call. Not retryable unless a subclass says so."""

    retryable = False
    default_message = "OUTSCALE refused the request."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        code: str | None = None,
        http_status: int | None = None,
        request_ids: tuple[str, ...] = (),
        details: str = "",
        action: str = "",
    ) -> None:
        self.user_message = user_message or self.default_message
        self.code = code
        self.http_status = http_status
        self.request_ids = tuple(rid for rid in request_ids if rid)
        self.details = scrub(details)
        self.action = action
        super().__init__(self.user_message)

    @property
    def request_id(self) -> str | None:
        """The RequestId of the last attempt (the one whose answer this is)."""
        return self.request_ids[-1] if self.request_ids else None

    def __str__(self) -> str:
        extras = [f"{k}={v}" for k, v in (("action", self.action), ("code", self.code),
                                          ("http", self.http_status), ("request_id", self.request_id)) if v]
        return f"{self.user_message} ({', '.join(extras)})" if extras else self.user_message


class RetryLater(CloudError):
    """Throttled, unavailable, timed out or busy: the same call may succeed later.

    `kind` is one of THROTTLED, UNAVAILABLE, TIMEOUT, UNREACHABLE, BUSY.
    `may_have_run` is False only when the cloud certainly did not act on the
    request (it was refused before processing, or never sent): only then is it
    safe to repeat a create without first looking up what it may have created.
    """

    retryable = True
    default_message = "OUTSCALE is temporarily unavailable; the portal will try again."
    THROTTLED, UNAVAILABLE, TIMEOUT, UNREACHABLE, BUSY = "throttled", "unavailable", "timeout", "unreachable", "busy"

    def __init__(self, user_message: str | None = None, *, kind: str, may_have_run: bool, **kwargs) -> None:
        self.kind = kind
        self.may_have_run = may_have_run
        super().__init__(user_message, **kwargs)

    @property
    def unanswered(self) -> bool:
        """Sent, and no answer came (a read timeout, a dropped connection): the cloud may still
        be working on it, and act on it after the caller gave up. An error answer (a 5xx) means
        the cloud is done with the request, whatever it did."""
        return self.may_have_run and self.kind in (self.TIMEOUT, self.UNREACHABLE)


class CredentialError(CloudError):
    """The keys are wrong, disabled, locked or not allowed: never retried automatically.

    Four bad signatures lock the account's API access, so a caller must stop
    and ask a human to fix the stored keys.
    """

    default_message = (
        "OUTSCALE rejected the account's API keys. Check that the access key is active, "
        "belongs to this Region and is allowed to make this call, then update the stored keys."
    )


class NotFound(CloudError):
    default_message = "OUTSCALE could not find the requested resource."


class InvalidInput(CloudError):
    default_message = "OUTSCALE rejected the request as invalid."


class Conflict(CloudError):
    default_message = "A resource with the same name or identity already exists in the account."


class QuotaExceeded(CloudError):
    default_message = "The account has reached an OUTSCALE quota; free some resources or ask for a higher quota."


class ManifestExpired(InvalidInput):
    """The manifest's 7-day deadline has passed: re-export, a new link cannot help."""

    default_message = "The exported image's manifest has expired (7 days after the export); export the image again."


_NOT_FOUND_MESSAGES = {
    "5023": "The image does not exist, or this account cannot see it.",
    "5031": "The manifest file could not be found; the link may be wrong or the export deleted.",
    "5058": "The export task does not exist in this account.",
}


def error_from_oapi(*, http_status: int | None, body: bytes | str | dict | None, action: str = "") -> CloudError:
    """Map an OAPI error answer ({"Errors": [...], "ResponseContext": {...}}) to a CloudError."""
    data = body
    if isinstance(body, (bytes, str)):
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
    data = data if isinstance(data, dict) else {}
    errors = data.get("Errors") or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    code = str(first["Code"]) if first.get("Code") is not None else None
    request_id = (data.get("ResponseContext") or {}).get("RequestId")
    name = code_name(code)
    details = first.get("Details") or first.get("Type") or name
    common = {"code": code, "http_status": http_status, "request_ids": (request_id,) if request_id else (),
              "details": details, "action": action}
    return _classify(code, http_status, name, common)


def _classify(code: str | None, status: int | None, name: str, common: dict) -> CloudError:
    number = int(code) if code and code.isdigit() else -1
    label = f" ({name})" if name else ""
    if code in CREDENTIAL_CODES:
        return CredentialError(**common)
    if code in THROTTLE_CODES or status == 429:
        # A throttled call was refused before it ran, so repeating it is safe.
        return RetryLater("OUTSCALE is limiting the request rate; the portal will try again shortly.",
                          kind=RetryLater.THROTTLED, may_have_run=False, **common)
    if code in BUSY_CODES or 6000 <= number < 7000:
        return RetryLater(f"The resource is busy or not in the right state yet{label}; the portal will try again.",
                          kind=RetryLater.BUSY, may_have_run=False, **common)
    if 5000 <= number < 6000:
        return NotFound(_NOT_FOUND_MESSAGES.get(code, f"OUTSCALE could not find the resource{label}."), **common)
    if 4000 <= number < 5000:
        return InvalidInput(f"OUTSCALE rejected the request as invalid{label}.", **common)
    if 9000 <= number < 10000:
        return Conflict(f"The request conflicts with an existing resource{label}.", **common)
    if 10000 <= number < 11000:
        return QuotaExceeded(f"The account has reached an OUTSCALE quota{label}.", **common)
    if status in (401, 403):
        return CredentialError(**common)
    if status is not None and status >= 500:
        # A 5xx may come after the cloud acted (e.g. a create that timed out internally).
        return RetryLater(kind=RetryLater.UNAVAILABLE, may_have_run=True, **common)
    return CloudError(f"OUTSCALE refused the request{label}.", **common)


# --- OOS (S3 protocol) -----------------------------------------------------------

S3_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                 "InvalidToken", "ExpiredToken", "AccountProblem", "RequestTimeTooSkewed"})
S3_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "TooManyRequests", "RequestLimitExceeded"})
S3_UNAVAILABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "RequestTimeout"})
S3_NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "NoSuchUpload", "NotFound", "404"})
S3_CONFLICT_CODES = frozenset({"BucketAlreadyExists", "BucketAlreadyOwnedByYou", "BucketNotEmpty", "OperationAborted"})


def error_from_s3(*, code: str | None, http_status: int | None, request_id: str | None, message: str = "",
                  action: str = "") -> CloudError:
    common = {"code": code, "http_status": http_status, "request_ids": (request_id,) if request_id else (),
              "details": message, "action": action}
    if code in S3_CREDENTIAL_CODES or http_status == 403:
        return CredentialError(
            "OUTSCALE Object Storage rejected the account's keys or denied access to the bucket. "
            "Check the stored keys and the bucket's permissions.", **common)
    if code in S3_THROTTLE_CODES or http_status in (429, 503):
        return RetryLater("OUTSCALE Object Storage is limiting the request rate; the portal will try again shortly.",
                          kind=RetryLater.THROTTLED, may_have_run=False, **common)
    if code in S3_UNAVAILABLE_CODES or (http_status or 0) >= 500:
        return RetryLater(kind=RetryLater.UNAVAILABLE, may_have_run=True, **common)
    if code in S3_NOT_FOUND_CODES or http_status == 404:
        return NotFound("The bucket or object does not exist in OUTSCALE Object Storage.", **common)
    if code in S3_CONFLICT_CODES or http_status == 409:
        return Conflict("The bucket name is taken or the bucket is busy.", **common)
    return InvalidInput("OUTSCALE Object Storage rejected the request as invalid.", **common)


# --- Transport ---------------------------------------------------------------------

def timed_out(*, connect: bool) -> RetryLater:
    if connect:
        return RetryLater("OUTSCALE could not be reached in time; the portal will try again.",
                          kind=RetryLater.UNREACHABLE, may_have_run=False)
    # The request was sent: the cloud may have acted on it even though no answer came.
    return RetryLater("OUTSCALE did not answer in time; the portal will try again.",
                      kind=RetryLater.TIMEOUT, may_have_run=True)


def unreachable(*, may_have_run: bool) -> RetryLater:
    return RetryLater("OUTSCALE could not be reached; the portal will try again.",
                      kind=RetryLater.UNREACHABLE, may_have_run=may_have_run)
