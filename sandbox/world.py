"""The sandbox's in-memory cloud: accounts, OMIs, export tasks and OOS buckets.

One re-entrant lock guards everything: the sandbox serves a handful of clients, and a single lock
makes every action atomic, as the real API's creates are. Time-driven changes (an export
progressing, an import becoming available) are applied by `tick()`, which every request calls
before it reads or writes, so no background thread is needed and tests see a consistent world.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(when: datetime) -> str:
    """OUTSCALE's date-time style: `2010-10-01T12:34:56.789Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class Account:
    name: str
    account_id: str
    region: str
    email: str
    access_key: str
    secret_key: str
    bucket: str
    publisher: bool = False
    # OOS names an account by its "S3 user ID" (a canonical id, 64 hex digits), not by its account
    # id: ACL grants use it (`id=<canonical id>`), and GetObjectAcl reports it as the grantee's ID
    # with the account id as DisplayName, as OUTSCALE documents for get-bucket-acl/get-object-acl.
    canonical_id: str = ""


@dataclass
class Grant:
    kind: str  # "id" (a canonical id), "email", or "group" (AllUsers / AuthenticatedUsers)
    value: str
    permission: str  # READ, READ_ACP, WRITE_ACP, FULL_CONTROL


@dataclass
class StoredObject:
    data: bytes
    etag: str
    last_modified: datetime
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)


@dataclass
class Bucket:
    name: str
    region: str
    owner_id: str
    created: datetime
    objects: dict[str, StoredObject] = field(default_factory=dict)


@dataclass
class Snapshot:
    snapshot_id: str
    device_name: str
    volume_size: int
    volume_type: str = "standard"


@dataclass
class Image:
    image_id: str
    account_id: str
    region: str
    name: str
    description: str
    created: datetime
    snapshots: list[Snapshot]
    state: str = "available"
    state_comment: dict[str, str] = field(default_factory=dict)
    global_permission: bool = False
    permitted_accounts: list[str] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    file_location: str = ""
    architecture: str = "x86_64"
    boot_modes: list[str] = field(default_factory=lambda: ["legacy"])
    product_codes: list[str] = field(default_factory=lambda: ["0001"])
    account_alias: str = ""
    # Seeded fault: every export of this OMI fails with this comment.
    export_failure: str = ""
    # Pending OMIs (copy, import) become `available` (or `failed`) at this monotonic time.
    ready_at: float | None = None
    fail_with: str = ""

    def visible_to(self, account_id: str) -> bool:
        return self.account_id == account_id or self.global_permission or account_id in self.permitted_accounts


@dataclass
class ExportTask:
    task_id: str
    account_id: str
    region: str
    image_id: str
    disk_image_format: str
    bucket: str
    prefix: str  # with `<ImageId>/` appended, as OUTSCALE reports it
    started: float  # monotonic
    duration: float
    signer_id: str = ""  # whose keys sign the manifest's URLs: the caller, or OsuApiKey's account
    fail_with: str = ""
    state: str = "pending/queued"
    progress: int = 0
    comment: str = ""
    tags: list[dict[str, str]] = field(default_factory=list)
    manifest_key: str = ""
    manifest_url: str = ""
    completed_at: datetime | None = None


class World:
    """All sandbox state. Mutate only while holding `lock` (handlers do it for you)."""

    def __init__(self, seed: int = 1):
        self.lock = threading.RLock()
        self.seed = seed
        self.endpoints: dict[str, dict[str, str]] = {}
        # Set by the export pipeline to write a finished export into its bucket; returns an error
        # text when it cannot (the bucket was deleted meanwhile).
        self.on_export_completed = None
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.rng = random.Random(self.seed)  # noqa: S311 - ids only need to be stable, not secret
            self.accounts: dict[str, Account] = {}
            self.images: dict[str, Image] = {}
            self.tasks: dict[str, ExportTask] = {}
            self.buckets: dict[tuple[str, str], Bucket] = {}  # (region, name) -> bucket
            self.counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            # Creates that succeeded, per account, action and what names the result (the ImageName
            # of a CreateImage, the OsuPrefix of a CreateImageExportTask): a create the cloud
            # refused (a taken name) is a call in `counters` but not a resource here.
            self.created: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
            self.auth_failures: dict[str, int] = defaultdict(int)
            self.locked_until: dict[str, float] = {}
            # (action, HTTP status, body) of recent OAPI answers, for spec checks in tests.
            self.responses: deque[tuple[str, int, dict]] = deque(maxlen=20000)
            # Per-account quota limits set by tests (account id -> {QuotaName: MaxValue}); a quota
            # not named here has its default (oapi_quotas.DEFAULTS).
            self.quotas: dict[str, dict[str, int]] = defaultdict(dict)
            # Accounts whose keys OOS refuses (AccessDenied) while OAPI takes them: an EIM user
            # without OOS rights, as the portal's pre-flight checks must notice.
            self.oos_refused: set[str] = set()

    # --- ids -----------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        """`ami-1a2b3c4d` style: 8 lowercase hex digits, unique, reproducible from the seed."""
        while True:  # two lookups, not a set of every id: a 10,000-image world creates in O(1)
            candidate = f"{prefix}-{self.rng.getrandbits(32):08x}"
            if candidate not in self.images and candidate not in self.tasks:
                return candidate

    # --- lookups -------------------------------------------------------------------------------

    def account_by_key(self, access_key: str, region: str) -> Account | None:
        """Accounts are per Region: a key only opens the Region its account lives in."""
        for account in self.accounts.values():
            if account.access_key == access_key and account.region == region:
                return account
        return None

    def account_by_key_any_region(self, access_key: str) -> Account | None:
        for account in self.accounts.values():
            if account.access_key == access_key:
                return account
        return None

    def account_by_canonical_id(self, canonical_id: str) -> Account | None:
        for account in self.accounts.values():
            if account.canonical_id == canonical_id:
                return account
        return None

    def account_by_email(self, email: str) -> Account | None:
        for account in self.accounts.values():
            if account.email.lower() == email.lower():
                return account
        return None

    def bucket(self, region: str, name: str) -> Bucket | None:
        return self.buckets.get((region, name))

    def count(self, account_id: str, action: str) -> None:
        self.counters[account_id][action] += 1

    def count_created(self, account_id: str, action: str, name: str) -> None:
        self.created[account_id][(action, name)] += 1

    # --- dry runs ------------------------------------------------------------------------------

    def save_state(self) -> tuple:
        """What an OAPI action may change (OMIs, export tasks, the id generator), so that a dry
        run can run the real action and then leave no trace (`restore_state`)."""
        return copy.deepcopy(self.images), copy.deepcopy(self.tasks), self.rng.getstate()

    def restore_state(self, saved: tuple) -> None:
        images, tasks, rng_state = saved
        self.images, self.tasks = images, tasks
        self.rng.setstate(rng_state)

    # --- time ----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Move every time-driven resource to the state it has reached by now."""
        now = time.monotonic()
        with self.lock:
            for task in self.tasks.values():
                if task.state in ("completed", "failed", "cancelled"):
                    continue
                fraction = (now - task.started) / task.duration if task.duration > 0 else 1.0
                if fraction >= 1.0:
                    self._finish_task(task, late_by=now - (task.started + task.duration))
                elif fraction >= 0.2:
                    # OUTSCALE keeps a task queued for a while, then reports progress.
                    task.state = "pending"
                    task.progress = max(1, min(99, int(fraction * 100)))
            for image in self.images.values():
                if image.state == "pending" and image.ready_at is not None and now >= image.ready_at:
                    image.ready_at = None
                    if image.fail_with:
                        image.state = "failed"
                        image.state_comment = {"StateCode": "Server.InternalError", "StateMessage": image.fail_with}
                    else:
                        image.state = "available"
                        image.state_comment = {}

    def _finish_task(self, task: ExportTask, late_by: float) -> None:
        # The task finished when its time ran out, not when someone next looked at it.
        task.completed_at = utc_now() - timedelta(seconds=max(0.0, late_by))
        if task.fail_with:
            task.state, task.comment = "failed", task.fail_with
            task.progress = max(task.progress, 1)
            return
        error = self.on_export_completed(task) if self.on_export_completed else None
        if error:
            task.state, task.comment = "failed", error
        else:
            task.state, task.progress = "completed", 100

    def age_export(self, task_id: str, seconds: float) -> None:
        """Pretend a completed export finished `seconds` earlier and rewrite its manifest, e.g. to
        make its snapshot URLs older than the 7-day deadline."""
        with self.lock:
            task = self.tasks[task_id]
            if task.state != "completed" or task.completed_at is None:
                raise ValueError(f"{task_id} is {task.state}, not completed")
            task.completed_at = task.completed_at - timedelta(seconds=seconds)
            if self.on_export_completed:
                self.on_export_completed(task, rewrite=True)
