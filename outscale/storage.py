"""OOS operations on exports: find the manifest, pre-sign it, grant read on it, clean up, ensure the bucket.

Export layout: OUTSCALE writes an export under `<OsuPrefix><ImageId>/` (the
prefix a task reports already ends with `<ImageId>/`): the disk snapshots
(`<SnapshotId>.<qcow2|raw>`) and a JSON manifest, `manifest.json` in the
sandbox, whose snapshot URLs are pre-signed for 7 days from the export's
completion. The task's OsuManifestUrl, when present, names the same object
(unsigned). The matcher below prefers `manifest.json` and also accepts any
object whose name contains "manifest", so a different real-cloud file name
does not break discovery.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from posixpath import basename
from urllib.parse import parse_qs, quote, unquote, urlsplit

from outscale import endpoints, errors, oos
from outscale.credentials import Credentials
from outscale.results import CallResult, PresignedLink

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 5 * 1024 * 1024
DELETE_BATCH = 1000  # DeleteObjects' maximum


@dataclass(frozen=True)
class ManifestLocation:
    key: str | None
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ManifestDeadline:
    deadline: datetime | None
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BucketOwnership:
    """Whether a bucket is the calling account's own: owned, or else whether it exists at all."""

    owned: bool
    exists: bool
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deleted:
    count: int
    request_ids: tuple[str, ...] = ()


def export_prefix(*, prefix: str, image_id: str | None) -> str:
    """Where an export's objects are: the given prefix plus `<ImageId>/` unless already there."""
    if image_id and not prefix.endswith(f"{image_id}/"):
        return f"{prefix}{image_id}/"
    return prefix


def manifest_key_from_url(*, url: str, bucket: str) -> str | None:
    """The object key an unsigned OsuManifestUrl (path-style) points at, if it is one."""
    parts = urlsplit(url or "")
    path = unquote(parts.path).lstrip("/")
    if parts.query or not path.startswith(f"{bucket}/"):
        return None
    return path[len(bucket) + 1:] or None


def _list_keys(creds: Credentials, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    request_ids: list[str] = []
    params = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page, ids = oos.call(creds, "list_objects_v2", **params)
        request_ids.extend(ids)
        keys.extend(item["Key"] for item in page.get("Contents") or [])
        if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
            return keys, request_ids
        params["ContinuationToken"] = page["NextContinuationToken"]


def find_manifest_key(*, creds: Credentials, bucket: str, prefix: str, image_id: str | None = None) -> ManifestLocation:
    """The manifest's key under the export's prefix, or key=None while it is not written yet."""
    keys, request_ids = _list_keys(creds, bucket, export_prefix(prefix=prefix, image_id=image_id))
    candidates = [key for key in keys if "manifest" in basename(key).lower()]
    candidates.sort(key=lambda key: (basename(key) != MANIFEST_NAME, len(key), key))
    return ManifestLocation(key=candidates[0] if candidates else None, request_ids=tuple(request_ids))


def _url_expiry(url: str) -> datetime | None:
    fields = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    try:
        if "X-Amz-Date" in fields and "X-Amz-Expires" in fields:  # SigV4
            signed_at = datetime.strptime(fields["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return signed_at + timedelta(seconds=int(fields["X-Amz-Expires"]))
        if "Expires" in fields:  # SigV2: an epoch
            return datetime.fromtimestamp(int(fields["Expires"]), tz=UTC)
    except ValueError:
        return None
    return None


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _read_manifest(creds: Credentials, bucket: str, key: str):
    """The manifest's JSON and the call's RequestIds; refused if too large or not JSON."""
    answer, request_ids = oos.call(creds, "get_object", Bucket=bucket, Key=key)
    with answer["Body"] as body:
        raw = body.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise errors.InvalidInput("The manifest is larger than any export manifest should be.", code="ManifestTooLarge")
    try:
        document = json.loads(raw)
    except ValueError:
        raise errors.InvalidInput("The manifest is not valid JSON.", code="InvalidManifest",
                                  request_ids=request_ids) from None
    return document, request_ids


def manifest_deadline(*, creds: Credentials, bucket: str, key: str) -> ManifestDeadline:
    """When the manifest goes stale: the earliest expiry of the snapshot URLs it embeds.

    This is the export's true 7-day deadline (completion + 604,800 s), read from the
    signatures themselves rather than from when the portal happened to notice the
    completion. The manifest's URLs are bearer secrets: parsed here, never kept or logged.
    deadline is None when the manifest holds no recognisable pre-signed URL.
    """
    document, request_ids = _read_manifest(creds, bucket, key)
    expiries = [expiry for text in _strings(document) if "://" in text and (expiry := _url_expiry(text))]
    return ManifestDeadline(deadline=min(expiries) if expiries else None, request_ids=request_ids)


def presign_manifest(*, creds: Credentials, bucket: str, key: str, not_after: datetime) -> PresignedLink:
    """A GET link to the manifest, valid until not_after (the export's 7-day deadline) or 7 days, whichever
    comes first. Raises ManifestExpired when not_after has passed. Signing is local: no request is sent."""
    url, expires_at = oos.presign_get(creds, bucket=bucket, key=key, not_after=not_after)
    return PresignedLink(url=url, expires_at=expires_at)


def delete_export_objects(*, creds: Credentials, bucket: str, prefix: str) -> Deleted:
    """Delete every object under an export's prefix (batched DeleteObjects); returns how many."""
    if not prefix or not prefix.endswith("/"):
        # A bare or partial prefix could match other exports, or the whole bucket.
        raise ValueError("Export prefixes end with '/' and are never empty.")
    keys, request_ids = _list_keys(creds, bucket, prefix)
    deleted = 0
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        answer, ids = oos.call(creds, "delete_objects", Bucket=bucket,
                               Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        request_ids.extend(ids)
        failures = answer.get("Errors") or []
        if failures:
            first = failures[0]
            raise errors.error_from_s3(code=first.get("Code"), http_status=None, request_id=ids[-1] if ids else None,
                                       message=first.get("Message", ""), action="OOS delete_objects")
        deleted += len(batch)
    return Deleted(count=deleted, request_ids=tuple(request_ids))


def ensure_bucket(*, creds: Credentials, bucket: str) -> CallResult:
    """Create the account's export bucket unless it exists and is the account's own."""
    try:
        _, request_ids = oos.call(creds, "head_bucket", Bucket=bucket)
        return CallResult(request_ids)
    except errors.NotFound:
        pass
    try:
        _, request_ids = oos.call(creds, "create_bucket", Bucket=bucket)
    except errors.Conflict as conflict:
        if conflict.code != "BucketAlreadyOwnedByYou":
            raise
        request_ids = conflict.request_ids
    return CallResult(request_ids)


def bucket_ownership(*, creds: Credentials, bucket: str) -> BucketOwnership:
    """Is ``bucket`` owned by the account these keys belong to?

    ListBuckets answers only with the caller's own buckets, so it proves ownership. HeadBucket
    does not: an ACL or a bucket policy lets another account head (and write to) a bucket it
    does not own. HeadBucket is asked only when the bucket is not listed, to tell a bucket that
    does not exist (404) from one that belongs to someone else (403 to anyone but the owner and
    its grantees, 200 to a grantee): the keys just listed the account's buckets, so a 403 here
    is about the bucket, not about the keys.
    """
    listing, request_ids = oos.call(creds, "list_buckets")
    request_ids = list(request_ids)
    if any(item.get("Name") == bucket for item in listing.get("Buckets") or []):
        return BucketOwnership(owned=True, exists=True, request_ids=tuple(request_ids))
    try:
        _, ids = oos.call(creds, "head_bucket", Bucket=bucket)
        request_ids.extend(ids)
    except errors.NotFound as exc:
        return BucketOwnership(owned=False, exists=False, request_ids=(*request_ids, *exc.request_ids))
    except errors.CredentialError as exc:
        request_ids.extend(exc.request_ids)
    return BucketOwnership(owned=False, exists=True, request_ids=tuple(request_ids))


# --- Object ACLs: read on an export's objects for another account of the Region ----------------
#
# OUTSCALE's guide ("Configuring an Object ACL"): `put-object-acl --grant-read "id=USER_ID, …"`,
# where USER_ID is the grantee's OOS user ID (the S3 canonical id; GetObjectAcl reports it as the
# grantee's ID, with the OUTSCALE account id as DisplayName). A put replaces every grant, so each
# change reads the ACL, changes one grantee's READ and writes the whole list back, the owner's
# FULL_CONTROL included. Callers serialise changes to one export's objects (see
# transfers/services/object_grants.py): two read-modify-writes at once would lose one.

ACL_HEADERS = {"READ": "GrantRead", "READ_ACP": "GrantReadACP", "WRITE_ACP": "GrantWriteACP",
               "FULL_CONTROL": "GrantFullControl"}
ACL_PROBE_NAME = "omiportal-grantee-check"


@dataclass(frozen=True)
class ObjectKeys:
    """The objects an account needs to read to import an export: its manifest and the snapshots it lists."""

    keys: tuple[str, ...]
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grantee:
    """Whose OOS user ID this is: the OUTSCALE account id OOS reports for it ('' if none)."""

    account_id: str
    request_ids: tuple[str, ...] = ()


def object_path(*, region: str, bucket: str, key: str) -> str:
    """The full, unsigned OOS path of an object in a Region (path-style, the key quoted as S3 does):
    what an account granted read by an object ACL imports from. Not a secret."""
    base = endpoints.endpoints_for(region).oos.rstrip("/")
    return f"{base}/{quote(bucket, safe='')}/{quote(key, safe='/-_.~')}"


def list_export_keys(*, creds: Credentials, bucket: str, prefix: str) -> ObjectKeys:
    """Every object under an export's prefix."""
    if not prefix or not prefix.endswith("/"):
        raise ValueError("Export prefixes end with '/' and are never empty.")
    keys, request_ids = _list_keys(creds, bucket, prefix)
    return ObjectKeys(keys=tuple(keys), request_ids=tuple(request_ids))


def manifest_object_keys(*, creds: Credentials, bucket: str, manifest_key: str, prefix: str) -> ObjectKeys:
    """The manifest and the objects of this bucket its snapshot entries name ("Key", or the path of
    their URLs), kept to the export's prefix: a grant never reaches beyond the export's own files.
    The manifest's URLs are bearer secrets: parsed here, never kept or logged."""
    document, request_ids = _read_manifest(creds, bucket, manifest_key)
    keys = [manifest_key]
    for text in _strings(document):
        if "://" in text:
            path = unquote(urlsplit(text).path)
            _, found, key = path.partition(f"/{bucket}/")
            text = key if found else ""
        if text.startswith(prefix) and text not in keys and len(text) <= 1024:
            keys.append(text)
    return ObjectKeys(keys=tuple(keys), request_ids=tuple(request_ids))


def _grantee_text(grantee: dict) -> str | None:
    if grantee.get("ID"):
        return f"id={grantee['ID']}"
    if grantee.get("URI"):
        return f"uri={grantee['URI']}"
    if grantee.get("EmailAddress"):
        return f"emailAddress={grantee['EmailAddress']}"
    return None


def _change_read(creds: Credentials, bucket: str, key: str, user_id: str, *, grant: bool) -> list[str]:
    """Give ``user_id`` READ on one object (or take it away), keeping every other grant."""
    acl, request_ids = oos.call(creds, "get_object_acl", Bucket=bucket, Key=key)
    request_ids = list(request_ids)
    owner = (acl.get("Owner") or {}).get("ID", "")
    by_permission: dict[str, list[str]] = {permission: [] for permission in ACL_HEADERS}
    for item in acl.get("Grants") or []:
        text = _grantee_text(item.get("Grantee") or {})
        if text and item.get("Permission") in by_permission and text not in by_permission[item["Permission"]]:
            by_permission[item["Permission"]].append(text)
    mine = f"id={user_id}"
    if (mine in by_permission["READ"]) == grant:
        return request_ids  # already as asked: nothing to write
    if grant:
        by_permission["READ"].append(mine)
    else:
        by_permission["READ"].remove(mine)
    if owner and f"id={owner}" not in by_permission["FULL_CONTROL"]:
        by_permission["FULL_CONTROL"].insert(0, f"id={owner}")
    headers = {ACL_HEADERS[permission]: ", ".join(grantees) for permission, grantees in by_permission.items()
               if grantees}
    _, ids = oos.call(creds, "put_object_acl", Bucket=bucket, Key=key, **headers)
    return request_ids + list(ids)


def grant_object_read(*, creds: Credentials, bucket: str, keys: tuple[str, ...], user_id: str) -> CallResult:
    """READ on each object for the account whose OOS user ID this is (idempotent)."""
    request_ids: list[str] = []
    for key in keys:
        request_ids += _change_read(creds, bucket, key, user_id, grant=True)
    return CallResult(tuple(request_ids))


def remove_object_read(*, creds: Credentials, bucket: str, keys: tuple[str, ...], user_id: str) -> CallResult:
    """Take that READ away again (idempotent); an object already deleted holds no grant."""
    request_ids: list[str] = []
    for key in keys:
        try:
            request_ids += _change_read(creds, bucket, key, user_id, grant=False)
        except errors.NotFound as exc:
            request_ids += exc.request_ids
    return CallResult(tuple(request_ids))


def object_grantee(*, creds: Credentials, bucket: str, prefix: str, user_id: str) -> Grantee:
    """Which OUTSCALE account an OOS user ID stands for, before anything of value is granted to it.

    OOS names a grantee's account only in an ACL (DisplayName), so a probe object of no content is
    written under the export's prefix, granted to the user ID, read back and deleted. An ID that is
    no account's is refused by PutObjectAcl (InvalidInput)."""
    key = f"{prefix}{ACL_PROBE_NAME}"
    _, request_ids = oos.call(creds, "put_object", Bucket=bucket, Key=key, Body=b"")
    request_ids = list(request_ids)
    try:
        request_ids += _change_read(creds, bucket, key, user_id, grant=True)
        acl, ids = oos.call(creds, "get_object_acl", Bucket=bucket, Key=key)
        request_ids += ids
    finally:
        _, ids = oos.call(creds, "delete_object", Bucket=bucket, Key=key)
        request_ids += ids
    names = [(item.get("Grantee") or {}).get("DisplayName") or "" for item in acl.get("Grants") or []
             if (item.get("Grantee") or {}).get("ID") == user_id]
    return Grantee(account_id=names[0] if names else "", request_ids=tuple(request_ids))
