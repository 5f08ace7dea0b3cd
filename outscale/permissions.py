"""Launch permissions on an OMI: who besides its owner may launch it, and so copy it.

OUTSCALE's same-Region copy of another account's OMI (`CreateImage{SourceImageId,
SourceRegionName}`) works once the owner has granted that account launch permission with
`UpdateImage` (`PermissionsToLaunch.Additions.AccountIds`); `Removals` takes it back. One call
carries any number of account ids, and each is a set operation: adding an id that is there, or
removing one that is not, changes nothing, so repeating a call after a lost answer is harmless
(oapi.is_idempotent lets the retry policy repeat it).
"""

from collections.abc import Iterable
from dataclasses import dataclass

from outscale import oapi
from outscale.credentials import Credentials
from outscale.errors import NotFound

ACCOUNT_ID_LENGTH = 12


@dataclass(frozen=True)
class LaunchPermissions:
    """Who may launch an OMI besides its owner, as the owner's keys read it."""

    image_id: str
    account_ids: tuple[str, ...]
    global_permission: bool = False
    request_ids: tuple[str, ...] = ()


def _ids(account_ids: Iterable[str]) -> list[str]:
    ids = sorted(set(account_ids))
    if not ids:
        raise ValueError("A launch permission names at least one account id.")
    for account_id in ids:
        if len(account_id) != ACCOUNT_ID_LENGTH or not account_id.isdigit():
            raise ValueError("An OUTSCALE account id is 12 digits.")
    return ids


def _permissions(image_id: str, raw: dict, request_ids: tuple[str, ...]) -> LaunchPermissions:
    permissions = raw.get("PermissionsToLaunch") or {}
    return LaunchPermissions(image_id=raw.get("ImageId", image_id),
                             account_ids=tuple(permissions.get("AccountIds") or ()),
                             global_permission=bool(permissions.get("GlobalPermission")), request_ids=request_ids)


def grant_launch(*, creds: Credentials, image_id: str, account_ids: Iterable[str]) -> LaunchPermissions:
    """Let these accounts launch (and copy) the account's own OMI ``image_id``: one UpdateImage."""
    response = oapi.call(creds, "UpdateImage", ImageId=image_id,
                         PermissionsToLaunch={"Additions": {"AccountIds": _ids(account_ids)}})
    return _permissions(image_id, response.body.get("Image") or {}, response.request_ids)


def revoke_launch(*, creds: Credentials, image_id: str, account_ids: Iterable[str]) -> LaunchPermissions:
    """Take launch permission on ``image_id`` back from these accounts: one UpdateImage. An id
    that held none is simply not there afterwards; an image that is gone raises NotFound (its
    permissions went with it)."""
    response = oapi.call(creds, "UpdateImage", ImageId=image_id,
                         PermissionsToLaunch={"Removals": {"AccountIds": _ids(account_ids)}})
    return _permissions(image_id, response.body.get("Image") or {}, response.request_ids)


def launch_permissions(*, creds: Credentials, image_id: str) -> LaunchPermissions:
    """Who may launch ``image_id`` (one ReadImages). Read with the owner's keys for the full list;
    another account may be shown less. NotFound when these keys cannot see the image."""
    response = oapi.call(creds, "ReadImages", Filters={"ImageIds": [image_id]})
    images = [raw for raw in response.body.get("Images") or [] if raw.get("ImageId") == image_id]
    if not images:
        raise NotFound("The image does not exist, or this account cannot see it.", request_ids=response.request_ids,
                       action="ReadImages")
    return _permissions(image_id, images[0], response.request_ids)
