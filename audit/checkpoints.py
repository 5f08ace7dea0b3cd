"""Signed checkpoints of the audit chain head, kept outside the database.

Someone who can write to the database can rewrite events and recompute every
later hash and the head: the chain alone cannot tell. A checkpoint is the chain
head (seq, hash) plus the time, the previous checkpoint's digest and the signing
key's fingerprint, signed with an Ed25519 key the database never sees, and
written where the database's writers cannot reach (a directory, or an OOS bucket,
ideally with object lock / write-once permissions). ``verify.verify_chain`` then
checks that the trail still holds exactly the signed hashes and reaches the
latest signed seq.

A checkpoint file (``checkpoint-00000001.json``; never overwritten)::

    {"format": "omiportal-audit-checkpoint/1",
     "checkpoint": {"number": 1, "seq": 42, "hash": "<event #42's hash>",
                    "created_at": "2025-01-01T00:00:00.000000Z",
                    "prev_digest": "<previous checkpoint's digest, or 64 zeros>",
                    "key_fingerprint": "ed25519:<sha256 hex of the raw public key>"},
     "digest": "<sha256 hex of the signed message>",
     "signature": "<base64 Ed25519 signature of the signed message>"}

The signed message is ``FORMAT + "\\n" + hashing.dumps(checkpoint)`` (UTF-8).
"""

import contextlib
import datetime
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from audit import hashing, signing
from audit.errors import AuditError
from outscale import errors, oos
from outscale.credentials import Credentials

FORMAT = "omiportal-audit-checkpoint/1"
ACTION = "audit.checkpointed"
NAME_RE = re.compile(r"^checkpoint-(\d{8,})\.json$")
MAX_CHECKPOINT_BYTES = 16 * 1024

DISABLED = "Audit checkpoints are disabled: set OMIPORTAL_AUDIT_SIGNING_KEY."
MALFORMED = "checkpoint file {name} is not a valid checkpoint ({problem})"


# --- The checkpoint itself ---------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    number: int
    seq: int
    hash: str
    created_at: datetime.datetime
    prev_digest: str
    key_fingerprint: str
    signature: str = ""
    stored_digest: str = ""  # the digest the file states (recomputed as ``digest``)

    @property
    def name(self) -> str:
        return f"checkpoint-{self.number:08d}.json"

    def payload(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "seq": self.seq,
            "hash": self.hash,
            "created_at": hashing.format_timestamp(self.created_at),
            "prev_digest": self.prev_digest,
            "key_fingerprint": self.key_fingerprint,
        }

    def message(self) -> bytes:
        return (FORMAT + "\n" + hashing.dumps(self.payload())).encode("utf-8")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.message()).hexdigest()

    def to_bytes(self) -> bytes:
        document = {"format": FORMAT, "checkpoint": self.payload(), "digest": self.digest, "signature": self.signature}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _hex64(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def parse(name: str, data: bytes) -> Checkpoint:
    """A checkpoint from its file's bytes; ``AuditError`` if it is not one (signature not checked here)."""
    def bad(problem: str) -> AuditError:
        return AuditError(MALFORMED.format(name=name, problem=problem))

    if len(data) > MAX_CHECKPOINT_BYTES:
        raise bad("too large")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad("not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise bad(f"format is not {FORMAT}")
    body = document.get("checkpoint")
    if not isinstance(body, dict) or set(body) != {"number", "seq", "hash", "created_at", "prev_digest",
                                                   "key_fingerprint"}:
        raise bad("wrong fields")
    number, seq = body["number"], body["seq"]
    if type(number) is not int or type(seq) is not int or number < 1 or seq < 1:
        raise bad("number and seq must be positive integers")
    if not (_hex64(body["hash"]) and _hex64(body["prev_digest"])):
        raise bad("hash and prev_digest must be 64 hex characters")
    if not isinstance(body["key_fingerprint"], str) or not isinstance(document.get("signature"), str):
        raise bad("key_fingerprint and signature must be strings")
    try:
        created_at = datetime.datetime.strptime(body["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        created_at = created_at.replace(tzinfo=datetime.UTC)
    except (TypeError, ValueError):
        raise bad("created_at is not a UTC timestamp") from None
    checkpoint = Checkpoint(number=number, seq=seq, hash=body["hash"], created_at=created_at,
                            prev_digest=body["prev_digest"], key_fingerprint=body["key_fingerprint"],
                            signature=document["signature"], stored_digest=str(document.get("digest", "")))
    match = NAME_RE.match(os.path.basename(name))
    if match is None or int(match.group(1)) != number:
        raise bad(f"its name does not match its number {number}")
    return checkpoint


# --- Where checkpoints are kept ----------------------------------------------------------


class CheckpointStore(Protocol):
    description: str

    def names(self) -> list[str]: ...  # checkpoint file names, in number order
    def read(self, name: str) -> bytes: ...
    def create(self, name: str, data: bytes) -> None: ...  # FileExistsError if the name is taken


def _number(name: str) -> int:
    match = NAME_RE.match(name)
    return int(match.group(1)) if match else -1


class DirectoryStore:
    """One file per checkpoint; a file is created whole (temp file + link) and never replaced."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.description = f"directory {self.path}"

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted((name for name in entries if NAME_RE.match(name)), key=_number)

    def read(self, name: str) -> bytes:
        with open(self.path / name, "rb") as handle:
            return handle.read(MAX_CHECKPOINT_BYTES + 1)

    def create(self, name: str, data: bytes) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o444)
            os.link(temporary, self.path / name)  # atomic, and refuses an existing name
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        with contextlib.suppress(OSError):  # make the new name itself durable
            directory = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


class BucketStore:
    """One object per checkpoint in an OOS bucket, through the cloud layer with explicit keys.

    An existing key is never written again (checked with a HEAD first); enable object lock
    or deny ``DeleteObject``/overwrites to the portal's keys for a write-once store.
    """

    def __init__(self, *, bucket: str, region: str, access_key: str, secret_key: str, prefix: str = ""):
        self.creds = Credentials(access_key=access_key, secret_key=secret_key, region=region)
        self.bucket, self.prefix = bucket, prefix
        self.description = f"OOS bucket {bucket} ({region}), prefix {prefix!r}"

    def names(self) -> list[str]:
        names: list[str] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page, _ids = oos.call(self.creds, "list_objects_v2", **params)
            for item in page.get("Contents") or []:
                name = item["Key"][len(self.prefix):]
                if NAME_RE.match(name):
                    names.append(name)
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return sorted(names, key=_number)
            params["ContinuationToken"] = page["NextContinuationToken"]

    def read(self, name: str) -> bytes:
        response, _ids = oos.call(self.creds, "get_object", Bucket=self.bucket, Key=self.prefix + name)
        return response["Body"].read(MAX_CHECKPOINT_BYTES + 1)

    def create(self, name: str, data: bytes) -> None:
        try:
            oos.call(self.creds, "head_object", Bucket=self.bucket, Key=self.prefix + name)
        except errors.NotFound:
            pass
        else:
            raise FileExistsError(name)
        oos.call(self.creds, "put_object", Bucket=self.bucket, Key=self.prefix + name, Body=data,
                 ContentType="application/json")


def configured_store() -> CheckpointStore:
    bucket = settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET
    if bucket:
        return BucketStore(bucket=bucket, region=settings.OMIPORTAL_AUDIT_CHECKPOINT_REGION,
                           access_key=settings.OMIPORTAL_AUDIT_CHECKPOINT_ACCESS_KEY,
                           secret_key=settings.OMIPORTAL_AUDIT_CHECKPOINT_SECRET_KEY,
                           prefix=settings.OMIPORTAL_AUDIT_CHECKPOINT_PREFIX)
    return DirectoryStore(settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR)


def enabled() -> bool:
    return bool(settings.OMIPORTAL_AUDIT_SIGNING_KEY)


def load_all(store: CheckpointStore | None = None) -> list[Checkpoint]:
    """Every checkpoint in the store, in number order. ``AuditError`` names a malformed file."""
    store = store or configured_store()
    return [parse(name, store.read(name)) for name in store.names()]


# --- Checking the chain of checkpoints ---------------------------------------------------

BAD_SIGNATURE = "checkpoint_bad_signature"
UNKNOWN_KEY = "checkpoint_unknown_key"
BROKEN_CHECKPOINT_LINK = "checkpoint_broken_link"
MALFORMED_CHECKPOINT = "checkpoint_malformed"


@dataclass(frozen=True)
class CheckpointProblem:
    number: int | None
    reason: str
    message: str


def check_signature(checkpoint: Checkpoint, keys: dict | None = None) -> CheckpointProblem | None:
    keys = signing.verify_keys() if keys is None else keys
    key = keys.get(checkpoint.key_fingerprint)
    if key is None:
        return CheckpointProblem(checkpoint.number, UNKNOWN_KEY,
                                 f"checkpoint #{checkpoint.number} is signed with an unknown key "
                                 f"({checkpoint.key_fingerprint}); add its public key to OMIPORTAL_AUDIT_VERIFY_KEYS "
                                 f"if it is a retired portal key")
    if checkpoint.stored_digest and checkpoint.stored_digest != checkpoint.digest:
        return CheckpointProblem(checkpoint.number, BAD_SIGNATURE,
                                 f"checkpoint #{checkpoint.number} has been altered (its digest does not match)")
    if not signing.signature_valid(key, checkpoint.message(), checkpoint.signature):
        return CheckpointProblem(checkpoint.number, BAD_SIGNATURE,
                                 f"checkpoint #{checkpoint.number} has an invalid signature (altered or forged)")
    return None


def check_chain(checkpoints: list[Checkpoint], keys: dict | None = None) -> CheckpointProblem | None:
    """Signatures, numbering and links of every checkpoint; the first problem, or None."""
    keys = signing.verify_keys() if keys is None else keys
    previous: Checkpoint | None = None
    for checkpoint in checkpoints:
        problem = check_signature(checkpoint, keys)
        if problem:
            return problem
        expected_number = previous.number + 1 if previous else 1
        expected_digest = previous.digest if previous else hashing.GENESIS_HASH
        if checkpoint.number != expected_number:
            return CheckpointProblem(expected_number, BROKEN_CHECKPOINT_LINK,
                                     f"checkpoint #{expected_number} is missing (next found is #{checkpoint.number})")
        if checkpoint.prev_digest != expected_digest:
            return CheckpointProblem(checkpoint.number, BROKEN_CHECKPOINT_LINK,
                                     f"checkpoint #{checkpoint.number} does not link to checkpoint "
                                     f"#{checkpoint.number - 1} (prev_digest differs)")
        if previous and checkpoint.seq <= previous.seq:
            return CheckpointProblem(checkpoint.number, BROKEN_CHECKPOINT_LINK,
                                     f"checkpoint #{checkpoint.number} (event #{checkpoint.seq}) does not come after "
                                     f"checkpoint #{previous.number} (event #{previous.seq})")
        previous = checkpoint
    return None


# --- Writing one ---------------------------------------------------------------------------
