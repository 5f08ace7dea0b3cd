"""OOS, the S3-compatible object store: buckets, objects, listings, multi-delete and object ACLs.

Path-style addressing only (`/<bucket>/<key>`), as OUTSCALE documents it. Access is owner-only
unless an object ACL grants READ to another account (by account id or email), to every
authenticated user, or to everyone. `Oos.handle` is a pure function of the world and one request,
so the import pipeline can read a manifest "through its URL" without going over the network.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl, quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from . import oos_acl
from .sigv4 import S3Error, S3Request, authenticate
from .world import Account, Bucket, StoredObject, World

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_OBJECT_BYTES = 64 * 1024 * 1024  # the sandbox stores small stand-ins, not real disks


@dataclass
class S3Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


def error_response(error: S3Error, request_id: str, resource: str = "") -> S3Response:
    extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in error.extra.items())
    body = xml(
        f"<Error><Code>{error.code}</Code><Message>{escape(error.message)}</Message>{extra}"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    )
    return S3Response(error.status, body, {"Content-Type": "application/xml"})


def http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def iso_z(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_xml(body: bytes) -> ElementTree.Element:
    try:
        # The sandbox listens on loopback only and bodies come from test clients; entity expansion
        # attacks are not a concern here, and defusedxml is not a dependency.
        return ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed.") from exc


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def decode_aws_chunked(body: bytes) -> bytes:
    """Undo `Content-Encoding: aws-chunked` (unsigned chunks with trailing checksums)."""
    out, pos = bytearray(), 0
    while True:
        line_end = body.index(b"\r\n", pos)
        size = int(body[pos:line_end].split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            return bytes(out)
        out += body[pos : pos + size]
        pos += size + 2


def operation(method: str, raw_path: str, raw_query: str) -> str:
    """The S3 operation name of a request, for fault targeting and counters."""
    bucket, key = split_path(raw_path)
    params = dict(parse_qsl(raw_query, keep_blank_values=True))
    if not bucket:
        return "ListBuckets"
    if key is None:
        if "acl" in params:
            return "GetBucketAcl" if method == "GET" else "PutBucketAcl"
        if method == "POST" and "delete" in params:
            return "DeleteObjects"
        names = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
        if method == "GET":
            return "ListObjectsV2" if params.get("list-type") == "2" else "ListObjects"
        return names.get(method, method)
    if "acl" in params:
        return "GetObjectAcl" if method == "GET" else "PutObjectAcl"
    return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


def split_path(raw_path: str) -> tuple[str, str | None]:
    path = raw_path.lstrip("/")
    if not path:
        return "", None
    bucket, sep, key = path.partition("/")
    if not sep or not key:
        return unquote(bucket), None
    return unquote(bucket), unquote(key)


class Oos:
    def __init__(self, world: World):
        self.world = world

    def handle(self, request: S3Request, request_id: str) -> S3Response:
        """Authenticate, run the operation, and turn any S3Error into its XML answer."""
        try:
            return self.execute(request)
        except S3Error as error:
            response = error_response(error, request_id, request.raw_path)
            if request.method == "HEAD":
                response.body = b""
            return response

    def execute(self, request: S3Request, principal: Account | None = None, authenticated: bool = False) -> S3Response:
        """Run one request; raises S3Error. `authenticated=True` means the caller vouches for
        `principal` (the import pipeline reading an object as the importing account)."""
        bucket_name, key = split_path(request.raw_path)
        if not authenticated:
            principal = authenticate(self.world, request)
        body = request.body
        if "aws-chunked" in request.headers.get("content-encoding", "") or request.headers.get(
            "x-amz-content-sha256", ""
        ).startswith("STREAMING-"):
            body = decode_aws_chunked(body)
        op = operation(request.method, request.raw_path, request.raw_query)
        params = dict(parse_qsl(request.raw_query, keep_blank_values=True))
        with self.world.lock:
            self.world.tick()
            handler = getattr(self, "_" + op, None)
            if handler is None:
                raise S3Error(501, "NotImplemented", f"{op} is not implemented by the sandbox.")
            if principal is not None and not authenticated and principal.account_id in self.world.oos_refused:
                raise S3Error(403, "AccessDenied", "Access Denied")
            if principal is not None:
                self.world.count(principal.account_id, "oos:" + op)
            return handler(request, principal, bucket_name, key, params, body)

    # --- helpers -------------------------------------------------------------------------------

    def _need_principal(self, principal: Account | None) -> Account:
        if principal is None:
            raise S3Error(403, "AccessDenied", "Access Denied")
        return principal

    def _bucket(self, region: str, name: str) -> Bucket:
        bucket = self.world.bucket(region, name)
        if bucket is None:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=name)
        return bucket

    def _owned_bucket(self, request: S3Request, principal: Account | None, name: str) -> Bucket:
        bucket = self._bucket(request.region, name)
        if principal is None or principal.account_id != bucket.owner_id:
            raise S3Error(403, "AccessDenied", "Access Denied")
        return bucket

    def _readable_object(self, request, principal, bucket_name, key, acl=False) -> tuple[Bucket, StoredObject]:
        bucket = self._bucket(request.region, bucket_name)
        obj = bucket.objects.get(key)
        is_owner = principal is not None and principal.account_id == bucket.owner_id
        if obj is None:
            # Like S3, only someone allowed to list the bucket learns that a key does not exist.
            if is_owner:
                raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
            raise S3Error(403, "AccessDenied", "Access Denied")
        if not is_owner and not oos_acl.allows(obj.grants, principal, "READ_ACP" if acl else "READ"):
            raise S3Error(403, "AccessDenied", "Access Denied")
        return bucket, obj

    # --- service and buckets -------------------------------------------------------------------

    def _ListBuckets(self, request, principal, *_):
        principal = self._need_principal(principal)
        buckets = sorted(
            (
                b
                for b in self.world.buckets.values()
                if b.region == request.region and b.owner_id == principal.account_id
            ),
            key=lambda b: b.name,
        )
        items = "".join(
            f"<Bucket><Name>{escape(b.name)}</Name><CreationDate>{iso_z(b.created)}</CreationDate></Bucket>"
            for b in buckets
        )
        owner = f"<Owner>{oos_acl.owner_xml(principal)}</Owner>"
        body = f'<ListAllMyBucketsResult xmlns="{XMLNS}">{owner}<Buckets>{items}</Buckets></ListAllMyBucketsResult>'
        return S3Response(200, xml(body), {"Content-Type": "application/xml"})

    def _CreateBucket(self, request, principal, name, _key, _params, body):
        principal = self._need_principal(principal)
        if not BUCKET_NAME.match(name) or ".." in name:
            raise S3Error(400, "InvalidBucketName", "The specified bucket is not valid.", BucketName=name)
        if body.strip():
            constraint = next((el.text for el in parse_xml(body).iter() if local(el.tag) == "LocationConstraint"), None)
            if constraint and constraint != request.region:
                raise S3Error(400, "InvalidLocationConstraint", "The specified location-constraint is not valid.")
        existing = self.world.bucket(request.region, name)
        if existing is not None:
            if existing.owner_id == principal.account_id:
                raise S3Error(
                    409, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded."
                )
            raise S3Error(409, "BucketAlreadyExists", "The requested bucket name is not available.", BucketName=name)
        self.world.buckets[(request.region, name)] = Bucket(
            name, request.region, principal.account_id, datetime.now(UTC)
        )
        return S3Response(200, b"", {"Location": f"/{name}"})

    def _HeadBucket(self, request, principal, name, *_):
        self._owned_bucket(request, principal, name)
        return S3Response(200, b"", {"x-amz-bucket-region": request.region})

    def _DeleteBucket(self, request, principal, name, *_):
        bucket = self._owned_bucket(request, principal, name)
        if bucket.objects:
            raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty", BucketName=name)
        del self.world.buckets[(request.region, name)]
        return S3Response(204)

    def _GetBucketAcl(self, request, principal, name, *_):
        bucket = self._owned_bucket(request, principal, name)
        return S3Response(200, oos_acl.policy_xml(self.world, bucket.owner_id, []), {"Content-Type": "application/xml"})

    def _ListObjectsV2(self, request, principal, name, _key, params, _body):
        return self._list(request, principal, name, params, v2=True)

    def _ListObjects(self, request, principal, name, _key, params, _body):
        return self._list(request, principal, name, params, v2=False)

    def _list(self, request, principal, name, params, v2: bool) -> S3Response:
        bucket = self._owned_bucket(request, principal, name)
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        try:
            max_keys = max(0, min(1000, int(params.get("max-keys", "1000"))))
        except ValueError as exc:
            raise S3Error(400, "InvalidArgument", "max-keys must be an integer") from exc
        token = params.get("continuation-token")
        if v2 and token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as exc:
                raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect") from exc
        else:
            after = params.get("start-after" if v2 else "marker", "")
        encode = params.get("encoding-type") == "url"

        def enc(value: str) -> str:
            return escape(quote(value, safe="/") if encode else value)

        contents, prefixes, last, truncated = [], [], "", False
        for key in sorted(k for k in bucket.objects if k.startswith(prefix) and k > after):
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    if prefixes and prefixes[-1] == common:
                        continue
                    if len(contents) + len(prefixes) >= max_keys:
                        truncated = True
                        break
                    prefixes.append(common)
                    last = key
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            contents.append(key)
            last = key
        parts = [f"<Name>{escape(name)}</Name><Prefix>{enc(prefix)}</Prefix><MaxKeys>{max_keys}</MaxKeys>"]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if encode:
            parts.append("<EncodingType>url</EncodingType>")
        if v2:
            parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
            if token:
                parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
            if truncated:
                next_token = base64.urlsafe_b64encode(last.encode()).decode()
                parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        elif truncated:
            parts.append(f"<Marker>{enc(after)}</Marker><NextMarker>{enc(last)}</NextMarker>")
        for key in contents:
            obj = bucket.objects[key]
            parts.append(
                f"<Contents><Key>{enc(key)}</Key><LastModified>{iso_z(obj.last_modified)}</LastModified>"
                f"<ETag>&quot;{obj.etag}&quot;</ETag><Size>{len(obj.data)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts.extend(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes)
        body = f'<ListBucketResult xmlns="{XMLNS}">{"".join(parts)}</ListBucketResult>'
        return S3Response(200, xml(body), {"Content-Type": "application/xml"})

    def _DeleteObjects(self, request, principal, name, _key, _params, body):
        bucket = self._owned_bucket(request, principal, name)
        root = parse_xml(body)
        quiet = any(local(el.tag) == "Quiet" and (el.text or "").strip() == "true" for el in root)
        keys = [
            child.text or "" for obj in root if local(obj.tag) == "Object" for child in obj if local(child.tag) == "Key"
        ]
        if len(keys) > 1000:
            raise S3Error(400, "MalformedXML", "At most 1000 keys can be deleted at once.")
        for key in keys:
            bucket.objects.pop(key, None)
        deleted = "" if quiet else "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
        return S3Response(
            200, xml(f'<DeleteResult xmlns="{XMLNS}">{deleted}</DeleteResult>'), {"Content-Type": "application/xml"}
        )

    # --- objects -------------------------------------------------------------------------------

    def _PutObject(self, request, principal, name, key, _params, body):
        bucket = self._owned_bucket(request, principal, name)
        if len(body) > MAX_OBJECT_BYTES:
            raise S3Error(400, "EntityTooLarge", "The sandbox stores objects of at most 64 MiB.")
        grants = oos_acl.grants_from_headers(self.world, request.headers)
        obj = StoredObject(
            data=body,
            etag=hashlib.md5(body, usedforsecurity=False).hexdigest(),
            last_modified=datetime.now(UTC),
            content_type=request.headers.get("content-type", "binary/octet-stream"),
            metadata={k[11:]: v for k, v in request.headers.items() if k.startswith("x-amz-meta-")},
            grants=grants or [],
        )
        bucket.objects[key] = obj
        return S3Response(200, b"", {"ETag": f'"{obj.etag}"'})

    def put_object(self, bucket: Bucket, key: str, data: bytes, content_type: str) -> None:
        """Write an object on the service's own behalf (exports)."""
        bucket.objects[key] = StoredObject(
            data, hashlib.md5(data, usedforsecurity=False).hexdigest(), datetime.now(UTC), content_type
        )

    def _GetObject(self, request, principal, name, key, *_):
        _, obj = self._readable_object(request, principal, name, key)
        headers = self._object_headers(obj)
        data = obj.data
        status = 200
        byte_range = request.headers.get("range", "")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", byte_range.strip())
        if match and (match.group(1) or match.group(2)):
            size = len(data)
            if match.group(1):
                start = int(match.group(1))
                end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
            else:
                start, end = max(0, size - int(match.group(2))), size - 1
            if start >= size or start > end:
                raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
            data, status = data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return S3Response(status, data, headers)

    def _HeadObject(self, request, principal, name, key, *_):
        _, obj = self._readable_object(request, principal, name, key)
        headers = self._object_headers(obj)
        headers["Content-Length"] = str(len(obj.data))
        return S3Response(200, b"", headers)

    def _object_headers(self, obj: StoredObject) -> dict[str, str]:
        headers = {
            "Content-Type": obj.content_type,
            "ETag": f'"{obj.etag}"',
            "Last-Modified": http_date(obj.last_modified),
            "Accept-Ranges": "bytes",
        }
        headers.update({f"x-amz-meta-{k}": v for k, v in obj.metadata.items()})
        return headers

    def _DeleteObject(self, request, principal, name, key, *_):
        bucket = self._owned_bucket(request, principal, name)
        bucket.objects.pop(key, None)
        return S3Response(204)

    def _GetObjectAcl(self, request, principal, name, key, *_):
        bucket, obj = self._readable_object(request, principal, name, key, acl=True)
        return S3Response(
            200, oos_acl.policy_xml(self.world, bucket.owner_id, obj.grants), {"Content-Type": "application/xml"}
        )

    def _PutObjectAcl(self, request, principal, name, key, _params, body):
        bucket = self._owned_bucket(request, principal, name)
        obj = bucket.objects.get(key)
        if obj is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        grants = oos_acl.grants_from_headers(self.world, request.headers)
        if grants is None:
            if not body.strip():
                raise S3Error(400, "MissingSecurityHeader", "Your request was missing a required header or body.")
            owner = self.world.accounts[bucket.owner_id]
            grants = oos_acl.grants_from_xml(self.world, parse_xml(body), owner.canonical_id)
        obj.grants = grants
        return S3Response(200)
