"""OAPI operations on accounts, images and export tasks, returning plain data.

Reads that can return many items take every id at once (one call per sweep,
DESIGN §4) and follow NextPageToken. ReadImages is always filtered by account
(AccountIds or PermissionsToLaunchAccountIds) or the public catalogue floods
the answer; public images are listed only on request, one bounded page.
"""

import re
from collections.abc import Iterable, Mapping

from django.views.decorators.debug import sensitive_variables

from outscale import marks, oapi
from outscale.credentials import Credentials
from outscale.errors import CloudError, Conflict, scrub
from outscale.results import (
    AccountIdentity,
    CallResult,
    ExportTask,
    ImageFacts,
    ImageState,
    ImageSummary,
    Relation,
    ResultDict,
    ResultList,
)
from outscale.storage import manifest_key_from_url

PAGE_SIZE = 1000  # the API's maximum ResultsPerPage
MAX_PAGES = 50  # a guard against a paging loop, far above any real account
DISK_FORMATS = ("qcow2", "raw")
IMAGE_NAME = re.compile(r"^[A-Za-z0-9 _()/.\-]{3,128}$")
IMAGE_NAME_RULE = "3 to 128 letters, digits, spaces or _ ( ) / . -"
# The longest Description an OMI keeps (the EC2-compatible limit OUTSCALE's API shares), and what
# of it is left for the text once the portal's mark is appended.
DESCRIPTION_MAX = 255
DESCRIPTION_ROOM = DESCRIPTION_MAX - marks.SPACE - marks.SOURCE_SPACE


def validate_image_name(name: str) -> str:
    if not IMAGE_NAME.fullmatch(name or ""):
        raise ValueError(f"OUTSCALE image names are {IMAGE_NAME_RULE}; got {name!r}.")
    return name


def _read_pages(creds: Credentials, action: str, items_key: str, **params) -> tuple[list[dict], tuple[str, ...]]:
    items: list[dict] = []
    request_ids: list[str] = []
    token = None
    for _ in range(MAX_PAGES):
        paging = {"NextPageToken": token} if token else {}
        page = oapi.call(creds, action, ResultsPerPage=PAGE_SIZE, **params, **paging)
        items.extend(page.body.get(items_key) or [])
        request_ids.extend(page.request_ids)
        token = page.body.get("NextPageToken")
        if not token:
            break
    return items, tuple(request_ids)


def _image_facts(raw: dict) -> ImageFacts:
    mappings = [m for m in raw.get("BlockDeviceMappings") or [] if isinstance(m, dict)]
    disks = [m.get("Bsu") or {} for m in mappings]
    return ImageFacts(
        size_gib=sum(int(disk.get("VolumeSize") or 0) for disk in disks),
        snapshots=sum(1 for disk in disks if disk.get("SnapshotId")),
        product_codes=tuple(str(code) for code in raw.get("ProductCodes") or ()),
        architecture=raw.get("Architecture", "") or "",
        boot_modes=tuple(str(mode) for mode in raw.get("BootModes") or ()),
        root_device_type=raw.get("RootDeviceType", "") or "",
        root_device_name=raw.get("RootDeviceName", "") or "",
        tags=tuple((str(t.get("Key", "")), str(t.get("Value", "") or "")) for t in raw.get("Tags") or ()
                   if isinstance(t, dict) and t.get("Key")),
    )


def _image_state(raw: dict, request_ids: tuple[str, ...] = ()) -> ImageState:
    comment = raw.get("StateComment") or {}
    return ImageState(
        image_id=raw.get("ImageId", ""),
        name=raw.get("ImageName", ""),
        state=raw.get("State", ""),
        account_id=raw.get("AccountId", ""),
        state_code=comment.get("StateCode", "") or "",
        state_message=scrub(comment.get("StateMessage")),
        request_ids=request_ids,
        description=scrub(raw.get("Description")),
        facts=_image_facts(raw),
    )


def _export_task(raw: dict, request_ids: tuple[str, ...] = ()) -> ExportTask:
    export = raw.get("OsuExport") or {}
    return ExportTask(
        task_id=raw.get("TaskId", ""),
        image_id=raw.get("ImageId", ""),
        state=raw.get("State", ""),
        progress=int(raw.get("Progress") or 0),
        comment=scrub(raw.get("Comment")),
        bucket=export.get("OsuBucket", ""),
        prefix=export.get("OsuPrefix", ""),
        disk_format=export.get("DiskImageFormat", ""),
        manifest_key=manifest_key_from_url(url=export.get("OsuManifestUrl", ""), bucket=export.get("OsuBucket", ""))
        or "",
        request_ids=request_ids,
    )


def identify_account(*, creds: Credentials) -> AccountIdentity:
    """Validate keys and learn the account id (ReadAccounts is authenticated and cheap)."""
    response = oapi.call(creds, "ReadAccounts")
    accounts = response.body.get("Accounts") or [{}]
    if not accounts[0].get("AccountId"):
        raise CloudError("OUTSCALE accepted the keys but named no account.", request_ids=response.request_ids,
                         action="ReadAccounts")
    return AccountIdentity(account_id=accounts[0]["AccountId"], email=accounts[0].get("Email"),
                           request_ids=response.request_ids)


def list_shareable_images(
    *, creds: Credentials, account_id: str, include_public: bool = False, public_limit: int = 50,
    image_ids: Iterable[str] | None = None,
) -> ResultList:
    """Available images the account can export (owned) or copy first (shared, public), owned first.
    ``image_ids`` narrows every call to those images (a request checks its one image: the answer
    stays a few images long however many the account has)."""
    available: dict = {"States": ["available"]}
    if image_ids is not None:
        available["ImageIds"] = sorted(set(image_ids))
    owned, ids_owned = _read_pages(creds, "ReadImages", "Images", Filters={"AccountIds": [account_id], **available})
    shared, ids_shared = _read_pages(creds, "ReadImages", "Images",
                                     Filters={"PermissionsToLaunchAccountIds": [account_id], **available})
    groups = [(Relation.OWNED, owned), (Relation.SHARED, shared)]
    request_ids = ids_owned + ids_shared
    if include_public:
        # One bounded page: the public catalogue is large and mostly irrelevant.
        page = oapi.call(creds, "ReadImages", ResultsPerPage=max(1, min(public_limit, PAGE_SIZE)),
                         Filters={"PermissionsToLaunchGlobalPermission": True, **available})
        groups.append((Relation.PUBLIC, page.body.get("Images") or []))
        request_ids += page.request_ids
    seen: set[str] = set()
    images = ResultList(request_ids=request_ids)
    for relation, raws in groups:
        for raw in raws:
            image_id = raw.get("ImageId", "")
            if image_id in seen or (relation != Relation.OWNED and raw.get("AccountId") == account_id):
                continue
            seen.add(image_id)
            images.append(ImageSummary(
                image_id=image_id, name=raw.get("ImageName", ""), account_id=raw.get("AccountId", ""),
                relation=relation, state=raw.get("State", ""), description=scrub(raw.get("Description")),
                account_alias=raw.get("AccountAlias", "") or "", architecture=raw.get("Architecture", "") or "",
                creation_date=raw.get("CreationDate", "") or "",
                product_codes=tuple(raw.get("ProductCodes") or ()), facts=_image_facts(raw),
                launch_account_ids=tuple((raw.get("PermissionsToLaunch") or {}).get("AccountIds") or ()),
            ))
    return images


def _description(description: str, subject: str, source: str = "") -> str | None:
    """The Description sent with a create: cut so that the portal's mark (after the ``source``
    image's id), appended last, always fits within what OUTSCALE keeps (a mark cut off would leave
    the portal unable to adopt its own image)."""
    if not subject:
        return description[:DESCRIPTION_MAX] or None
    room = DESCRIPTION_MAX - len(marks.suffix(subject, source=source))
    return marks.marked(description[:room], subject=subject, source=source)


def copy_image(*, creds: Credentials, source_image_id: str, name: str, description: str = "",
               subject: str = "", source: str = "") -> ImageState:
    """Copy a shared or public OMI into the account, same Region. Look the name up before retrying
    (`find_own_image`). With a ``subject``, the description carries the portal's mark for it,
    after the id of the ``source`` image the copy stands for (`marks.source_of` reads it)."""
    response = oapi.call(creds, "CreateImage", SourceImageId=source_image_id, SourceRegionName=creds.region,
                         ImageName=validate_image_name(name),
                         Description=_description(description, subject, source))
    return _image_state(response.body.get("Image") or {}, response.request_ids)


@sensitive_variables("file_location")  # SEC-10: a bearer URL, never in an error report
def import_image(*, creds: Credentials, file_location: str, name: str, description: str = "",
                 subject: str = "", source: str = "") -> ImageState:
    """Register an OMI from a pre-signed manifest URL. Look the name up before retrying
    (`find_own_image`). With a ``subject``, the description carries the portal's mark for it,
    after the id of the ``source`` image the copy stands for (`marks.source_of` reads it)."""
    response = oapi.call(creds, "CreateImage", FileLocation=file_location, ImageName=validate_image_name(name),
                         Description=_description(description, subject, source))
    return _image_state(response.body.get("Image") or {}, response.request_ids)


def read_images(*, creds: Credentials, account_id: str, image_ids: Iterable[str]) -> ResultDict:
    """States of the account's images, in one call per page; missing ids are simply absent."""
    ids = sorted(set(image_ids))
    if not ids:
        return ResultDict()  # an empty ImageIds filter would match every image
    raws, request_ids = _read_pages(creds, "ReadImages", "Images",
                                    Filters={"AccountIds": [account_id], "ImageIds": ids})
    return ResultDict(((raw["ImageId"], _image_state(raw, request_ids)) for raw in raws if raw.get("ImageId")),
                      request_ids=request_ids)


def find_image_by_name(*, creds: Credentials, account_id: str, name: str) -> ImageState | None:
    """The account's image with this exact name (names are unique per account), or None."""
    raws, request_ids = _read_pages(creds, "ReadImages", "Images",
                                    Filters={"AccountIds": [account_id], "ImageNames": [validate_image_name(name)]})
    matches = [raw for raw in raws if raw.get("ImageName") == name]
    return _image_state(matches[0], request_ids) if matches else None


class NameTaken(Conflict):
    """The name is held by an image the portal did not create for this subject: never adopted."""

    default_message = "The name is taken by an image OMI Portal did not create."


def find_own_image(*, creds: Credentials, account_id: str, name: str, subject: str) -> ImageState | None:
    """The image the portal created under this name for ``subject`` (the lookup before a create
    is retried, or after the cloud said the name is used), None if no image has the name.
    Raises NameTaken when the image that has it lacks the portal's mark for ``subject``: made
    by hand in the account, or by the portal for something else. Nothing is changed either way."""
    image = find_image_by_name(creds=creds, account_id=account_id, name=name)
    if image is None or marks.is_marked(image.description, subject=subject):
        return image
    raise NameTaken(request_ids=image.request_ids, action="ReadImages")


def start_export(
    *, creds: Credentials, image_id: str, bucket: str, prefix: str, disk_format: str = "qcow2"
) -> ExportTask:
    """Export an owned OMI to the account's bucket; OUTSCALE writes under prefix + "<ImageId>/"."""
    if disk_format not in DISK_FORMATS:
        raise ValueError(f"disk_format must be one of {DISK_FORMATS}.")
    if not bucket:
        raise ValueError("A bucket is required.")
    response = oapi.call(creds, "CreateImageExportTask", ImageId=image_id,
                         OsuExport={"DiskImageFormat": disk_format, "OsuBucket": bucket, "OsuPrefix": prefix})
    return _export_task(response.body.get("ImageExportTask") or {}, response.request_ids)


def read_export_tasks(*, creds: Credentials, task_ids: Iterable[str]) -> ResultDict:
    ids = sorted(set(task_ids))
    if not ids:
        return ResultDict()
    raws, request_ids = _read_pages(creds, "ReadImageExportTasks", "ImageExportTasks", Filters={"TaskIds": ids})
    return ResultDict(((raw["TaskId"], _export_task(raw, request_ids)) for raw in raws if raw.get("TaskId")),
                      request_ids=request_ids)


def cancel_export(*, creds: Credentials, task_id: str) -> CallResult:
    """Cancel an export task; OUTSCALE only allows it while the task is queued."""
    return CallResult(oapi.call(creds, "DeleteExportTask", ExportTaskId=task_id).request_ids)


def delete_image(*, creds: Credentials, image_id: str) -> CallResult:
    """Delete (deregister) an OMI the account owns. NotFound when it is already gone."""
    if not image_id:
        raise ValueError("delete_image needs an image id.")
    return CallResult(oapi.call(creds, "DeleteImage", ImageId=image_id).request_ids)


def tag_resources(*, creds: Credentials, resource_ids: Iterable[str], tags: Mapping[str, str]) -> CallResult:
    ids = list(resource_ids)
    if not ids or not tags:
        raise ValueError("tag_resources needs at least one resource and one tag.")
    response = oapi.call(creds, "CreateTags", ResourceIds=ids,
                         Tags=[{"Key": key, "Value": value} for key, value in tags.items()])
    return CallResult(response.request_ids)


def untag_resources(*, creds: Credentials, resource_ids: Iterable[str], tags: Mapping[str, str]) -> CallResult:
    """Remove tags (DeleteTags). A tag is removed only where its value matches; an empty value
    removes the key whatever its value. Removing a tag a resource does not carry is no error."""
    ids = list(resource_ids)
    if not ids or not tags:
        raise ValueError("untag_resources needs at least one resource and one tag.")
    response = oapi.call(creds, "DeleteTags", ResourceIds=ids,
                         Tags=[{"Key": key, "Value": value} for key, value in tags.items()])
    return CallResult(response.request_ids)


def read_tagged_images(*, creds: Credentials, account_id: str, tag_keys: Iterable[str] = (),
                       tags: Mapping[str, str] | None = None) -> ResultDict:
    """The account's own images (any state) carrying one of ``tag_keys``, or one of ``tags``
    (key and value), in one call per page; each with its tags (``facts.tags``)."""
    filters: dict = {"AccountIds": [account_id]}
    if tag_keys:
        filters["TagKeys"] = sorted(set(tag_keys))
    if tags:
        filters["Tags"] = sorted(f"{key}={value}" for key, value in tags.items())
    if len(filters) == 1:
        raise ValueError("read_tagged_images needs tag keys or tags: the filter would match every image.")
    raws, request_ids = _read_pages(creds, "ReadImages", "Images", Filters=filters)
    return ResultDict(((raw["ImageId"], _image_state(raw, request_ids)) for raw in raws if raw.get("ImageId")),
                      request_ids=request_ids)


def list_own_images(*, creds: Credentials, account_id: str, tag_keys: Iterable[str] = ()) -> ResultList:
    """The account's own available images, in one call per page, each with its creation date and
    tags: what a sweep matches families against (name patterns are matched by the caller, since
    ``ImageNames`` takes exact names only). ``tag_keys`` narrows the answer to images carrying one
    of them, when every family of the account matches by tag."""
    filters: dict = {"AccountIds": [account_id], "States": ["available"]}
    keys = sorted(set(tag_keys))
    if keys:
        filters["TagKeys"] = keys
    raws, request_ids = _read_pages(creds, "ReadImages", "Images", Filters=filters)
    return ResultList((ImageSummary(
        image_id=raw.get("ImageId", ""), name=raw.get("ImageName", ""), account_id=raw.get("AccountId", ""),
        relation=Relation.OWNED, state=raw.get("State", ""), description=scrub(raw.get("Description")),
        architecture=raw.get("Architecture", "") or "", creation_date=raw.get("CreationDate", "") or "",
        product_codes=tuple(raw.get("ProductCodes") or ()), facts=_image_facts(raw),
    ) for raw in raws if raw.get("ImageId") and raw.get("AccountId") == account_id), request_ids=request_ids)


def find_export_task(*, creds: Credentials, bucket: str, prefix: str) -> ExportTask | None:
    """The export task writing under ``bucket``/``prefix`` (our deterministic prefix), if any.

    ReadImageExportTasks cannot filter by bucket or prefix, so this reads the
    account's tasks and matches them here. Callers use it before creating an
    export again after an ambiguous failure, so a lost answer never becomes a
    second export.
    """
    raws, request_ids = _read_pages(creds, "ReadImageExportTasks", "ImageExportTasks")
    for raw in raws:
        task = _export_task(raw, request_ids)
        if task.bucket == bucket and task.prefix.startswith(prefix) and task.state != "cancelled":
            return task
    return None
