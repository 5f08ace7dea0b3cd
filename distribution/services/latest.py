"""The "latest" pointer: in every recipient account, each copy of a family's version carries the
family tag (``omiportal:family`` = the family's name) and the newest one also the latest tag
(``omiportal:latest`` = the name), so consumers find the current image with one ReadImages filter
(``Tags: ["omiportal:latest=<family>"]``).

Each new copy of a family (inventory.entries_record, in the transaction that completed its import)
owes its tags: ``family_tagged_at`` is null until ``latest_move`` has put them on, with the
recipient account's own keys:

1. under a lock of (family, account), so two copies completing together in one account are
   tagged one after the other and the newer wins whatever their order;
2. the copies of the family that carry the latest tag in the account now are read (one
   ReadImages by tag: the cloud's truth, and the portal's own ``is_latest`` rows besides);
3. the new copy takes the latest tag only if its version's number is higher than theirs (an older
   version completing late gets the family tag only: ``latest.kept``), then the previous holders
   lose it (DeleteTags, removing the tag only where it names this family);
4. one conditional update of the copy (``family_tagged_at`` null to set) and its event
   (``latest.moved`` with the calls' RequestIds) in one transaction: a job run twice, or a worker
   killed between the calls and the write, calls the cloud again (tags are idempotent) but
   records once.

A retryable cloud answer leaves the tags owed: the reconciler's tick (``latest_sweep``) enqueues
the copies still owed after the grace period again. Another refusal (bad keys, the copy gone) is
recorded (``failed``) and not retried; the inventory's next refresh owes the tags again if the
copy is there without its family tag.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

import outscale
from accounts import keys
from audit import recorder
from audit.recorder import record
from distribution.models import FAMILY_TAG, LATEST_TAG, InventoryEntry
from transfers import scheduling
from transfers.services.locks import advisory_locks

PURPOSE = "tag the family's latest copy"
BATCH = 500


def job_id(entry_public_id, tag: str = "") -> str:
    return f"latest-move-{entry_public_id}{tag}"


def latest_enqueue(entry_public_ids, *, tag: str = "") -> None:
    """Enqueue the tagging of these copies once the current transaction commits (ids only)."""
    for public_id in entry_public_ids:
        scheduling.enqueue("distribution.jobs.latest.latest_move_job", str(public_id),
                           job_id=job_id(public_id, tag))


def lock_name(family_id: int, account_id: int) -> str:
    return f"latest:{family_id}:{account_id}"


def latest_move(*, entry_id) -> str:
    """Tag one copy of a family (public id) and move the latest tag to it if it is the newest:
    "moved", "kept" (an older version), "failed", "later" (the cloud asks to come back) or
    "nothing" (done already, gone, not a family's copy)."""
    entry = InventoryEntry.objects.filter(public_id=entry_id, family__isnull=False).values(
        "pk", "family_id", "account_id", "family_tagged_at").first()
    if entry is None or entry["family_tagged_at"] is not None:
        return "nothing"
    with advisory_locks([lock_name(entry["family_id"], entry["account_id"])]):
        return _move(entry["pk"])


def _move(pk: int) -> str:
    entry = InventoryEntry.objects.select_related("family", "version", "account", "account__team", "team") \
        .get(pk=pk)  # again, under the lock: an earlier holder may have tagged it meanwhile
    if entry.family_tagged_at is not None:
        return "nothing"
    if entry.cloud_state in (InventoryEntry.CloudState.DELETED, InventoryEntry.CloudState.FAILED) \
            or entry.account.retired_at is not None:
        InventoryEntry.objects.filter(pk=pk, family_tagged_at__isnull=True).update(family_tagged_at=timezone.now())
        return "nothing"
    family, account = entry.family, entry.account
    try:
        creds = keys.credentials_for(account, purpose=PURPOSE)
    except keys.KeysDoNotOpen as exc:  # a failed credential.used is recorded already
        return _failed(entry, str(exc), ())
    with outscale.record_request_ids() as request_ids:
        try:
            holders = outscale.read_tagged_images(creds=creds, account_id=account.account_id,
                                                  tags={LATEST_TAG: family.name})
            previous = _previous(entry, set(holders) - {entry.image_id})
            newest = max((number or 0 for number in previous.values()), default=None)
            number = entry.version.number if entry.version_id else 0
            takes = newest is None or number > newest
            tags = {FAMILY_TAG: family.name, **({LATEST_TAG: family.name} if takes else {})}
            outscale.tag_resources(creds=creds, resource_ids=[entry.image_id], tags=tags)
            losing = sorted(image_id for image_id in previous if image_id in holders) if takes else []
            if losing:
                outscale.untag_resources(creds=creds, resource_ids=losing, tags={LATEST_TAG: family.name})
        except outscale.CloudError as exc:
            if exc.retryable:
                return "later"  # still owed: the sweep comes back to it
            return _failed(entry, exc.user_message, request_ids)
    return _record(entry, takes=takes, previous=previous if takes else {}, request_ids=list(request_ids))


def _previous(entry: InventoryEntry, holders: set[str]) -> dict[str, int | None]:
    """The account's other copies that hold the latest tag (in the cloud, or in the portal's rows),
    by image id, with their version number (None: an image the portal does not know as the
    family's: it loses the tag to any version)."""
    rows = InventoryEntry.objects.filter(account_id=entry.account_id, family_id=entry.family_id) \
        .exclude(pk=entry.pk).filter(image_id__in=holders) | InventoryEntry.objects.filter(
        account_id=entry.account_id, family_id=entry.family_id, is_latest=True).exclude(pk=entry.pk)
    numbers: dict[str, int | None] = dict.fromkeys(holders)
    for image_id, number, state in rows.values_list("image_id", "version__number", "cloud_state"):
        if image_id in holders or state not in (InventoryEntry.CloudState.DELETED, InventoryEntry.CloudState.FAILED):
            numbers[image_id] = number
    return numbers


def _record(entry: InventoryEntry, *, takes: bool, previous: dict, request_ids: list) -> str:
    now = timezone.now()
    with recorder.atomic():
        if not InventoryEntry.objects.filter(pk=entry.pk, family_tagged_at__isnull=True).update(
                family_tagged_at=now, is_latest=takes):
            return "nothing"
        if takes:
            InventoryEntry.objects.filter(account_id=entry.account_id, family_id=entry.family_id, is_latest=True) \
                .exclude(pk=entry.pk).update(is_latest=False)
        record(action="latest.moved" if takes else "latest.kept", actor=None, team=entry.team, target=entry,
               cloud_request_ids=request_ids, details=_details(entry, previous=sorted(previous)))
    return "moved" if takes else "kept"


def _failed(entry: InventoryEntry, message: str, request_ids) -> str:
    with recorder.atomic():
        if not InventoryEntry.objects.filter(pk=entry.pk, family_tagged_at__isnull=True).update(
                family_tagged_at=timezone.now()):
            return "nothing"
        record(action="latest.moved", outcome="failed", actor=None, team=entry.team, target=entry,
               cloud_request_ids=list(request_ids), details={**_details(entry), "reason": message})
    return "failed"


def _details(entry: InventoryEntry, *, previous=()) -> dict:
    return {"family": entry.family.name, "family_id": str(entry.family.public_id), "version": entry.version.number
            if entry.version_id else None, "image_id": entry.image_id, "account_id": entry.account.account_id,
            "region": entry.account.region, "previous_image_ids": list(previous)}


def latest_sweep(*, now) -> int:
    """The reconciler's safety net: copies still owed their tags after the grace period (a job
    lost with Redis, a throttled cloud) are enqueued again, under a job id of this tick."""
    overdue = now - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    owed = list(InventoryEntry.objects.filter(family__isnull=False, family_tagged_at__isnull=True,
                                              first_seen_at__lt=overdue)
                .order_by("first_seen_at").values_list("public_id", flat=True)[:BATCH])
    latest_enqueue(owed, tag=f"-r{int(now.timestamp())}")
    return len(owed)
