"""Helpers for the OAPI actions: parameter checks, paging and rendering per the OpenAPI spec."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from . import oapi_errors as codes
from .oapi_errors import OapiError
from .world import Account, ExportTask, Image, iso

IMAGE_NAME = re.compile(r"^[A-Za-z0-9 _()/.\-]{3,128}$")
ACCOUNT_ID = re.compile(r"^\d{12}$")


def check_params(params: dict, allowed: set[str], required: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(params) - allowed - {"DryRun"})
    if unknown:
        raise OapiError(codes.INVALID_PARAMETER, f"Unknown parameter(s): {', '.join(unknown)}.")
    for name in required:
        if params.get(name) in (None, "", [], {}):
            raise OapiError(codes.MISSING_PARAMETER, f"The parameter {name} is required.")


def want_str(params: dict, name: str, default: str | None = None) -> str | None:
    value = params.get(name, default)
    if value is not None and not isinstance(value, str):
        raise OapiError(codes.INVALID_PARAMETER_TYPE, f"{name} must be a string.")
    return value


def want_dict(params: dict, name: str) -> dict:
    value = params.get(name, {})
    if not isinstance(value, dict):
        raise OapiError(codes.INVALID_PARAMETER_TYPE, f"{name} must be an object.")
    return value


def want_str_list(params: dict, name: str) -> list[str] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise OapiError(codes.INVALID_PARAMETER_TYPE, f"{name} must be a list of strings.")
    return value


def want_bool(params: dict, name: str) -> bool | None:
    value = params.get(name)
    if value is not None and not isinstance(value, bool):
        raise OapiError(codes.INVALID_PARAMETER_TYPE, f"{name} must be a boolean.")
    return value


def filters(params: dict, allowed: set[str]) -> dict:
    value = want_dict(params, "Filters")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise OapiError(codes.INVALID_FILTER, f"Filter(s) not supported by the sandbox: {', '.join(unknown)}.")
    return value


def check_image_name(name: str) -> None:
    if not IMAGE_NAME.match(name):
        raise OapiError(
            codes.INVALID_IMAGE_NAME,
            "ImageName must be 3 to 128 characters: letters, digits, spaces and _ ( ) / . -",
        )


def check_account_ids(ids: list[str]) -> None:
    for account_id in ids:
        if not ACCOUNT_ID.match(account_id):
            raise OapiError(codes.INVALID_PARAMETER_VALUE, f"{account_id!r} is not an account id (12 digits).")


def paginate(items: list, params: dict, fingerprint: object) -> tuple[list, str | None]:
    """`ResultsPerPage` (1-1000) and an opaque, base64 `NextPageToken` bound to the query, so a
    token cannot be replayed against different filters (OUTSCALE answers 4091 token-mismatch)."""
    per_page = params.get("ResultsPerPage")
    if per_page is not None and (
        isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 1000
    ):
        raise OapiError(codes.INVALID_PARAMETER_VALUE, "ResultsPerPage must be an integer between 1 and 1000.")
    query = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    start = 0
    token = params.get("NextPageToken")
    if token:
        try:
            decoded = json.loads(base64.b64decode(str(token), validate=True))
            start, token_query = int(decoded["o"]), decoded["q"]
        except (ValueError, KeyError, TypeError):
            raise OapiError(codes.TOKEN_MISMATCH, "The NextPageToken is not valid.") from None
        if token_query != query or start < 0:
            raise OapiError(codes.TOKEN_MISMATCH, "The NextPageToken was issued for another query.")
    if per_page is None:
        return items[start:], None
    end = start + per_page
    if end >= len(items):
        return items[start:end], None
    return items[start:end], base64.b64encode(json.dumps({"o": end, "q": query}).encode()).decode()


def render_account(account: Account) -> dict:
    first, _, last = account.name.partition("-")
    return {
        "AccountId": account.account_id,
        "CustomerId": account.account_id[-8:],
        "Email": account.email,
        "CompanyName": f"{account.name.upper()} SAS",
        "FirstName": first.capitalize(),
        "LastName": (last or "Sandbox").capitalize(),
        "City": "Saint-Cloud",
        "Country": "France",
        "ZipCode": "92210",
        "OutscaleLoginAllowed": False,
    }


def render_image(image: Image, viewer: str | None = None) -> dict:
    """The OMI as `viewer` (an account id) sees it: its owner sees every account it is shared
    with; another account sees only whether it is public and, if it is granted, itself (*chosen*:
    OUTSCALE does not document what a grantee sees of the others)."""
    accounts = list(image.permitted_accounts)
    if viewer is not None and viewer != image.account_id:
        accounts = [viewer] if viewer in accounts else []
    data = {
        "AccountId": image.account_id,
        "Architecture": image.architecture,
        "BlockDeviceMappings": [
            {
                "DeviceName": snap.device_name,
                "Bsu": {
                    "DeleteOnVmDeletion": True,
                    "SnapshotId": snap.snapshot_id,
                    "VolumeSize": snap.volume_size,
                    "VolumeType": snap.volume_type,
                },
            }
            for snap in image.snapshots
        ],
        "BootModes": list(image.boot_modes),
        "CreationDate": iso(image.created),
        "Description": image.description,
        "FileLocation": image.file_location,
        "ImageId": image.image_id,
        "ImageName": image.name,
        "ImageType": "machine",
        "PermissionsToLaunch": {
            "GlobalPermission": image.global_permission,
            "AccountIds": accounts,
        },
        "ProductCodes": list(image.product_codes),
        "RootDeviceName": "/dev/sda1",
        "RootDeviceType": "bsu",
        "SecureBoot": False,
        "State": image.state,
        "StateComment": dict(image.state_comment),
        "Tags": [dict(tag) for tag in image.tags],
        "TpmMandatory": False,
    }
    if image.account_alias:
        data["AccountAlias"] = image.account_alias
    return data


def render_task(task: ExportTask) -> dict:
    osu_export = {
        "DiskImageFormat": task.disk_image_format,
        "OsuBucket": task.bucket,
        "OsuPrefix": task.prefix,
    }
    if task.manifest_url:
        osu_export["OsuManifestUrl"] = task.manifest_url
    return {
        "TaskId": task.task_id,
        "ImageId": task.image_id,
        "State": task.state,
        "Progress": task.progress,
        "Comment": task.comment,
        "OsuExport": osu_export,
        "Tags": [dict(tag) for tag in task.tags],
    }
