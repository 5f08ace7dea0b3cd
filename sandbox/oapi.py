"""The OAPI actions the portal uses, with OUTSCALE's rules and error codes.

Each action takes the authenticated account, its Region and the JSON parameters, runs under the
world lock, and returns the response body without `ResponseContext` (the HTTP layer adds it).

Choices where the public documentation does not say which code OUTSCALE returns:
  * a visible but not owned OMI (shared or public) cannot be exported, updated, deleted or
    tagged: 4045 invalid-parameter (the input names an OMI the account may not act on; the cure
    is to copy it first). An OMI the account cannot see at all is 5023 no-such-image.
  * `CreateImage{SourceImageId}` with a `SourceRegionName` other than the endpoint's Region:
    4047 invalid-parameter-value (OAPI copies only within a Region).
  * `DeleteExportTask` on a task past `pending/queued`: 6003 invalid-state.
  * `CreateImageExportTask` with an `OsuApiKey` that opens no account of the Region: 4000.
  * `DryRun: true`: the spec says only "checks whether you have the required permissions" and
    lists no dry-run answer or code, so a dry run runs every check of the real call and answers
    as it would (the same error when refused), but a permitted one answers 200 with only
    `ResponseContext` and changes nothing (`World.save_state`/`restore_state`).
  * `UpdateImage` with both `Additions` and `Removals` ("specify either" in the spec): 4045.
"""

from __future__ import annotations

import hashlib
import time

from . import oapi_errors as codes
from . import oapi_quotas as quotas
from . import oapi_support as support
from .faults import Faults
from .imports import load_manifest
from .oapi_errors import OapiError
from .oos import Oos
from .world import Account, ExportTask, Image, Snapshot, World, utc_now

DISK_FORMATS = ("qcow2", "raw")
MAX_TAGS = 50


def spread_share(task_id: str) -> float:
    """A share in [0, 1) fixed by the task id alone, so a seeded run gives every export the same
    duration again; drawing from the world's RNG instead would shift every id that follows."""
    # 53 bits, as random.random() takes: 64 bits over 2**64 could round up to 1.0.
    return (int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") >> 11) / 2**53


class Oapi:
    def __init__(self, world: World, faults: Faults, oos: Oos, durations: dict[str, float]):
        self.world = world
        self.faults = faults
        self.oos = oos
        # export_seconds, export_spread_seconds, import_seconds, copy_seconds (mutable)
        self.durations = durations

    ACTIONS = (
        "ReadAccounts",
        "ReadImages",
        "CreateImage",
        "UpdateImage",
        "DeleteImage",
        "CreateImageExportTask",
        "ReadImageExportTasks",
        "DeleteExportTask",
        "CreateTags",
        "DeleteTags",
        "ReadQuotas",
    )

    def call(self, account: Account, action: str, params: dict, counted_as: str | None = None) -> dict:
        """Run one action. `counted_as` names the call in counters and `created` when another
        API reaches the same action (FCU `RegisterImage` -> `CreateImage`)."""
        if action not in self.ACTIONS:
            raise OapiError(codes.INVALID_METHOD_NAME, f"The action {action} is not implemented by the sandbox.")
        dry_run = support.want_bool(params, "DryRun")
        name = counted_as or action
        with self.world.lock:
            self.world.tick()
            if dry_run:
                # A dry run is a call (counted apart, so counts of real calls stay exact): every
                # check runs, then the world is put back as it was.
                self.world.count(account.account_id, f"{name}:DryRun")
                saved = self.world.save_state()
                try:
                    getattr(self, action)(account, params)
                finally:
                    self.world.restore_state(saved)
                return {}
            self.world.count(account.account_id, name)
            body = getattr(self, action)(account, params)
            if action in ("CreateImage", "CreateImageExportTask"):  # it raised if it did not create
                created = (params.get("ImageName") if action == "CreateImage"
                           else (params.get("OsuExport") or {}).get("OsuPrefix"))
                self.world.count_created(account.account_id, name, str(created or ""))
            return body

    # --- lookups -------------------------------------------------------------------------------

    def _visible_image(self, account: Account, image_id: str) -> Image:
        image = self.world.images.get(image_id)
        if image is None or image.region != account.region or not image.visible_to(account.account_id):
            raise OapiError(codes.NO_SUCH_IMAGE, f"The OMI {image_id} does not exist.")
        return image

    def _owned_image(self, account: Account, image_id: str, verb: str) -> Image:
        image = self._visible_image(account, image_id)
        if image.account_id != account.account_id:
            raise OapiError(
                codes.INVALID_PARAMETER,
                f"The OMI {image_id} is not owned by the account: you can only {verb} an OMI you own "
                "(copy it into the account first with CreateImage SourceImageId).",
            )
        return image

    def _owned_task(self, account: Account, task_id: str) -> ExportTask:
        task = self.world.tasks.get(task_id)
        if task is None or task.account_id != account.account_id or task.region != account.region:
            raise OapiError(codes.NO_SUCH_TASK, f"The export task {task_id} does not exist.")
        return task

    # --- accounts and images -------------------------------------------------------------------

    def ReadAccounts(self, account: Account, params: dict) -> dict:
        support.check_params(params, set())
        return {"Accounts": [support.render_account(account)]}

    def ReadImages(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"Filters", "ResultsPerPage", "NextPageToken"})
        flt = support.filters(
            params,
            {
                "ImageIds",
                "ImageNames",
                "AccountIds",
                "PermissionsToLaunchAccountIds",
                "PermissionsToLaunchGlobalPermission",
                "States",
                "FileLocations",
                "Descriptions",
                "TagKeys",
                "TagValues",
                "Tags",
            },
        )
        lists = {
            name: support.want_str_list(flt, name) for name in flt if name != "PermissionsToLaunchGlobalPermission"
        }
        global_permission = support.want_bool(flt, "PermissionsToLaunchGlobalPermission")

        def keep(image: Image) -> bool:
            if image.region != account.region or not image.visible_to(account.account_id):
                return False
            tag_pairs = {f"{t['Key']}={t['Value']}" for t in image.tags}
            checks = {
                "ImageIds": image.image_id,
                "ImageNames": image.name,
                "AccountIds": image.account_id,
                "States": image.state,
                "FileLocations": image.file_location,
                "Descriptions": image.description,
            }
            for name, value in checks.items():
                if lists.get(name) is not None and value not in lists[name]:
                    return False
            shown = support.render_image(image, account.account_id)["PermissionsToLaunch"]["AccountIds"]
            if lists.get("PermissionsToLaunchAccountIds") is not None and not set(
                lists["PermissionsToLaunchAccountIds"]
            ) & set(shown):
                return False
            if global_permission is not None and image.global_permission != global_permission:
                return False
            if lists.get("TagKeys") is not None and not {t["Key"] for t in image.tags} & set(lists["TagKeys"]):
                return False
            if lists.get("TagValues") is not None and not {t["Value"] for t in image.tags} & set(lists["TagValues"]):
                return False
            return not (lists.get("Tags") is not None and not tag_pairs & set(lists["Tags"]))

        images = [image for image in self.world.images.values() if keep(image)]
        page, token = support.paginate(images, params, ["ReadImages", account.account_id, flt])
        body = {"Images": [support.render_image(image, account.account_id) for image in page]}
        if token:
            body["NextPageToken"] = token
        return body

    def CreateImage(self, account: Account, params: dict) -> dict:
        support.check_params(
            params,
            {
                "ImageName",
                "Description",
                "SourceImageId",
                "SourceRegionName",
                "FileLocation",
                "VmId",
                "NoReboot",
                "Architecture",
                "RootDeviceName",
                "BlockDeviceMappings",
                "BootModes",
                "ProductCodes",
                "TpmMandatory",
            },
        )
        if params.get("VmId") or params.get("BlockDeviceMappings"):
            raise OapiError(codes.INVALID_PARAMETER, "The sandbox creates OMIs only by copy or from a FileLocation.")
        source_id = support.want_str(params, "SourceImageId")
        file_location = support.want_str(params, "FileLocation")
        if bool(source_id) == bool(file_location):
            raise OapiError(codes.MISSING_PARAMETER, "Give either SourceImageId (copy) or FileLocation (import).")
        name = support.want_str(params, "ImageName")
        if not name:
            raise OapiError(codes.MISSING_PARAMETER, "The parameter ImageName is required.")
        support.check_image_name(name)
        description = support.want_str(params, "Description")
        if any(i.account_id == account.account_id and i.name == name for i in self.world.images.values()):
            raise OapiError(codes.DUPLICATE_NAME, f"An OMI named {name!r} already exists in the account.")
        quotas.check_image_quota(self.world, account)

        if source_id:
            region = support.want_str(params, "SourceRegionName")
            if not region:
                raise OapiError(codes.MISSING_PARAMETER, "SourceRegionName is required to copy an OMI.")
            if region != account.region:
                raise OapiError(
                    codes.INVALID_PARAMETER_VALUE,
                    f"SourceRegionName must be the Region of the endpoint ({account.region}); copy across "
                    "Regions with an export and an import.",
                )
            source = self._visible_image(account, source_id)
            if source.state != "available":
                raise OapiError(codes.INVALID_IMAGE_STATE, f"The OMI {source_id} is {source.state}, not available.")
            sizes = [(snap.device_name, snap.volume_size, snap.volume_type) for snap in source.snapshots]
            location = f"{account.account_id}/{name}"
            description = source.description if description is None else description
            duration, architecture, boot_modes = self.durations["copy_seconds"], source.architecture, source.boot_modes
            product_codes = list(source.product_codes)
        else:
            manifest = load_manifest(self.world, self.oos, account, file_location)
            meta = manifest["Image"]
            sizes = [
                (
                    snap.get("DeviceName", "/dev/sda1"),
                    int(snap.get("VolumeSize", 10)),
                    snap.get("VolumeType", "standard"),
                )
                for snap in manifest["Snapshots"]
            ]
            location = file_location  # OUTSCALE echoes the URL on the OMI: it is a bearer secret
            description = str(meta.get("Description", "")) if description is None else description
            duration = self.durations["import_seconds"]
            architecture = str(meta.get("Architecture", "x86_64"))
            boot_modes = list(meta.get("BootModes", ["legacy"]))
            product_codes = list(meta.get("ProductCodes", ["0001"]))

        image = Image(
            image_id=self.world.new_id("ami"),
            account_id=account.account_id,
            region=account.region,
            name=name,
            description=description or "",
            created=utc_now(),
            snapshots=[Snapshot(self.world.new_id("snap"), dev, size, vtype) for dev, size, vtype in sizes],
            state="pending",
            file_location=location,
            architecture=architecture,
            boot_modes=boot_modes,
            product_codes=product_codes,
            ready_at=time.monotonic() + duration,
            fail_with=self.faults.import_failure(name),
        )
        for attribute, value in self.faults.import_drift(name).items():  # a seeded copy that differs
            setattr(image, attribute, value)
        self.world.images[image.image_id] = image
        return {"Image": support.render_image(image, account.account_id)}

    def UpdateImage(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"ImageId", "PermissionsToLaunch", "Description", "ProductCodes"}, ("ImageId",))
        image = self._owned_image(account, support.want_str(params, "ImageId"), "update")
        permissions = support.want_dict(params, "PermissionsToLaunch")
        unknown = set(permissions) - {"Additions", "Removals"}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise OapiError(codes.INVALID_PARAMETER, f"Unknown PermissionsToLaunch parameter(s): {names}.")
        if "Additions" in permissions and "Removals" in permissions:
            raise OapiError(codes.INVALID_PARAMETER, "PermissionsToLaunch takes Additions or Removals, not both.")
        for part in ("Additions", "Removals"):
            change = support.want_dict(permissions, part)
            if set(change) - {"AccountIds", "GlobalPermission"}:
                raise OapiError(codes.INVALID_PARAMETER, f"{part} takes AccountIds and GlobalPermission only.")
            ids = support.want_str_list(change, "AccountIds") or []
            support.check_account_ids(ids)
            flag = support.want_bool(change, "GlobalPermission")
            if part == "Additions":
                image.permitted_accounts.extend(i for i in dict.fromkeys(ids) if i not in image.permitted_accounts)
                if flag:
                    image.global_permission = True
            else:
                image.permitted_accounts[:] = [i for i in image.permitted_accounts if i not in ids]
                if flag:
                    image.global_permission = False
        description = support.want_str(params, "Description")
        if description is not None:
            image.description = description
        return {"Image": support.render_image(image, account.account_id)}

    def DeleteImage(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"ImageId"}, ("ImageId",))
        image = self._owned_image(account, support.want_str(params, "ImageId"), "delete")
        del self.world.images[image.image_id]
        return {}

    def ReadQuotas(self, account: Account, params: dict) -> dict:
        return quotas.read_quotas(self.world, account, params)

    # --- exports -------------------------------------------------------------------------------

    def CreateImageExportTask(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"ImageId", "OsuExport"}, ("ImageId", "OsuExport"))
        export = support.want_dict(params, "OsuExport")
        unknown = set(export) - {"DiskImageFormat", "OsuBucket", "OsuPrefix", "OsuApiKey", "OsuManifestUrl"}
        if unknown:
            raise OapiError(codes.INVALID_PARAMETER, f"Unknown OsuExport parameter(s): {', '.join(sorted(unknown))}.")
        for name in ("DiskImageFormat", "OsuBucket"):
            if not support.want_str(export, name):
                raise OapiError(codes.MISSING_PARAMETER, f"The parameter OsuExport.{name} is required.")
        disk_format = export["DiskImageFormat"]
        if disk_format not in DISK_FORMATS:
            raise OapiError(codes.INVALID_PARAMETER_VALUE, "DiskImageFormat must be qcow2 or raw.")
        image = self._owned_image(account, support.want_str(params, "ImageId"), "export")
        if image.state != "available":
            raise OapiError(codes.INVALID_IMAGE_STATE, f"The OMI {image.image_id} is {image.state}, not available.")
        signer = account
        api_key = support.want_dict(export, "OsuApiKey")
        if api_key:
            signer = self.world.account_by_key(str(api_key.get("ApiKeyId", "")), account.region)
            if signer is None or signer.secret_key != api_key.get("SecretKey"):
                raise OapiError("4000", "The OsuApiKey does not open an account of this Region.")
        bucket = self.world.bucket(account.region, export["OsuBucket"])
        if bucket is None or bucket.owner_id != signer.account_id:
            raise OapiError(codes.BUCKET_NOT_FOUND, f"The bucket {export['OsuBucket']} does not exist in the account.")
        prefix = support.want_str(export, "OsuPrefix", "") or ""
        task_id = self.world.new_id("image-export")
        task = ExportTask(
            task_id=task_id,
            account_id=account.account_id,
            region=account.region,
            image_id=image.image_id,
            disk_image_format=disk_format,
            bucket=bucket.name,
            prefix=f"{prefix}{image.image_id}/",  # OUTSCALE appends <ImageId>/ to the prefix
            started=time.monotonic(),
            duration=self.durations["export_seconds"] + self.durations["export_spread_seconds"] * spread_share(task_id),
            signer_id=signer.account_id,
            fail_with=image.export_failure or self.faults.export_failure(image.image_id),
            comment=f"Export of image {image.image_id}",
        )
        self.world.tasks[task.task_id] = task
        return {"ImageExportTask": support.render_task(task)}

    def ReadImageExportTasks(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"Filters", "ResultsPerPage", "NextPageToken"})
        flt = support.filters(params, {"TaskIds", "ImageIds"})
        task_ids = support.want_str_list(flt, "TaskIds")
        image_ids = support.want_str_list(flt, "ImageIds")
        tasks = [
            task
            for task in self.world.tasks.values()
            if task.account_id == account.account_id
            and task.region == account.region
            and (task_ids is None or task.task_id in task_ids)
            and (image_ids is None or task.image_id in image_ids)
        ]
        page, token = support.paginate(tasks, params, ["ReadImageExportTasks", account.account_id, flt])
        body = {"ImageExportTasks": [support.render_task(task) for task in page]}
        if token:
            body["NextPageToken"] = token
        return body

    def DeleteExportTask(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"ExportTaskId"}, ("ExportTaskId",))
        task = self._owned_task(account, support.want_str(params, "ExportTaskId"))
        if task.state != "pending/queued":
            raise OapiError(
                codes.INVALID_STATE, f"The export task is {task.state}; only a queued task can be cancelled."
            )
        task.state, task.comment = "cancelled", "Cancelled by the user."
        return {}

    # --- tags ----------------------------------------------------------------------------------

    def _taggable(self, account: Account, resource_id: str):
        if resource_id.startswith("ami-"):
            return self._owned_image(account, resource_id, "tag")
        if resource_id.startswith("image-export-"):
            return self._owned_task(account, resource_id)
        raise OapiError(codes.INVALID_ID_PREFIX, f"The sandbox can tag OMIs and export tasks, not {resource_id}.")

    def _tag_params(self, params: dict) -> tuple[list, list[dict]]:
        resource_ids = support.want_str_list(params, "ResourceIds") or []
        tags = params.get("Tags")
        if not isinstance(tags, list) or not all(isinstance(t, dict) and isinstance(t.get("Key"), str) for t in tags):
            raise OapiError(codes.INVALID_PARAMETER_TYPE, "Tags must be a list of {Key, Value}.")
        return resource_ids, tags

    def CreateTags(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"ResourceIds", "Tags"}, ("ResourceIds", "Tags"))
        resource_ids, tags = self._tag_params(params)
        for tag in tags:
            if not 1 <= len(tag["Key"]) <= 255 or tag["Key"].startswith("aws:"):
                raise OapiError(codes.INVALID_TAG_KEY, "Tag keys are 1 to 255 characters and cannot start with aws:.")
            if not isinstance(tag.get("Value", ""), str) or len(tag.get("Value", "")) > 255:
                raise OapiError("4070", "Tag values are strings of at most 255 characters.")
        resources = [self._taggable(account, rid) for rid in resource_ids]
        for resource in resources:
            merged = {t["Key"]: t["Value"] for t in resource.tags}
            merged.update({t["Key"]: t.get("Value", "") for t in tags})
            if len(merged) > MAX_TAGS:
                raise OapiError("10041", "A resource can have at most 50 tags.")
            resource.tags[:] = [{"Key": k, "Value": v} for k, v in merged.items()]
        return {}

    def DeleteTags(self, account: Account, params: dict) -> dict:
        support.check_params(params, {"ResourceIds", "Tags"}, ("ResourceIds", "Tags"))
        resource_ids, tags = self._tag_params(params)
        resources = [self._taggable(account, rid) for rid in resource_ids]
        for resource in resources:
            for tag in tags:
                value = tag.get("Value") or None  # an empty Value deletes the key whatever its value
                resource.tags[:] = [
                    t for t in resource.tags if not (t["Key"] == tag["Key"] and value in (None, t["Value"]))
                ]
        return {}
