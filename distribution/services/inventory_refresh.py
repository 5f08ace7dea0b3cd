"""The inventory of copies, 2 of 2: confirming one recipient account's copies in the cloud.

One ReadImages per account (filtered by the tag the portal puts on every copy, ``TagKeys
["omiportal:recipient"]``, and by the account, paginated), with that account's own keys, whatever
the number of copies or families; then, in one transaction:

- a copy the answer lacks is DELETED, one it reports ``failed`` is FAILED: ``inventory.copy_lost``
  once per change (a conditional update from the state it had), and it no longer counts as latest;
- a copy seen gets its state, ``pinned`` (the ``omiportal:pinned`` tag) and when it was seen; a
  family copy that lost its family tag in the cloud owes its tags again (latest.py's safety net);
- an image tagged by the portal that the inventory lacks is taken in: the copy of a completed
  import of this account (a backfill), or else an orphan (``inventory.orphan_found``, once, by
  the row's constraint);
- ``inventory.refreshed`` with the counts and the call's RequestIds, and the next due time.

A refresh that cannot read the account (keys refused, the cloud busy) records why on the
account's schedule and comes back: a retryable error soon, anything else one interval later (bad
keys are never retried in a loop: OUTSCALE locks accounts after repeated bad signatures).
"""

import uuid
from datetime import timedelta

from django.utils import timezone

import outscale
from accounts import keys
from accounts.models import CloudAccount
from audit import recorder
from audit.recorder import record
from distribution.models import FAMILY_TAG, FamilyVersion, InventoryCheck, InventoryEntry
from distribution.services.inventory import PINNED_TAG, RECIPIENT_TAG, backfill, entries_record, refresh_interval
from transfers.models import Recipient
from transfers.services.locks import advisory_locks

PURPOSE = "confirm the inventory"
RETRY_SOON = timedelta(minutes=5)
State = InventoryEntry.CloudState
# What the cloud's image states mean for a copy; any other state (deleted, deregistered) is gone.
CLOUD_STATES = {"available": State.AVAILABLE, "pending": State.PENDING, "failed": State.FAILED}
LOST = (State.DELETED, State.FAILED)


def inventory_refresh(*, account_id, now=None) -> dict | None:
    """Confirm the copies of the account (public id); what changed, or None if it could not be read."""
    account = CloudAccount.objects.select_related("team").filter(public_id=account_id,
                                                                   retired_at__isnull=True).first()
    if account is None:
        return None
    with advisory_locks([f"inventory:{account.pk}"]):  # one refresh of an account at a time
        return _refresh(account, now=now)


def _refresh(account: CloudAccount, *, now) -> dict | None:
    backfill(account=account, now=now)
    try:
        creds = keys.credentials_for(account, purpose=PURPOSE)
        with outscale.record_request_ids() as request_ids:
            images = outscale.read_tagged_images(creds=creds, account_id=account.account_id,
                                                 tag_keys=[RECIPIENT_TAG])
    except keys.KeysDoNotOpen as exc:  # recorded as a failed credential.used already
        _unreadable(account, str(exc), retry_soon=False, request_ids=())
        return None
    except outscale.CloudError as exc:
        _unreadable(account, exc.user_message, retry_soon=exc.retryable, request_ids=exc.request_ids)
        return None
    now = now or timezone.now()
    with recorder.atomic():
        counts = _apply(account, images, now=now)
        InventoryCheck.objects.update_or_create(account=account, defaults={
            "checked_at": now, "due_at": now + refresh_interval(), "images_seen": len(images), "message": ""})
        record(action="inventory.refreshed", actor=None, team=account.team, target=account,
               cloud_request_ids=list(request_ids),
               details={"account_id": account.account_id, "region": account.region, "images_seen": len(images),
                        **counts})
    return counts


def _unreadable(account, message: str, *, retry_soon: bool, request_ids) -> None:
    now = timezone.now()
    with recorder.atomic():
        InventoryCheck.objects.update_or_create(account=account, defaults={
            "due_at": now + (min(RETRY_SOON, refresh_interval()) if retry_soon else refresh_interval()),
            "message": message[:500]})
        record(action="inventory.refreshed", outcome="failed", actor=None, team=account.team, target=account,
               cloud_request_ids=list(request_ids),
               details={"account_id": account.account_id, "region": account.region, "reason": message})


def _tags(image) -> dict[str, str]:
    return dict(image.facts.tags)


def _source(image, tags: dict[str, str]) -> str:
    """The image a copy came from: beside the portal's mark in its Description, or (copies made
    before 2026-12-06) its ``omiportal:source-image`` tag."""
    return outscale.source_of(image.description) or tags.get("omiportal:source-image", "")


def _apply(account, images, *, now) -> dict:
    known = {row["image_id"]: row for row in InventoryEntry.objects.filter(account=account).values(
        "pk", "image_id", "cloud_state", "pinned", "family_id", "family_tagged_at")}
    groups: dict[tuple, list[int]] = {}
    lost: list[tuple[int, str, str]] = []
    owed: list[int] = []
    for image_id, row in known.items():
        image = images.get(image_id)
        tags = _tags(image) if image else {}
        state = CLOUD_STATES.get(image.state, State.DELETED) if image else State.DELETED
        if state in LOST and row["cloud_state"] != state:
            lost.append((row["pk"], row["cloud_state"], state))
            continue
        groups.setdefault((state, PINNED_TAG in tags, image is not None), []).append(row["pk"])
        if (image and state == State.AVAILABLE and row["family_id"] and row["family_tagged_at"]
                and FAMILY_TAG not in tags):
            owed.append(row["pk"])
    for (state, pinned, seen), pks in groups.items():
        fields = {"cloud_state": state, "pinned": pinned, "checked_at": now}
        if seen:
            fields["last_seen_at"] = now
        if state in LOST:
            fields["is_latest"] = False
        InventoryEntry.objects.filter(pk__in=pks).update(**fields)
    if owed:  # someone took the family tag off: the tagging job puts it (and latest, if newest) back
        InventoryEntry.objects.filter(pk__in=owed).update(family_tagged_at=None)
    copies_lost = sum(_lose(pk, before, state, images, now=now) for pk, before, state in lost)
    taken_in, orphans = _newcomers(account, {i: im for i, im in images.items() if i not in known}, now=now)
    return {"copies": len(known), "copies_lost": copies_lost, "taken_in": taken_in, "orphans_found": orphans,
            "tags_owed": len(owed)}


def _lose(pk: int, before: str, state: str, images, *, now) -> int:
    """Once per change: only the update from the state it had records the event."""
    if not InventoryEntry.objects.filter(pk=pk, cloud_state=before).update(
            cloud_state=state, is_latest=False, checked_at=now):
        return 0
    entry = InventoryEntry.objects.select_related("team", "family", "version").get(pk=pk)
    image = images.get(entry.image_id)
    record(action="inventory.copy_lost", actor=None, team=entry.team, target=entry,
           details={"image_id": entry.image_id, "account_id": entry.account_id, "was": before, "now": state,
                    "reason": (image.state_message if image else "") or "absent from the account's images",
                    "family": entry.family.name if entry.family_id else "",
                    "version": entry.version.number if entry.version_id else None})
    return 1


def _newcomers(account, unknown: dict, *, now) -> tuple[int, int]:
    """Images tagged by the portal that the inventory lacks: a completed import of this account is
    taken in (its recipient's copy, found by its image id: the tags are the same on every copy of
    a source, and the account's owner can edit them); anything else is an orphan."""
    if not unknown:
        return 0, 0
    tags = {image_id: _tags(image) for image_id, image in unknown.items()}
    recipients = {r.image_id: r for r in Recipient.objects.filter(target_account=account,
                                                                  image_id__in=list(unknown))}
    adopt, orphans = [], []
    for image_id in unknown:
        recipient = recipients.get(image_id)
        if recipient is not None:
            if recipient.state == Recipient.State.COMPLETED:
                adopt.append(recipient.pk)
            continue  # still importing: its completion writes the row
        orphans.append(image_id)
    taken_in = len(entries_record(adopt, now=now)) if adopt else 0
    return taken_in, _orphans_record(account, {i: unknown[i] for i in orphans}, tags, now=now)


def _orphans_record(account, images: dict, tags: dict, *, now) -> int:
    if not images:
        return 0
    # The version it came from, when its source image is a family version (a family of one team only).
    source = {image_id: _source(image, tags[image_id]) for image_id, image in images.items()}
    sources = set(source.values()) - {""}
    families: dict[str, list[tuple[int, int]]] = {}
    for image_id, pk, family_id in FamilyVersion.objects.filter(image_id__in=sources).values_list(
            "image_id", "pk", "family_id"):
        families.setdefault(image_id, []).append((pk, family_id))
    rows = []
    for image_id, image in images.items():
        match = families.get(source[image_id], [])
        version_id, family_id = match[0] if len(match) == 1 else (None, None)
        rows.append(InventoryEntry(
            public_id=uuid.uuid4(), team_id=account.team_id, account=account, image_id=image_id,
            image_name=image.name[:255], source_image_id=source[image_id][:32],
            family_id=family_id, version_id=version_id, orphan=True, pinned=PINNED_TAG in tags[image_id],
            cloud_state=CLOUD_STATES.get(image.state, State.UNKNOWN), first_seen_at=now, last_seen_at=now,
            checked_at=now, family_tagged_at=now))  # the portal does not tag what it did not make
    InventoryEntry.objects.bulk_create(rows, ignore_conflicts=True)
    found = InventoryEntry.objects.filter(public_id__in=[row.public_id for row in rows]).select_related("team")
    for entry in found:
        record(action="inventory.orphan_found", actor=None, team=account.team, target=entry,
               details={"image_id": entry.image_id, "image_name": entry.image_name, "account_id": account.account_id,
                        "region": account.region, "recipient_tag": tags[entry.image_id].get(RECIPIENT_TAG, ""),
                        "source_image_id": entry.source_image_id})
    return len(found)
