"""Plain data returned by the layer. Every result carries the cloud RequestIds.

Nothing here holds a secret or a pre-signed URL except PresignedLink, whose
repr hides the URL. An image's FileLocation (it echoes the pre-signed URL it
was imported from) is deliberately never copied out of the API answer.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Relation(StrEnum):
    """How an account can use an image. Only owned images can be exported; others are copied first."""

    OWNED = "owned"
    SHARED = "shared"  # another account granted this one launch permission
    PUBLIC = "public"


class ResultList(list):
    """A list that also carries the RequestIds of the calls that produced it."""

    def __init__(self, items=(), *, request_ids: tuple[str, ...] = ()) -> None:
        super().__init__(items)
        self.request_ids = tuple(request_ids)


class ResultDict(dict):
    """A dict that also carries the RequestIds of the calls that produced it."""

    def __init__(self, items=(), *, request_ids: tuple[str, ...] = ()) -> None:
        super().__init__(items)
        self.request_ids = tuple(request_ids)


@dataclass(frozen=True)
class CallResult:
    request_ids: tuple[str, ...]


@dataclass(frozen=True)
class AccountIdentity:
    account_id: str
    email: str | None = None
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageFacts:
    """What an image is, as ReadImages describes it: what an approver weighs (size, licences) and
    what a copy must keep (product codes, architecture, boot modes, root device)."""

    size_gib: int = 0  # the sum of the VolumeSize of its BlockDeviceMappings
    snapshots: int = 0  # the BlockDeviceMappings with a snapshot
    product_codes: tuple[str, ...] = ()
    architecture: str = ""
    boot_modes: tuple[str, ...] = ()
    root_device_type: str = ""
    root_device_name: str = ""
    tags: tuple[tuple[str, str], ...] = ()  # (key, value), in the cloud's order


@dataclass(frozen=True)
class ImageSummary:
    image_id: str
    name: str
    account_id: str
    relation: Relation
    state: str
    description: str = ""
    account_alias: str = ""
    architecture: str = ""
    creation_date: str = ""
    product_codes: tuple[str, ...] = ()
    facts: ImageFacts = field(default_factory=ImageFacts)
    # Accounts the owner already lets launch the image (PermissionsToLaunch, as the owner reads it).
    launch_account_ids: tuple[str, ...] = ()

    @property
    def needs_copy(self) -> bool:
        """Only an owned OMI can be exported; a shared or public one is copied first (DESIGN §2)."""
        return self.relation != Relation.OWNED


@dataclass(frozen=True)
class ImageState:
    image_id: str
    name: str
    state: str  # pending | available | failed | deleted | ...
    account_id: str = ""
    state_code: str = ""
    state_message: str = ""  # scrubbed of URLs
    request_ids: tuple[str, ...] = ()
    description: str = ""  # scrubbed of URLs; carries the portal's mark on the images it made
    facts: ImageFacts = field(default_factory=ImageFacts)

    @property
    def is_final(self) -> bool:
        return self.state in ("available", "failed", "deleted")


@dataclass(frozen=True)
class ExportTask:
    task_id: str
    image_id: str
    state: str  # pending/queued | pending | completed | failed | cancelled
    progress: int
    comment: str = ""  # scrubbed of URLs
    bucket: str = ""
    prefix: str = ""  # as OUTSCALE reports it, with "<ImageId>/" appended
    disk_format: str = ""
    manifest_key: str = ""  # from OsuManifestUrl when OUTSCALE reports it (unsigned); "" otherwise
    request_ids: tuple[str, ...] = ()

    @property
    def is_final(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class PresignedLink:
    url: str = field(repr=False)  # a bearer secret: never logged, never in a job argument
    expires_at: datetime
    request_ids: tuple[str, ...] = ()
