"""OAPI errors as OUTSCALE returns them.

Codes, types and HTTP statuses follow the public error catalogue (docs.outscale.com/api-errors,
mirrored for codes 4000+ by osc_sdk_python/resources/gateway_errors.yaml). Codes 0-25 are not in the
SDK's YAML, so they are written out here. `Details` strings are the sandbox's own wording.
"""

from __future__ import annotations

# code -> (HTTP status, Type)
_LOW_CODES = {
    "1": (401, "AccessDenied"),  # ErrorAuthenticationFailed
    "2": (405, "AccessDenied"),  # ErrorHttpMethodNotAllowed
    "4": (401, "AccessDenied"),  # ErrorUnauthorizedOperation
    "5": (401, "AccessDenied"),  # ErrorNotAuthorized
    "6": (503, "AccessDenied"),  # ErrorOperationThrottled (whole platform)
    "7": (401, "AccessDenied"),  # ErrorUserNotAllowed
    "13": (401, "AccessDenied"),  # ErrorTemporaryBruteForceAccessLockedException
    "24": (429, "AccessDenied"),  # ErrorOperationThrottledPerAccount
    "25": (429, "AccessDenied"),  # ErrorOperationThrottledPerCall
    # Not in the published table: the sandbox's stand-in for an unexpected server failure.
    "2000": (500, "InternalError"),
    "7000": (400, "MissingParameter"),
}

# The families of the catalogue: first digit(s) -> (HTTP status, Type).
_FAMILIES = (
    (10000, 11000, 400, "TooManyResources (QuotaExceded)"),
    (9000, 10000, 409, "ResourceConflict"),
    (6000, 7000, 409, "InvalidState"),
    (5000, 6000, 400, "InvalidResource"),
    (4000, 5000, 400, "InvalidParameterValue"),
)

# Named constants used by the actions; the names are the catalogue's.
AUTHENTICATION_FAILED = "1"
METHOD_NOT_ALLOWED = "2"
THROTTLED_PLATFORM = "6"
ACCESS_LOCKED = "13"
THROTTLED_ACCOUNT = "24"
THROTTLED_CALL = "25"
INTERNAL_ERROR = "2000"
MISSING_PARAMETER = "7000"
BUCKET_NOT_FOUND = "4002"
INVALID_FILTER = "4023"
INVALID_ID = "4025"
INVALID_IMAGE_NAME = "4026"
INVALID_MANIFEST = "4040"
INVALID_MANIFEST_FORMAT = "4041"
INVALID_METHOD_NAME = "4042"
INVALID_PARAMETER = "4045"
INVALID_PARAMETER_VALUE = "4047"
INVALID_TAG_KEY = "4069"
INVALID_URL = "4074"
INVALID_URL_FORMAT = "4075"
TOKEN_MISMATCH = "4091"
UNKNOWN_EXPORT_VERSION = "4094"
INVALID_ID_PREFIX = "4104"
INVALID_PARAMETER_TYPE = "4108"
NO_SUCH_IMAGE = "5023"
NO_SUCH_MANIFEST = "5031"
NO_SUCH_SNAPSHOT = "5054"
NO_SUCH_TASK = "5058"
INVALID_IMAGE_STATE = "6001"
INVALID_STATE = "6003"
DUPLICATE_NAME = "9015"
# Not in the published catalogue: the OMI quota's refusal (oapi_quotas.py, *chosen*).
TOO_MANY_IMAGES = "10000"


def status_and_type(code: str) -> tuple[int, str]:
    if code in _LOW_CODES:
        return _LOW_CODES[code]
    number = int(code)
    for low, high, status, type_ in _FAMILIES:
        if low <= number < high:
            return status, type_
    return 400, "DefaultError"


class OapiError(Exception):
    """Raised by actions; the HTTP layer turns it into the real error body."""

    def __init__(self, code: str, details: str = ""):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.status, self.type = status_and_type(code)

    def body(self, request_id: str) -> dict:
        return {
            "Errors": [{"Code": self.code, "Type": self.type, "Details": self.details}],
            "ResponseContext": {"RequestId": request_id},
        }
