"""The inventory of copies, 1 of 2: its rows and its schedule.

Every import the portal completes in a team's account becomes an InventoryEntry, written in the
very transaction that records the completion (the ``import.completed`` sink, transfers/events.py),
with the family and version it belongs to when its share was a family version's. Copies completed
before the inventory existed are taken in by the first refresh of their account (``backfill``).

The schedule lives in the database: one InventoryCheck per recipient account says when its copies
are due to be confirmed. The reconciler's tick (``inventory_sweep``) claims the due ones, each
with a conditional update that pushes its due time a lease ahead (so two workers' ticks enqueue
it once), and enqueues one refresh job per account; a refresh that never ran is due again when
its lease runs out. The refresh itself (one tag-filtered ReadImages per account) is
inventory_refresh.py.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from accounts.models import CloudAccount
from distribution.models import FamilyVersion, InventoryCheck, InventoryEntry
from transfers import scheduling
from transfers.models import Recipient

RECIPIENT_TAG = "omiportal:recipient"  # on every copy the portal makes (transfers/services/import_ends.py)
PINNED_TAG = "omiportal:pinned"  # put by a recipient team on a copy retention must never propose
LEASE = timedelta(minutes=10)  # a claimed refresh that never ran is due again after this
BATCH = 500  # accounts claimed, copies taken in, per tick


def refresh_interval() -> timedelta:
    return timedelta(seconds=float(settings.OMIPORTAL_INVENTORY_REFRESH_SECONDS))


def on_import_completed(kind: str, ids: list[int], occasion: str) -> None:
    """The sink (transfers/events.py): in the transaction that completed these imports."""
    if kind == "import.completed":
        entries_record(ids)


def entries_record(recipient_ids, *, now=None) -> list[InventoryEntry]:
    """An inventory row for each of these recipients that completed a copy into a team's account
    (its family and version when its share was made for a family version), and a refresh schedule
    for their accounts; the family's tags are enqueued for each new copy of a family. A copy
    already in the inventory is left as it is (one row per copy, by constraint). Returns the rows
    this call made."""
    now = now or timezone.now()
    rows = list(Recipient.objects.filter(pk__in=list(recipient_ids), state=Recipient.State.COMPLETED,
                                         target_account__isnull=False)
                .exclude(image_id="")
                .values("pk", "team_id", "target_account_id", "image_id", "image_name", "completed_at",
                        "share__source_image_id"))
    if not rows:
        return []
    versions = {recipient_id: (version_id, family_id) for recipient_id, version_id, family_id in
                FamilyVersion.objects.filter(share__recipients__in=[row["pk"] for row in rows])
                .values_list("share__recipients", "pk", "family_id")}
    entries = []
    for row in rows:
        version_id, family_id = versions.get(row["pk"], (None, None))
        seen = row["completed_at"] or now
        entries.append(InventoryEntry(
            public_id=uuid.uuid4(), team_id=row["team_id"], account_id=row["target_account_id"],
            image_id=row["image_id"], image_name=row["image_name"][:255],
            source_image_id=row["share__source_image_id"] or "", recipient_id=row["pk"], family_id=family_id,
            version_id=version_id, cloud_state=InventoryEntry.CloudState.AVAILABLE, first_seen_at=seen,
            last_seen_at=seen))
    InventoryEntry.objects.bulk_create(entries, ignore_conflicts=True)
    # The copy was just seen available: its account's first look is one interval away.
    InventoryCheck.objects.bulk_create(
        [InventoryCheck(account_id=account_id, due_at=now + refresh_interval())
         for account_id in sorted({row["target_account_id"] for row in rows})], ignore_conflicts=True)
    made = {public_id for public_id in InventoryEntry.objects.filter(
        public_id__in=[entry.public_id for entry in entries]).values_list("public_id", flat=True)}
    made_entries = [entry for entry in entries if entry.public_id in made]
    from distribution.services import latest  # the tags of a family's copies (same part, its own module)

    latest.latest_enqueue([entry.public_id for entry in made_entries if entry.family_id])
    return made_entries


def backfill(*, account: CloudAccount, now=None) -> int:
    """Take in the account's copies completed before the inventory knew of them (or whose row a
    lost sink never wrote): how many."""
    missing = Recipient.objects.filter(target_account=account, state=Recipient.State.COMPLETED) \
        .exclude(image_id="").filter(inventory__isnull=True).values_list("pk", flat=True)
    return len(entries_record(list(missing), now=now))


def checks_ensure(*, now) -> int:
    """A refresh schedule for every account that was ever a recipient and has none yet: due at
    once where it holds copies (they predate the inventory: the first refresh backfills them),
    an interval away where its copies are all still to come (its first copy would have made one).

    Due at once for all of them, a release into 1,000 new accounts gave each a refresh the moment
    it was requested: 1,000 jobs of a second each that found nothing, a third of the workers' time
    while the release's imports waited to be looked at."""
    missing = dict(CloudAccount.objects.filter(retired_at__isnull=True, inventory_check__isnull=True)
                   .filter(Exists(Recipient.objects.filter(target_account=OuterRef("pk"))))
                   .annotate(holds_copies=Exists(Recipient.objects.filter(
                       target_account=OuterRef("pk"), state=Recipient.State.COMPLETED).exclude(image_id="")))
                   .values_list("pk", "holds_copies")[:BATCH])
    made = InventoryCheck.objects.bulk_create(
        [InventoryCheck(account_id=pk, due_at=now if holds else now + refresh_interval())
         for pk, holds in missing.items()], ignore_conflicts=True)
    return len(made)


def refresh_job_id(account_public_id, due_at) -> str:
    # The claimed due time, to the microsecond: each claim its own job (a second's would collide with
    # the last refresh's job, still kept by rq, when an account is refreshed within a second of its due time).
    return f"inventory-refresh-{account_public_id}-{int(due_at.timestamp() * 1_000_000)}"


def inventory_sweep(*, now) -> int:
    """The reconciler's tick: schedules for new recipient accounts, then one refresh job per due account."""
    done = checks_ensure(now=now)
    due = list(InventoryCheck.objects.filter(due_at__lte=now, account__retired_at__isnull=True)
               .order_by("due_at").values_list("pk", "due_at", "account__public_id")[:BATCH])
    for pk, due_at, account_public_id in due:
        # Claimed by pushing its due time a lease ahead: another worker's tick finds it not due.
        if InventoryCheck.objects.filter(pk=pk, due_at=due_at).update(due_at=now + LEASE):
            refresh_enqueue(account_public_id, due_at)
            done += 1
    return done


def refresh_enqueue(account_public_id, due_at) -> None:
    scheduling.enqueue("distribution.jobs.inventory.inventory_refresh_job", str(account_public_id),
                       job_id=refresh_job_id(account_public_id, due_at))
