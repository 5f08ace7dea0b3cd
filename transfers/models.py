"""Shares (what was asked and decided), exports (the cloud work on the source side) and
recipients (one import target each). The database is the truth about every transfer:
jobs re-read these rows, and a reconciler restarts any step whose next look is overdue.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import CloudAccount, Team
from outscale.regions import REGION_CHOICES


class Share(models.Model):
    """A request to copy one source OMI to one or more recipient accounts."""

    class State(models.TextChoices):
        REQUESTED = "requested", "Waiting for approval"
        APPROVED = "approved", "Approved"
        EXPORTING = "exporting", "Exporting"
        READY = "ready", "Ready for recipients"
        IMPORTING = "importing", "Importing"
        COMPLETED = "completed", "Completed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    ACTIVE_STATES = (State.APPROVED, State.EXPORTING, State.READY, State.IMPORTING)
    FINAL_STATES = (State.COMPLETED, State.REJECTED, State.CANCELLED, State.FAILED, State.EXPIRED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="shares")
    source_account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="shares")
    source_image_id = models.CharField(max_length=32)
    source_image_name = models.CharField(max_length=255)
    source_image_relation = models.CharField(max_length=16)  # owned | shared | public
    copy_name = models.CharField(max_length=128)
    description = models.CharField(max_length=255, blank=True)
    reason = models.TextField(max_length=2000)
    licence_confirmed_at = models.DateTimeField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(default=timezone.now)
    approval_required = models.BooleanField()
    approval_deadline = models.DateTimeField(null=True, blank=True)
    # What the approver saw: a digest of source, image, names and recipients.
    digest = models.CharField(max_length=64)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(max_length=2000, blank=True)
    # An approval allows exports until then (the team's approval lifetime); a re-export after it
    # needs a new approval.
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    # The source account's export bucket at request time: checked to belong to the source account,
    # shown to the approver and bound in the digest. Exports use this, not the account's current one.
    export_bucket = models.CharField(max_length=63, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED)
    state_message = models.CharField(max_length=500, blank=True)
    export = models.ForeignKey("Export", null=True, blank=True, on_delete=models.PROTECT, related_name="shares")
    # "Launch permission only": the same-Region recipients get a grant and no copy; it stays until the
    # source team revokes it.
    launch_permission_only = models.BooleanField(default=False)
    # The export's disk format (the team's choice at request time, bound in the digest).
    disk_format = models.CharField(max_length=8, blank=True)
    # What ReadImages said of the source at request time, shown to the approver and compared with each
    # copy: size_gib, snapshots, product_codes, architecture, boot_mode, root_device_type, tags.
    source_facts = models.JSONField(default=dict, blank=True)
    # Checks made before approval (each recipient's copy name free in its account, ...): what they found.
    preflight = models.JSONField(default=dict, blank=True)
    preflight_checked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["team", "state"]), models.Index(fields=["state", "approval_deadline"]),
                   # The team's pages: the share list (newest first), approvals (oldest first, by state)
                   # and the dashboard's recent results (last updated first).
                   models.Index(fields=["team", "-requested_at"], name="share_team_requested"),
                   models.Index(fields=["team", "state", "requested_at"], name="share_team_state_requested"),
                   models.Index(fields=["team", "-updated_at"], name="share_team_updated")]
        constraints = [
            # Four eyes: whoever decides is never whoever asked.
            models.CheckConstraint(condition=Q(decided_by__isnull=True) | ~Q(decided_by=F("requested_by")),
                                   name="share_decider_is_not_requester"),
        ]

    def __str__(self):
        return f"{self.source_image_name} → {self.copy_name}"

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES


class Export(models.Model):
    """One export of one OMI from one account. Several shares may use it."""

    class State(models.TextChoices):
        COPYING = "copying", "Copying into the account"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Exporting"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    IN_FLIGHT = (State.COPYING, State.STARTING, State.RUNNING)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="exports")
    source_image_id = models.CharField(max_length=32)
    copy_image_id = models.CharField(max_length=32, blank=True)  # set when copy-first was needed
    task_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=16, choices=State.choices)
    progress = models.PositiveSmallIntegerField(default=0)
    state_message = models.CharField(max_length=500, blank=True)
    bucket = models.CharField(max_length=63)
    prefix = models.CharField(max_length=255)
    manifest_key = models.CharField(max_length=1024, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    manifest_deadline = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_interval = models.FloatField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    # Runs of this export's steps (copy, start, looks) that ended in an error other than an answer
    # from OUTSCALE (a vault or audit error, a bug): at OMIPORTAL_STEP_MAX_ATTEMPTS the export fails.
    step_errors = models.PositiveSmallIntegerField(default=0)
    # Set, by a conditional update, before any object is deleted and only while no share uses the
    # export: from then on no share may reuse it (export_begin skips it), and cleaned_at follows
    # once the objects are gone. Reuse and this claim lock the row, so only one of them wins.
    cleanup_claimed_at = models.DateTimeField(null=True, blank=True)
    cleaned_at = models.DateTimeField(null=True, blank=True)
    # When the portal was done with its copy-first image (copy_image_id, the only image it ever
    # deletes) once the export ended: deleted, found gone, or refused by the cloud for good (the
    # trail says which: export.copy_deleted or export.copy_delete_failed).
    copy_cleaned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["account", "state"]), models.Index(fields=["state", "next_poll_at"])]

    def __str__(self):
        return f"export of {self.source_image_id} ({self.state})"

    @property
    def exported_image_id(self) -> str:
        return self.copy_image_id or self.source_image_id


class Recipient(models.Model):
    """One import target: an account of a team in the portal, or an external account that only
    receives the link. A pasted-link import is a Recipient without a share."""

    class Kind(models.TextChoices):
        TEAM = "team", "Portal account"
        EXTERNAL = "external", "External account (link only)"
        LINK = "link", "Import from a pasted link"

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting for the export"
        OFFERED = "offered", "Offered"
        IMPORTING = "importing", "Importing"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        DECLINED = "declined", "Declined"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    class Method(models.TextChoices):
        EXPORT = "export", "Export, then import from the manifest"
        LAUNCH_PERMISSION = "launch_permission", "Copy by launch permission (same Region)"
        DIRECT = "direct", "Direct copy of an image it can already see"
        PERMISSION_ONLY = "permission_only", "Launch permission only (no copy)"
        OBJECT_ACL = "object_acl", "Read grant on the export's objects (no bearer URL)"
        LINK = "link", "Pre-signed manifest link"

    # Copied by the recipient's keys from the source image itself (CreateImage{SourceImageId}): no export.
    COPY_METHODS = (Method.LAUNCH_PERMISSION, Method.DIRECT)
    # Served by a launch permission the source account grants first (transfers/services/grants.py).
    GRANT_METHODS = (Method.LAUNCH_PERMISSION, Method.PERMISSION_ONLY)
    # Served by the share's export: its manifest, by import, link or object grant.
    EXPORT_METHODS = (Method.EXPORT, Method.OBJECT_ACL, Method.LINK)

    OPEN_STATES = (State.WAITING, State.OFFERED, State.IMPORTING)
    FINAL_STATES = (State.COMPLETED, State.FAILED, State.DECLINED, State.EXPIRED, State.CANCELLED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    share = models.ForeignKey(Share, null=True, blank=True, on_delete=models.CASCADE, related_name="recipients")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="incoming")
    target_account = models.ForeignKey(CloudAccount, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="incoming")
    external_account_id = models.CharField(max_length=12, blank=True)
    external_region = models.CharField(max_length=32, blank=True, choices=REGION_CHOICES)
    # What the approver approved for a portal account: its real OUTSCALE account id and Region at
    # request time (bound in the digest). An import runs only while the account still matches.
    bound_account_id = models.CharField(max_length=32, blank=True)
    bound_region = models.CharField(max_length=32, blank=True, choices=REGION_CHOICES)
    # A pasted link (kind=link) is a bearer secret: sealed by the vault, wiped once the import is created.
    link_sealed = models.TextField(blank=True)
    link_fingerprint = models.CharField(max_length=64, blank=True)
    link_expires_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    state_message = models.CharField(max_length=500, blank=True)
    # How this recipient gets its copy, chosen at request time (bound in the digest), and why.
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.EXPORT)
    method_reason = models.CharField(max_length=300, blank=True)
    # Differences between the copy and its source (product codes, architecture, boot mode, root
    # device), each a sentence: shown as warnings once the copy exists.
    warnings = models.JSONField(default=list, blank=True)
    # Pre-flight results for this recipient (its copy name free in its account, checked with its
    # own keys in its team's job).
    preflight = models.JSONField(default=dict, blank=True)
    # An external recipient served by an object ACL on the export's objects: when the grant was put
    # and when clean-up removed it.
    acl_granted_at = models.DateTimeField(null=True, blank=True)
    acl_removed_at = models.DateTimeField(null=True, blank=True)
    # Its OOS user ID (the S3 canonical id OUTSCALE's object ACLs name a grantee by), given at request
    # time and bound in the digest; only an external account of the source's Region that gave one is
    # served by an object ACL. The grant checks that OOS reports it as external_account_id's.
    external_oos_user_id = models.CharField(max_length=128, blank=True)
    image_name = models.CharField(max_length=128, blank=True)
    image_id = models.CharField(max_length=32, blank=True)
    # Its team said yes before it was offered (a subscription to a family, in the distribution app):
    # its import starts as soon as it is offered, as for a team that accepts everything.
    accepted_in_advance = models.BooleanField(default=False)
    attempt = models.PositiveSmallIntegerField(default=0)  # imports tried, retries included
    start_tries = models.PositiveSmallIntegerField(default=0)  # CreateImage calls put off by throttling
    # As Export.step_errors, for this import's start and looks; a person's retry starts it again at 0.
    step_errors = models.PositiveSmallIntegerField(default=0)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decline_reason = models.CharField(max_length=500, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_interval = models.FloatField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["team", "state"]), models.Index(fields=["state", "next_poll_at"]),
                   models.Index(fields=["target_account", "state"]),
                   # A share's importing recipient whose look is furthest off (share_state._still_importing).
                   models.Index(fields=["share", "state", "next_poll_at"], name="recipient_share_state_poll"),
                   # The inbox's past copies and the dashboard's weekly chart: last updated first.
                   models.Index(fields=["team", "-updated_at"], name="recipient_team_updated"),
                   # The API's incoming list (cursor pages, newest first).
                   models.Index(fields=["team", "-created_at", "-id"], name="recipient_team_created")]

    def __str__(self):
        return self.label

    @property
    def label(self) -> str:
        if self.kind == self.Kind.EXTERNAL:
            return f"external account {self.external_account_id} ({self.external_region})"
        if self.target_account_id:
            return f"{self.target_account.label} ({self.target_account.region}) of {self.team.name}"
        return "recipient"

    @property
    def region(self) -> str:
        return self.external_region if self.kind == self.Kind.EXTERNAL else self.target_account.region

    def get_state_display(self) -> str:
        """A recipient copied in the source's Region waits for a launch permission, not an export."""
        if self.state == self.State.WAITING and self.method in _WAITING_FOR:
            return _WAITING_FOR[self.method]
        return self.State(self.state).label


_WAITING_FOR = {
    Recipient.Method.LAUNCH_PERMISSION: "Waiting for the launch permission",
    Recipient.Method.PERMISSION_ONLY: "Waiting for the launch permission",
    Recipient.Method.DIRECT: "Waiting to copy",
}


class LaunchGrant(models.Model):
    """Launch permission on a share's source image, given by the source account to one OUTSCALE
    account id (a same-Region recipient). Made once and removed once, each by a conditional update:
    removed as soon as that recipient's copy has ended, or the share has; a grant "launch
    permission only" stays until the source team revokes it. The reconciler removes any grant left
    by a crash."""

    class State(models.TextChoices):
        GRANTING = "granting", "Being granted"
        GRANTED = "granted", "Granted"
        REVOKING = "revoking", "Being removed"
        REVOKED = "revoked", "Removed"
        FAILED = "failed", "Could not be granted"

    OPEN_STATES = (State.GRANTING, State.GRANTED, State.REVOKING)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    share = models.ForeignKey(Share, on_delete=models.PROTECT, related_name="grants")
    account = models.ForeignKey(CloudAccount, on_delete=models.PROTECT, related_name="launch_grants")
    image_id = models.CharField(max_length=32)
    grantee_account_id = models.CharField(max_length=32)
    keep = models.BooleanField(default=False)  # launch permission only: no copy, stays until revoked
    state = models.CharField(max_length=16, choices=State.choices, default=State.GRANTING)
    state_message = models.CharField(max_length=500, blank=True)
    granted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    next_poll_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    step_errors = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["account", "state"]), models.Index(fields=["state", "next_poll_at"])]
        constraints = [
            # Exactly once: one grant per share and grantee account.
            models.UniqueConstraint(fields=["share", "grantee_account_id"], name="launchgrant_once_per_share"),
        ]

    def __str__(self):
        return f"launch permission on {self.image_id} for {self.grantee_account_id} ({self.state})"
