"""Reading a manifest for `CreateImage{FileLocation}` the way OUTSCALE does.

The URL must point at an OOS endpoint of the sandbox; it is fetched through the OOS code with its
own signature and expiry checks (a pre-signed URL), or, without a signature, as the importing
account (the same-Region "object ACL" method). Then every snapshot URL inside the manifest must
still be valid: past the 7-day deadline the manifest is obsolete and the OMI must be exported again.

Error codes chosen (all synchronous errors of CreateImage):
  4075 invalid-url-format   not an http(s) URL of the form <endpoint>/<bucket>/<key>, or with user info
  4074 invalid-url          not an OOS endpoint of the sandbox; pre-signature expired, forged,
                            longer than 7 days; or no access to the object
  5031 no-such-manifest     the bucket or the object does not exist
  4041 invalid-manifest-format  the object is not a JSON manifest
  4094 unknown-export-version   the manifest's Version is not one the sandbox writes
  4040 invalid-manifest     a snapshot URL is expired, forged or foreign (the export is obsolete)
  5054 no-such-snapshot     a snapshot object the manifest names was deleted
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from . import oapi_errors as codes
from .exports import MANIFEST_VERSION
from .oapi_errors import OapiError
from .oos import Oos, split_path
from .sigv4 import S3Error, S3Request, is_presigned
from .world import Account, World


def _region_of(world: World, scheme: str, netloc: str) -> str | None:
    for region, endpoints in world.endpoints.items():
        oos = urlsplit(endpoints["oos"])
        if oos.scheme == scheme and oos.netloc == netloc:
            return region
    return None


def fetch(world: World, oos: Oos, caller: Account, url: str, what: str) -> bytes:
    """GET `url` from the sandbox's OOS; raises S3Error or OapiError(4074/4075)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise OapiError(codes.INVALID_URL_FORMAT, f"The {what} URL is malformed.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise OapiError(codes.INVALID_URL_FORMAT, f"The {what} URL must be an http(s) URL without credentials.")
    bucket, key = split_path(parts.path)
    if not bucket or not key:
        raise OapiError(codes.INVALID_URL_FORMAT, f"The {what} URL must name a bucket and an object (path-style).")
    region = _region_of(world, parts.scheme, parts.netloc)
    if region is None:
        raise OapiError(codes.INVALID_URL, f"The {what} URL does not point at an OOS endpoint.")
    request = S3Request("GET", parts.path, parts.query, {"host": parts.netloc}, b"", region)
    if is_presigned(parts.query):
        response = oos.execute(request)
    elif region == caller.region:
        response = oos.execute(request, principal=caller, authenticated=True)
    else:
        raise OapiError(codes.INVALID_URL, f"The {what} URL is in another Region and is not pre-signed.")
    return response.body


def _url_error(error: S3Error, what: str) -> OapiError:
    if error.code in ("NoSuchKey", "NoSuchBucket"):
        if what == "manifest":
            return OapiError(codes.NO_SUCH_MANIFEST, "The manifest does not exist.")
        return OapiError(codes.NO_SUCH_SNAPSHOT, "A snapshot named in the manifest does not exist any more.")
    if error.message == "Request has expired":
        reason = "has expired"
    elif error.code == "AccessDenied":
        reason = "does not grant access to the object"
    else:
        reason = "has an invalid signature"
    if what == "manifest":
        return OapiError(codes.INVALID_URL, f"The manifest URL {reason}.")
    return OapiError(
        codes.INVALID_MANIFEST,
        f"A snapshot URL in the manifest {reason}; the export is obsolete, export the OMI again.",
    )


def load_manifest(world: World, oos: Oos, caller: Account, file_location: str) -> dict:
    """Return the validated manifest, or raise the OapiError CreateImage answers with."""
    try:
        body = fetch(world, oos, caller, file_location, "manifest")
    except S3Error as error:
        raise _url_error(error, "manifest") from None
    try:
        manifest = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise OapiError(codes.INVALID_MANIFEST_FORMAT, "The object is not a JSON manifest.") from None
    if not isinstance(manifest, dict) or "Version" not in manifest:
        raise OapiError(codes.INVALID_MANIFEST_FORMAT, "The manifest has no Version.")
    if manifest["Version"] != MANIFEST_VERSION:
        raise OapiError(codes.UNKNOWN_EXPORT_VERSION, f"Unknown manifest Version {manifest['Version']!r}.")
    image, snapshots = manifest.get("Image"), manifest.get("Snapshots")
    if not isinstance(image, dict) or not isinstance(snapshots, list) or not snapshots:
        raise OapiError(codes.INVALID_MANIFEST_FORMAT, "The manifest must describe an Image and its Snapshots.")
    for snapshot in snapshots:
        url = snapshot.get("Url") if isinstance(snapshot, dict) else None
        if not isinstance(url, str):
            raise OapiError(codes.INVALID_MANIFEST_FORMAT, "Every snapshot of the manifest needs a Url.")
        try:
            fetch(world, oos, caller, url, "snapshot")
        except S3Error as error:
            raise _url_error(error, "snapshot") from None
        except OapiError as error:
            raise OapiError(codes.INVALID_MANIFEST, f"A snapshot URL is not usable: {error.details}") from None
    return manifest
