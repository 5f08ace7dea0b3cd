"""The one module that talks to OUTSCALE (OAPI through osc-sdk-python, OOS through boto3).

Public interface, importable from here (loaded lazily, so `outscale.regions`
stays cheap for models and forms):

    import outscale
    outscale.identify_account(creds=...)

See README.md in this folder for the decisions behind it.
"""

import importlib

_EXPORTS = {
    "Credentials": "credentials",
    "Endpoints": "endpoints", "endpoints_for": "endpoints", "timeouts": "endpoints", "oos_hosts": "endpoints",
    "CloudError": "errors", "RetryLater": "errors", "CredentialError": "errors", "NotFound": "errors",
    "InvalidInput": "errors", "Conflict": "errors", "QuotaExceeded": "errors", "ManifestExpired": "errors",
    "identify_account": "images", "list_shareable_images": "images", "copy_image": "images",
    "import_image": "images", "read_images": "images", "find_image_by_name": "images",
    "find_own_image": "images", "NameTaken": "images", "source_of": "marks",
    "start_export": "images", "read_export_tasks": "images", "cancel_export": "images", "delete_image": "images",
    "find_export_task": "images", "PAGE_SIZE": "images",
    "tag_resources": "images", "untag_resources": "images", "read_tagged_images": "images",
    "list_own_images": "images", "validate_image_name": "images",
    "grant_launch": "permissions", "revoke_launch": "permissions", "launch_permissions": "permissions",
    "LaunchPermissions": "permissions",
    "DESCRIPTION_MAX": "images", "DESCRIPTION_ROOM": "images", "ImageFacts": "results",
    "licence_class": "product_codes",
    "find_manifest_key": "storage", "manifest_deadline": "storage", "presign_manifest": "storage",
    "delete_export_objects": "storage", "ensure_bucket": "storage", "bucket_ownership": "storage",
    "BucketOwnership": "storage",
    "read_quota": "quotas", "dry_run": "quotas", "Quota": "quotas", "IMAGE_QUOTA": "quotas",
    "object_path": "storage", "manifest_object_keys": "storage", "grant_object_read": "storage",
    "remove_object_read": "storage", "object_grantee": "storage", "list_export_keys": "storage",
    "AccountIdentity": "results", "ImageSummary": "results", "ImageState": "results", "ExportTask": "results",
    "PresignedLink": "results", "CallResult": "results", "Relation": "results",
    "record_request_ids": "retries", "START_PATIENCE": "pace",
    "warm_up": "clients", "clear_clients": "clients",
    "Config": "config", "configure": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
