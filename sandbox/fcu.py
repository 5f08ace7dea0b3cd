"""FCU, OUTSCALE's EC2-compatible API, reduced to what importing an OMI from a bucket needs.

OUTSCALE's guide ("Importing an OMI from a Bucket") offers, beside OAPI's `CreateImage
--FileLocation`, the AWS CLI against the Region's FCU endpoint:

    aws ec2 register-image --image-location <manifest URL> --name <name> --endpoint <FCU endpoint>

So each Region has an FCU endpoint answering the AWS Query protocol (form-encoded `Action=...&
Version=...`, any Version accepted), signed with AWS Signature V4 whose credential scope names the
service `ec2` (what aws-cli and boto3 sign for EC2) or `fcu` (what osc-cli signs), and answering
EC2's XML. Two actions:

* `RegisterImage` (`Name`, `ImageLocation`, `Description`, `DryRun`): the same image creation as
  OAPI `CreateImage{FileLocation}`, with the same checks on the link (it runs that code), counted
  as `RegisterImage` in `counters()` and `created()`. Answers `<imageId>`.
* `DescribeImages` (`ImageId.N`, `Owner.N` with `self` or account ids, `Filter.N.Name` among
  `image-id`, `name`, `state`, `owner-id` with `Filter.N.Value.M`): what OAPI `ReadImages` shows
  the caller, as EC2's `imagesSet`.

`DryRun=true` follows EC2 (OUTSCALE says FCU is EC2-compliant): a permitted dry run answers 412
`DryRunOperation`, a refused one its error. Errors are EC2's XML (`Response/Errors/Error/Code`),
with EC2's codes for OAPI's: 5023 -> InvalidAMIID.NotFound, 9015 -> InvalidAMIName.Duplicate,
4026 -> InvalidAMIName.Malformed, a bad or unreadable manifest link (4040, 4041, 4074, 4075,
4094, 5031, 5054) -> InvalidManifest, 10000 -> ResourceLimitExceeded, 7000 -> MissingParameter,
others -> InvalidParameterValue (*chosen*: OUTSCALE does not publish FCU's mapping).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from . import signing
from .oapi_errors import OapiError
from .world import Account, World

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICES = ("ec2", "fcu")
MAX_SKEW_SECONDS = 15 * 60
XMLNS = "http://ec2.amazonaws.com/doc/2016-09-15/"

# OAPI code -> (HTTP status, EC2 error code)
_EC2_CODES = {
    "1": (401, "AuthFailure"),
    "13": (401, "AuthFailure"),
    "4": (403, "UnauthorizedOperation"),
    "6": (503, "RequestLimitExceeded"),
    "24": (503, "RequestLimitExceeded"),
    "25": (503, "RequestLimitExceeded"),
    "2000": (500, "InternalError"),
    "7000": (400, "MissingParameter"),
    "4026": (400, "InvalidAMIName.Malformed"),
    "4042": (400, "InvalidAction"),
    "5023": (400, "InvalidAMIID.NotFound"),
    "9015": (400, "InvalidAMIName.Duplicate"),
    "10000": (400, "ResourceLimitExceeded"),
}
_MANIFEST_CODES = {"4040", "4041", "4074", "4075", "4094", "5031", "5054"}


class FcuError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message

    @classmethod
    def from_oapi(cls, error: OapiError) -> FcuError:
        if error.code in _MANIFEST_CODES:
            return cls(400, "InvalidManifest", error.details)
        status, code = _EC2_CODES.get(error.code, (400, "InvalidParameterValue"))
        return cls(status, code, error.details)

    def xml(self, request_id: str) -> bytes:
        return _xml(
            f"<Response><Errors><Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )


def _xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


def authenticate(world: World, region: str, method: str, path: str, raw_query: str, headers: dict[str, str],
                 body: bytes, now: datetime | None = None) -> Account:
    """Verify an AWS SigV4 `Authorization` header for FCU; return the account or raise FcuError."""
    header = headers.get("authorization", "")
    if not header.startswith(ALGORITHM + " "):
        raise FcuError(401, "AuthFailure", "AWS was not able to validate the provided access credentials.")
    parts = signing.parse_credential_parts(header)
    credential = parts.get("Credential", "").split("/")
    signed = [h for h in parts.get("SignedHeaders", "").split(";") if h]
    given = parts.get("Signature", "")
    if len(credential) != 5 or credential[4] != "aws4_request" or not signed or not given:
        raise FcuError(400, "IncompleteSignature", "The request signature does not conform to AWS standards.")
    access_key, scope_date, scope_region, service, _ = credential
    if service not in SERVICES or scope_region != region:
        raise FcuError(401, "AuthFailure", f"The credential scope must be <date>/{region}/ec2/aws4_request.")
    date_iso = headers.get("x-amz-date", "")
    when = signing.parse_date(date_iso)
    if when is None or date_iso[:8] != scope_date or "host" not in signed:
        raise FcuError(400, "IncompleteSignature", "X-Amz-Date and the host header must be signed.")
    with world.lock:
        account = world.account_by_key(access_key, region)
    if account is None:
        raise FcuError(401, "AuthFailure", "AWS was not able to validate the provided access credentials.")
    payload_hash = headers.get("x-amz-content-sha256") or signing.sha256_hex(body)
    key = signing.signing_key("AWS4", account.secret_key, scope_date, region, service, "aws4_request")
    scope = f"{scope_date}/{region}/{service}/aws4_request"
    canonical = "\n".join(
        [method, path or "/", signing.canonical_query(raw_query), signing.canonical_headers(headers, signed),
         ";".join(signed), payload_hash]
    )
    if not signing.same(signing.signature(key, signing.string_to_sign(ALGORITHM, date_iso, scope, canonical)), given):
        raise FcuError(
            403, "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    if abs(((now or datetime.now(UTC)) - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise FcuError(403, "RequestExpired", "Request has expired.")
    return account


def parse_params(raw_query: str, body: bytes, content_type: str) -> dict[str, str]:
    params = dict(parse_qsl(raw_query, keep_blank_values=True))
    if body and "x-www-form-urlencoded" in content_type:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return params


def _numbered(params: dict[str, str], prefix: str) -> list[str]:
    """`ImageId.1=a&ImageId.2=b` -> ["a", "b"], in index order."""
    found = []
    for name, value in params.items():
        head, _, index = name.rpartition(".")
        if head == prefix and index.isdigit():
            found.append((int(index), value))
    return [value for _, value in sorted(found)]


class Fcu:
    ACTIONS = ("RegisterImage", "DescribeImages")

    def __init__(self, oapi):
        self.oapi = oapi

    def call(self, account: Account, params: dict[str, str], request_id: str) -> tuple[int, bytes]:
        action = params.get("Action", "")
        if action not in self.ACTIONS:
            raise FcuError(400, "InvalidAction", f"The action {action or '(none)'} is not valid for this web service.")
        try:
            return getattr(self, action)(account, params, request_id)
        except OapiError as error:
            raise FcuError.from_oapi(error) from None

    def RegisterImage(self, account: Account, params: dict[str, str], request_id: str) -> tuple[int, bytes]:
        if not params.get("ImageLocation"):
            raise FcuError(400, "MissingParameter", "The sandbox registers OMIs only from an ImageLocation.")
        if not params.get("Name"):
            raise FcuError(400, "MissingParameter", "The request must contain the parameter Name.")
        dry_run = params.get("DryRun", "false").lower() == "true"
        oapi_params = {"ImageName": params["Name"], "FileLocation": params["ImageLocation"], "DryRun": dry_run}
        if "Description" in params:
            oapi_params["Description"] = params["Description"]
        image = self.oapi.call(account, "CreateImage", oapi_params, counted_as="RegisterImage")
        if dry_run:
            raise FcuError(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        body = (
            f'<RegisterImageResponse xmlns="{XMLNS}"><requestId>{request_id}</requestId>'
            f"<imageId>{image['Image']['ImageId']}</imageId></RegisterImageResponse>"
        )
        return 200, _xml(body)

    def DescribeImages(self, account: Account, params: dict[str, str], request_id: str) -> tuple[int, bytes]:
        filters: dict[str, list[str]] = {}
        if ids := _numbered(params, "ImageId"):
            filters["ImageIds"] = ids
        if owners := _numbered(params, "Owner"):
            filters["AccountIds"] = [account.account_id if owner == "self" else owner for owner in owners]
        names = {"image-id": "ImageIds", "name": "ImageNames", "state": "States", "owner-id": "AccountIds"}
        for index in sorted({name.split(".")[1] for name in params if name.startswith("Filter.")}):
            name = params.get(f"Filter.{index}.Name", "")
            if name not in names:
                raise FcuError(400, "InvalidParameterValue", f"The filter '{name}' is not supported by the sandbox.")
            filters[names[name]] = _numbered(params, f"Filter.{index}.Value")
        images = self.oapi.call(account, "ReadImages", {"Filters": filters}, counted_as="DescribeImages")["Images"]
        items = "".join(_image_xml(image) for image in images)
        body = (
            f'<DescribeImagesResponse xmlns="{XMLNS}"><requestId>{request_id}</requestId>'
            f"<imagesSet>{items}</imagesSet></DescribeImagesResponse>"
        )
        return 200, _xml(body)


def _image_xml(image: dict) -> str:
    def tag(name: str, value) -> str:
        if isinstance(value, bool):
            value = "true" if value else "false"
        return f"<{name}>{escape(str(value))}</{name}>"

    mappings = "".join(
        "<item>" + tag("deviceName", m["DeviceName"]) + "<ebs>" + tag("snapshotId", m["Bsu"]["SnapshotId"])
        + tag("volumeSize", m["Bsu"]["VolumeSize"]) + tag("deleteOnTermination", m["Bsu"]["DeleteOnVmDeletion"])
        + tag("volumeType", m["Bsu"]["VolumeType"]) + "</ebs></item>"
        for m in image["BlockDeviceMappings"]
    )
    codes = "".join(f"<item>{tag('productCode', c)}<type>marketplace</type></item>" for c in image["ProductCodes"])
    return (
        "<item>" + tag("imageId", image["ImageId"]) + tag("imageLocation", image["FileLocation"])
        + tag("imageState", image["State"]) + tag("imageOwnerId", image["AccountId"])
        + tag("creationDate", image["CreationDate"])
        + tag("isPublic", image["PermissionsToLaunch"]["GlobalPermission"])
        + f"<productCodes>{codes}</productCodes>"
        + tag("architecture", image["Architecture"]) + tag("imageType", "machine") + tag("name", image["ImageName"])
        + tag("description", image["Description"]) + tag("rootDeviceType", "ebs")
        + tag("rootDeviceName", image["RootDeviceName"]) + f"<blockDeviceMapping>{mappings}</blockDeviceMapping>"
        + tag("virtualizationType", "hvm") + tag("hypervisor", "xen") + "</item>"
    )
