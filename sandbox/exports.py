"""What a finished export leaves in the bucket: snapshot objects and the manifest.

Under `<OsuPrefix><ImageId>/` the sandbox writes one small stand-in object per snapshot
(`<SnapshotId>.<format>`) and `manifest.json`. The manifest embeds, for every snapshot, a URL
pre-signed with the exporting account's keys, valid 7 days (604,800 s, the SigV4 maximum) from the
moment the export completed. That is the deadline of the whole export: a fresh URL of the manifest
does not renew the snapshot URLs inside it (DESIGN §2).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from urllib.parse import quote

from .oos import Oos
from .sigv4 import MAX_EXPIRES, presign_get
from .world import ExportTask, World, iso

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = "1"


def snapshot_bytes(image_id: str, snapshot_id: str, disk_format: str) -> bytes:
    """A few deterministic bytes standing in for a disk image."""
    header = b"QFI\xfb" if disk_format == "qcow2" else b"RAW\x00"
    return header + f"sandbox snapshot {snapshot_id} of {image_id}\n".encode()


class ExportWriter:
    """Installed as `World.on_export_completed`; runs under the world lock."""

    def __init__(self, world: World, oos: Oos):
        self.world = world
        self.oos = oos

    def __call__(self, task: ExportTask, rewrite: bool = False) -> str | None:
        world = self.world
        bucket = world.bucket(task.region, task.bucket)
        signer = world.accounts.get(task.signer_id or task.account_id)
        if bucket is None or signer is None or bucket.owner_id != signer.account_id:
            return f"The bucket {task.bucket} no longer exists or no longer belongs to the account."
        image = world.images.get(task.image_id)
        if image is None:
            return f"The OMI {task.image_id} was deleted during the export."
        endpoint = world.endpoints[task.region]["oos"]
        completed = task.completed_at
        snapshots = []
        for snapshot in image.snapshots:
            key = f"{task.prefix}{snapshot.snapshot_id}.{task.disk_image_format}"
            if rewrite and key in bucket.objects:
                data = bucket.objects[key].data
            else:
                data = snapshot_bytes(image.image_id, snapshot.snapshot_id, task.disk_image_format)
                self.oos.put_object(bucket, key, data, "application/octet-stream")
            snapshots.append(
                {
                    "SnapshotId": snapshot.snapshot_id,
                    "DeviceName": snapshot.device_name,
                    "VolumeSize": snapshot.volume_size,
                    "VolumeType": snapshot.volume_type,
                    "DiskImageFormat": task.disk_image_format,
                    "Key": key,
                    "Size": len(data),
                    "Sha256": hashlib.sha256(data).hexdigest(),
                    "Url": presign_get(endpoint, bucket.name, key, signer, task.region, MAX_EXPIRES, completed),
                }
            )
        manifest = {
            "Version": MANIFEST_VERSION,
            "ExportTaskId": task.task_id,
            "Region": task.region,
            "CreationDate": iso(completed),
            "ExpirationDate": iso(completed + timedelta(seconds=MAX_EXPIRES)),
            "Image": {
                "ImageId": image.image_id,
                "ImageName": image.name,
                "Description": image.description,
                "AccountId": image.account_id,
                "Architecture": image.architecture,
                "BootModes": list(image.boot_modes),
                "ProductCodes": list(image.product_codes),
                "RootDeviceName": "/dev/sda1",
                "RootDeviceType": "bsu",
            },
            "Snapshots": snapshots,
        }
        manifest_key = task.prefix + MANIFEST_NAME
        body = json.dumps(manifest, indent=2).encode()
        self.oos.put_object(bucket, manifest_key, body, "application/json")
        task.manifest_key = manifest_key
        task.manifest_url = f"{endpoint}/{quote(bucket.name, safe='')}/{quote(manifest_key, safe='/~')}"
        return None
