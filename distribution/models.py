"""Families, versions, subscriptions, standing approvals, groups, the inventory and retention.

Exactly-once rules live in constraints here: one version per (family, image), one automatic share
per version, one active subscription per (family, team), one inventory row per (account, image), one
delete per copy.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import CloudAccount, Team
from outscale.regions import REGION_CHOICES
from transfers.models import Recipient, Share

FAMILY_TAG = "omiportal:family"  # on every copy of a family's version: the family's name
LATEST_TAG = "omiportal:latest"  # on the newest copy of a family in each account: the family's name


class Family(models.Model):
    """A source team's line of images: the versions of one golden image in one source account."""

    class Match(models.TextChoices):
        NAME = "name", "Image name pattern"
        TAG = "tag", "Tag on the image"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="families")
    source_account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="families")
    # Also the value of the family and latest tags in recipient accounts: letters, digits, . _ -
    name = models.CharField(max_length=64)
    description = models.CharField(max_length=255, blank=True)
    match = models.CharField(max_length=8, choices=Match.choices)
    name_pattern = models.CharField(max_length=128, blank=True, help_text="e.g. golden-web-* (shell-style).")
    tag_key = models.CharField(max_length=128, blank=True)
    tag_value = models.CharField(max_length=255, blank=True)
    # The copies' names: "{family}-{version}" by default, the version being the family's own number.
    copy_name_template = models.CharField(max_length=128, default="{family}-v{number}")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    archived_at = models.DateTimeField(null=True, blank=True)
    last_scanned_at = models.DateTimeField(null=True, blank=True)
    # Why the last look at the source account found nothing (a cloud error, keys refused); "" when it worked.
    scan_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [
            # Site-wide: the name is the value of the family and latest tags in every recipient account,
            # which may receive families of several teams.
            models.UniqueConstraint(fields=["name"], name="family_unique_name"),
            models.CheckConstraint(condition=(Q(match="name") & ~Q(name_pattern=""))
                                   | (Q(match="tag") & ~Q(tag_key="")), name="family_match_complete"),
        ]

    def __str__(self):
        return self.name


class FamilyVersion(models.Model):
    """One available image of a family, found by a sweep, numbered in the order found."""

    class State(models.TextChoices):
        FOUND = "found", "Found"
        SHARED = "shared", "Shared under a standing approval"
        WAITING = "waiting", "Waiting for a standing approval"
        SKIPPED = "skipped", "Not shared"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    family = models.ForeignKey(Family, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    image_id = models.CharField(max_length=32)
    image_name = models.CharField(max_length=255)
    source_created_at = models.DateTimeField(null=True, blank=True)
    found_at = models.DateTimeField(default=timezone.now)
    # Set by the source team: recipient teams' retention may delete copies after it.
    end_of_life = models.DateField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.FOUND)
    state_message = models.CharField(max_length=500, blank=True)
    # The share made for it, and the standing approval it was made under.
    share = models.OneToOneField(Share, null=True, blank=True, on_delete=models.PROTECT, related_name="family_version")
    approval = models.ForeignKey("StandingApproval", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="versions")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["family", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["family", "image_id"], name="familyversion_once_per_image"),
            models.UniqueConstraint(fields=["family", "number"], name="familyversion_unique_number"),
        ]

    def __str__(self):
        return f"{self.family.name} v{self.number} ({self.image_id})"


class Subscription(models.Model):
    """A recipient team asks for every version of a family in some of its accounts."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    family = models.ForeignKey(Family, on_delete=models.PROTECT, related_name="subscriptions")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="subscriptions")
    accounts = models.ManyToManyField(CloudAccount, related_name="subscriptions")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # A change to its accounts is recorded here: a standing approval signed before it no longer covers it.
    changed_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["family", "team__name"]
        constraints = [models.UniqueConstraint(fields=["family", "team"], condition=Q(ended_at__isnull=True),
                                               name="subscription_one_active_per_team")]

    def __str__(self):
        return f"{self.team} subscribes {self.family}"


class RecipientGroup(models.Model):
    """A named set of recipient accounts across teams and Regions; an account joins only with the
    consent of its own team."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="recipient_groups")
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="recipientgroup_unique_team_name")]

    def __str__(self):
        return self.name


class GroupMember(models.Model):
    class State(models.TextChoices):
        INVITED = "invited", "Invited"
        JOINED = "joined", "Joined"
        DECLINED = "declined", "Declined"
        LEFT = "left", "Left"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    group = models.ForeignKey(RecipientGroup, on_delete=models.CASCADE, related_name="members")
    account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="group_memberships")
    state = models.CharField(max_length=16, choices=State.choices, default=State.INVITED)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    invited_at = models.DateTimeField(default=timezone.now)
    # Someone of the account's own team (an admin or approver) said yes or no.
    answered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["group", "account__label"]
        constraints = [models.UniqueConstraint(fields=["group", "account"], name="groupmember_once")]

    def __str__(self):
        return f"{self.account} in {self.group} ({self.state})"


class StandingApproval(models.Model):
    """An approver's signature on a family's automatic shares: the exact recipient accounts (their
    real account ids and Regions), an expiry and a maximum number of versions. Whoever set up the
    family or a subscription it covers cannot sign it."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        EXHAUSTED = "exhausted", "All its versions used"
        STOPPED = "stopped", "Stopped"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    family = models.ForeignKey(Family, on_delete=models.PROTECT, related_name="standing_approvals")
    # Resolved at signing when the approval names a group: later joiners are not covered.
    group = models.ForeignKey(RecipientGroup, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    max_versions = models.PositiveSmallIntegerField()
    versions_used = models.PositiveSmallIntegerField(default=0)
    # What the signer saw: family, source account (id, Region), recipients (ids, Regions), expiry, maximum.
    digest = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    stopped_reason = models.CharField(max_length=300, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")

    class Meta:
        ordering = ["-signed_at"]
        constraints = [
            models.CheckConstraint(condition=Q(versions_used__lte=F("max_versions")),
                                   name="standingapproval_within_max"),
            # One active approval per family at a time: a new one stops the old first.
            models.UniqueConstraint(fields=["family"], condition=Q(state="active"),
                                    name="standingapproval_one_active_per_family"),
        ]

    def __str__(self):
        return f"standing approval {self.pk} of {self.family}"


class StandingRecipient(models.Model):
    """One account a standing approval covers, bound as signed."""

    approval = models.ForeignKey(StandingApproval, on_delete=models.CASCADE, related_name="recipients")
    account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="+")
    bound_account_id = models.CharField(max_length=32)
    bound_region = models.CharField(max_length=32, choices=REGION_CHOICES)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["approval", "account"], name="standingrecipient_once")]

    def __str__(self):
        return f"{self.account} under {self.approval}"


class InventoryEntry(models.Model):
    """A copy the portal made (or an image tagged by it), as last confirmed in its account."""

    class CloudState(models.TextChoices):
        AVAILABLE = "available", "Available"
        PENDING = "pending", "Being made"
        FAILED = "failed", "Failed in the cloud"
        DELETED = "deleted", "Deleted in the cloud"
        UNKNOWN = "unknown", "Not checked yet"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="inventory")
    account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="inventory")
    image_id = models.CharField(max_length=32)
    image_name = models.CharField(max_length=255, blank=True)
    source_image_id = models.CharField(max_length=32, blank=True)
    # The import that made it; none for an orphan (tagged by the portal, unknown to it).
    recipient = models.OneToOneField(Recipient, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="inventory")
    family = models.ForeignKey(Family, null=True, blank=True, on_delete=models.PROTECT, related_name="copies")
    version = models.ForeignKey(FamilyVersion, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="copies")
    cloud_state = models.CharField(max_length=16, choices=CloudState.choices, default=CloudState.UNKNOWN)
    orphan = models.BooleanField(default=False)
    pinned = models.BooleanField(default=False)  # tagged omiportal:pinned in the cloud: retention never proposes it
    is_latest = models.BooleanField(default=False)  # carries the family's latest tag
    # When the family (and, if newest, latest) tags were put on it: null while the tagging job is owed.
    family_tagged_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen_at"]
        indexes = [models.Index(fields=["team", "-first_seen_at", "-id"], name="inventory_team_seen"),
                   models.Index(fields=["family", "account"], name="inventory_family_account"),
                   models.Index(fields=["account", "cloud_state"], name="inventory_account_state"),
                   # The copies whose tagging job is still owed: the sweep's safety net reads only those.
                   models.Index(fields=["first_seen_at"], name="inventory_tag_owed",
                                condition=Q(family__isnull=False, family_tagged_at__isnull=True))]
        constraints = [models.UniqueConstraint(fields=["account", "image_id"], name="inventoryentry_once")]

    def __str__(self):
        return f"{self.image_id} in {self.account}"


class InventoryCheck(models.Model):
    """When a recipient account's copies were last confirmed in the cloud, and when next: the
    refresh's schedule lives in the database (Redis only carries the job), one lease at a time."""

    account = models.OneToOneField(CloudAccount, on_delete=models.CASCADE, related_name="inventory_check")
    due_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    images_seen = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)  # why the last refresh could not read the account

    class Meta:
        indexes = [models.Index(fields=["due_at"], name="inventorycheck_due")]

    def __str__(self):
        return f"inventory check of {self.account}"


class RetentionPolicy(models.Model):
    """A recipient team's rule for a family's copies in its accounts."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="retention_policies")
    family = models.ForeignKey(Family, on_delete=models.PROTECT, related_name="retention_policies")
    keep_last = models.PositiveSmallIntegerField(null=True, blank=True)
    delete_after_end_of_life = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # Who last set its rules (created or changed them), and when: never the one who confirms a run (four eyes).
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "family"], name="retentionpolicy_once"),
            models.CheckConstraint(condition=Q(keep_last__isnull=True) | Q(keep_last__gte=1),
                                   name="retentionpolicy_keeps_one"),
        ]

    def __str__(self):
        return f"retention of {self.family} for {self.team}"


class RetentionRun(models.Model):
    """A proposal of copies to delete; nothing is deleted until an approver of the team confirms it."""

    class State(models.TextChoices):
        PROPOSED = "proposed", "Waiting for confirmation"
        CONFIRMED = "confirmed", "Deleting"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    policy = models.ForeignKey(RetentionPolicy, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PROPOSED)
    proposed_at = models.DateTimeField(default=timezone.now)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")  # None: the reconciler's sweep
    cancelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-proposed_at"]
        constraints = [models.UniqueConstraint(fields=["policy"], condition=Q(state__in=["proposed", "confirmed"]),
                                               name="retentionrun_one_open_per_policy")]

    def __str__(self):
        return f"retention run {self.pk} ({self.state})"


class RetentionItem(models.Model):
    class State(models.TextChoices):
        PROPOSED = "proposed", "Proposed"
        DELETING = "deleting", "Being deleted"
        DELETED = "deleted", "Deleted"
        GONE = "gone", "Already gone"
        KEPT = "kept", "Kept (pinned or in use since)"
        FAILED = "failed", "Could not be deleted"

    run = models.ForeignKey(RetentionRun, on_delete=models.CASCADE, related_name="items")
    entry = models.ForeignKey(InventoryEntry, on_delete=models.PROTECT, related_name="retention_items")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PROPOSED)
    reason = models.CharField(max_length=300, blank=True)  # why it was proposed
    message = models.CharField(max_length=500, blank=True)
    cloud_request_ids = models.JSONField(default=list, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The lease of the job that claimed it (proposed -> deleting): the reconciler resumes a deleting
    # item only once it ran out, or at once when it is None (a call the cloud throttled).
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["state", "claimed_at"], name="retentionitem_state_claimed")]
        constraints = [
            models.UniqueConstraint(fields=["run", "entry"], name="retentionitem_once_per_run"),
            # Exactly one delete per copy, whatever the runs: a second item for it can only be proposed.
            models.UniqueConstraint(fields=["entry"], condition=Q(state__in=["deleting", "deleted"]),
                                    name="retentionitem_one_delete_per_copy"),
        ]

    def __str__(self):
        return f"{self.entry} ({self.state})"
