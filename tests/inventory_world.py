"""A family and its copies in recipient accounts, for the latest pointer's and the inventory's tests.

Two ways to make a copy of a version in an account:

- ``release`` runs the whole portal: a new source image made in the sandbox by copying alpha's
  image under a new name with alpha's keys, a share of it approved and accepted, real RQ jobs
  until the import completed (the family version names that share, as the releases would);
- ``copy_completes`` is fast: the copy appears in the sandbox account with the portal's tags, and
  the import is completed by transfers' own ``imports_complete`` (the event, its sink, its jobs
  enqueued on commit), without an export.
"""

import dataclasses
import uuid
from datetime import timedelta

from django.utils import timezone

from distribution.models import Family, FamilyVersion, InventoryEntry
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers.models import Recipient, Share
from transfers.services import import_offers
from transfers.services.import_ends import imports_complete


def make_family(w, name="golden-web") -> Family:
    return Family.objects.create(team=w.source, source_account=w.alpha, name=name, match=Family.Match.NAME,
                                 name_pattern=f"{name}-*", created_by=w.src_admin)


def source_image(cloud, name: str) -> str:
    """A new version in alpha: its web image copied under a new name (as a release pipeline would)."""
    world = cloud.world
    with world.lock:
        base = next(i for i in world.images.values() if i.name == "alpha-web-2025.01")
        image = dataclasses.replace(base, image_id=world.new_id("ami"), name=name, tags=[],
                                    snapshots=list(base.snapshots))
        world.images[image.image_id] = image
    return image.image_id


def version(family, number: int, *, share=None, image_id=None) -> FamilyVersion:
    return FamilyVersion.objects.create(family=family, number=number, image_id=image_id or f"ami-{number:08x}",
                                        image_name=f"{family.name}-{number}", share=share,
                                        state=FamilyVersion.State.SHARED if share else FamilyVersion.State.FOUND)


def release(w, cloud, family, number: int, *, accounts, accept=True) -> FamilyVersion:
    """Version ``number`` shared (the portal's whole flow) with ``accounts``; accepted and run to the
    copies' completion unless ``accept`` is False (then ``accept_and_complete`` finishes it)."""
    name = f"{family.name}-{number}"
    image_id = source_image(cloud, name)
    share = request_share(w, cloud, image=name, accounts=accounts, copy_name=f"{family.name}-v{number}")
    approve(w, share)
    made = version(family, number, share=share, image_id=image_id)
    workers.run_jobs(until=lambda: not Recipient.objects.filter(share=share).exclude(state="offered").exists(),
                     timeout=60)
    if accept:
        accept_and_complete(w, made)
    return made


def accept_and_complete(w, made: FamilyVersion) -> None:
    for recipient in Recipient.objects.filter(share=made.share, state="offered"):
        import_offers.recipient_accept(access=access(w.dst_member, w.dest), recipient=recipient)
    workers.run_jobs(until=lambda: tagged(made), timeout=60)


def tagged(made: FamilyVersion) -> bool:
    """Every recipient of the version's share completed, and each copy's tags are no longer owed."""
    recipients = Recipient.objects.filter(share=made.share)
    return (not recipients.exclude(state="completed").exists()
            and InventoryEntry.objects.filter(recipient__in=recipients, family_tagged_at__isnull=False).count()
            == recipients.count())


def plain_share(w, *, image_id="ami-00000001", name="golden-web", state=Share.State.IMPORTING) -> Share:
    now = timezone.now()
    return Share.objects.create(
        team=w.source, source_account=w.alpha, source_image_id=image_id, source_image_name=name,
        source_image_relation="owned", copy_name=name, reason="tests", licence_confirmed_at=now,
        requested_by=w.src_member, approval_required=True, approval_deadline=now + timedelta(days=7),
        digest="0" * 64, decided_by=w.src_approver, decided_at=now, state=state)


def cloud_copy(cloud, account, name: str, *, tags=None, state="available", description=None) -> str:
    """An image in ``account`` (a CloudAccount) of the sandbox, as an import would leave it."""
    world = cloud.world
    with world.lock:
        base = next(i for i in world.images.values() if i.name == "alpha-web-2025.01")
        image = dataclasses.replace(base, image_id=world.new_id("ami"), account_id=account.account_id,
                                    region=account.region, name=name, state=state, permitted_accounts=[],
                                    tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
                                    snapshots=list(base.snapshots),
                                    description=base.description if description is None else description)
        world.images[image.image_id] = image
    return image.image_id


def copy_completes(w, cloud, made: FamilyVersion | None, account, *, name=None) -> Recipient:
    """A copy of ``made`` (or of a plain share when None) completes in ``account``: made in the
    sandbox with the portal's tags, then recorded by transfers' own completion."""
    share = made.share if made is not None else plain_share(w)
    if made is not None and share is None:
        share = plain_share(w, image_id=made.image_id, name=made.image_name)
        FamilyVersion.objects.filter(pk=made.pk).update(share=share, state=FamilyVersion.State.SHARED)
        made.share = share
    recipient = Recipient.objects.create(share=share, kind=Recipient.Kind.TEAM, team=account.team,
                                         target_account=account, state=Recipient.State.IMPORTING,
                                         image_name=name or f"copy-{uuid.uuid4().hex[:8]}")
    tags = {"omiportal:recipient": str(recipient.public_id), "omiportal:share": str(share.public_id),
            "omiportal:source-account": w.alpha.account_id}
    image_id = cloud_copy(cloud, account, recipient.image_name, tags=tags)
    Recipient.objects.filter(pk=recipient.pk).update(image_id=image_id)
    recipient.image_id = image_id
    imports_complete([(recipient, tags, [])], [])
    return recipient


def image_tags(cloud, image_id: str) -> dict[str, str]:
    with cloud.world.lock:
        return {t["Key"]: t["Value"] for t in cloud.world.images[image_id].tags}
