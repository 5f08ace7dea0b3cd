"""Finding a family's new versions: one ReadImages per source account, whatever its families.

The reconciler runs ``discovery_sweep`` on every tick (registered in distribution/apps.py): it
enqueues one scan job per source account whose live families were not looked at for
OMIPORTAL_FAMILY_SCAN_SECONDS. The scan claims the account's families (a conditional update of
``last_scanned_at``, so two jobs never both read it), lists the account's own available images in
one call per page (``ImageNames`` takes exact names only, and name patterns and tags cannot be
combined in one filter, so the families are matched here), and records each new image of each
family as its next version.

Exactly once: versions are numbered under a lock of the family's row, after re-reading the images
it already has; the unique constraints (one version per image, one number per family) back it up.
Each new version's release (distribution.jobs.releases.release_job) is enqueued on commit.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase

from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

import outscale
from accounts import keys
from accounts.access import require
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from distribution.models import FAMILY_TAG, Family, FamilyVersion
from transfers import scheduling

logger = logging.getLogger(__name__)

SCAN_FAILED = "The images of {label} could not be read: {reason}"
ARCHIVED = "{name} is archived: nothing is looked for any more."
SOURCE_NOT_READY = "{label} cannot be read now: {reason}."
# A family's live account: the families looked for, on accounts whose keys can be used.
LIVE = Q(archived_at__isnull=True, source_account__validation_status=CloudAccount.Validation.VALID,
         source_account__retired_at__isnull=True)


@dataclass
class ScanOutcome:
    scanned: bool = False  # False: another scan had just looked (or nothing live to look for)
    found: list[FamilyVersion] = field(default_factory=list)
    error: str = ""


def scan_seconds() -> float:
    return max(1.0, float(settings.OMIPORTAL_FAMILY_SCAN_SECONDS))


def family_matches(family: Family, image) -> bool:
    """Whether an image (outscale.ImageSummary) is a version of the family. A copy the portal
    distributed (it carries the family tag) is never a version, of this family or another."""
    tags = dict(image.facts.tags)
    if FAMILY_TAG in tags:
        return False
    if family.match == Family.Match.NAME:
        return fnmatchcase(image.name, family.name_pattern)
    if family.tag_key not in tags:
        return False
    return not family.tag_value or tags[family.tag_key] == family.tag_value


def discovery_sweep(*, now) -> int:
    """The reconciler's tick: one scan job per source account due (ids only; the job id names the
    account and the period, so the ticks of several workers enqueue it once)."""
    every = scan_seconds()
    due = Family.objects.filter(LIVE).filter(Q(last_scanned_at__isnull=True)
                                             | Q(last_scanned_at__lte=now - timedelta(seconds=every)))
    accounts = sorted({str(pk) for pk in due.values_list("source_account__public_id", flat=True)})
    period = int(now.timestamp() // every)
    for account_id in accounts:
        scheduling.enqueue("distribution.jobs.discovery.family_scan_job", account_id,
                           job_id=f"family-scan-{account_id}-{period}", queue="poll", result_ttl=0)
    return len(accounts)


def _claim(account: CloudAccount, now, *, force: bool) -> list[Family]:
    """The account's live families, once its look is ours: none when another scan looked within
    the period (a person's scan, ``force``, looks whatever the period)."""
    if account.is_retired or not account.is_valid:
        return []
    # Only the family's own columns: an UPDATE with a join becomes "WHERE id IN (subquery)", whose
    # rows PostgreSQL does not check again after waiting for another scan's claim.
    live = Family.objects.filter(source_account_id=account.pk, archived_at__isnull=True)
    if not force:
        cutoff = now - timedelta(seconds=scan_seconds())
        # One conditional update: of two scans at once, the second finds nothing left to claim.
        if not live.filter(Q(last_scanned_at__isnull=True) | Q(last_scanned_at__lte=cutoff)).update(
                last_scanned_at=now):
            return []
    live.update(last_scanned_at=now)  # the one call looks for every family of the account
    return list(live.order_by("pk"))


def family_scan_account(*, account_id: str, force: bool = False) -> ScanOutcome:
    """Look at one source account for its families' new versions: one ReadImages (per page)."""
    account = CloudAccount.objects.select_related("team").filter(public_id=account_id).first()
    if account is None:
        return ScanOutcome()
    families = _claim(account, timezone.now(), force=force)
    if not families:
        return ScanOutcome()
    # Every family of the account by tag: the answer can be narrowed to those keys.
    tag_keys = {f.tag_key for f in families} if all(f.match == Family.Match.TAG for f in families) else set()
    try:
        creds = credentials_for(account, purpose="find family versions")
        images = outscale.list_own_images(creds=creds, account_id=account.account_id, tag_keys=tag_keys)
    except (outscale.CloudError, keys.KeysDoNotOpen) as exc:
        reason = getattr(exc, "user_message", None) or "the stored keys would not open"
        error = SCAN_FAILED.format(label=account.label, reason=reason)[:500]
        Family.objects.filter(pk__in=[f.pk for f in families]).update(scan_error=error)
        logger.warning("Family scan of account %s failed: %s", account.public_id, reason)
        return ScanOutcome(scanned=True, error=error)
    outcome = ScanOutcome(scanned=True)
    for family in families:
        matching = [image for image in images if family_matches(family, image)]
        outcome.found += family_versions_record(family_id=family.pk, images=matching)
    Family.objects.filter(pk__in=[f.pk for f in families]).exclude(scan_error="").update(scan_error="")
    return outcome


def family_versions_record(*, family_id: int, images) -> list[FamilyVersion]:
    """Record the images the family does not have yet as its next versions, oldest first: once,
    however many scans see them at the same time (the family's row is locked while numbering)."""
    # Most looks find nothing new: no lock, no transaction for those.
    if not {i.image_id for i in images} - set(FamilyVersion.objects.filter(family_id=family_id)
                                              .values_list("image_id", flat=True)):
        return []
    with recorder.atomic():
        family = Family.objects.select_for_update().select_related("team", "source_account") \
            .filter(pk=family_id, archived_at__isnull=True).first()
        if family is None:
            return []
        # Read under the lock: a scan that numbered versions meanwhile has committed them.
        known = set(FamilyVersion.objects.filter(family=family).values_list("image_id", flat=True))
        new = sorted({i.image_id: i for i in images if i.image_id not in known}.values(),
                     key=lambda i: (i.creation_date or "", i.image_id))
        if not new:
            return []
        number = (FamilyVersion.objects.filter(family=family).aggregate(n=Max("number"))["n"] or 0)
        versions = []
        for image in new:
            number += 1
            version = FamilyVersion.objects.create(family=family, number=number, image_id=image.image_id,
                                                   image_name=image.name[:255], source_created_at=_when(image))
            record(action="family_version.found", team=family.team, target=version,
                   details={"family": family.name, "number": number, "image_id": image.image_id,
                            "image_name": image.name, "source_account_id": family.source_account.account_id,
                            "source_region": family.source_account.region})
            scheduling.enqueue("distribution.jobs.releases.release_job", str(version.public_id),
                               job_id=f"family-version-release-{version.public_id}")
            versions.append(version)
    return versions


def _when(image):
    try:
        return parse_datetime(image.creation_date or "")
    except ValueError:  # well formed but not a date: the cloud's own text, not worth failing the scan for
        return None


def family_scan_now(*, access: TeamAccess, family: Family) -> ScanOutcome:
    """A person of the source team looks now (the page's "Scan now"; rate-limited like image lists)."""
    require(access, Capability.REQUEST_SHARE, target=family)
    if family.archived_at is not None:
        return ScanOutcome(error=ARCHIVED.format(name=family.name))
    account = family.source_account
    problem = "it is retired" if account.is_retired else "" if account.is_valid else "its keys are not validated"
    if problem:
        return ScanOutcome(error=SOURCE_NOT_READY.format(label=account.label, reason=problem))
    return family_scan_account(account_id=str(account.public_id), force=True)
