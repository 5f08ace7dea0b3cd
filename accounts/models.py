"""People, teams (the tenants), memberships and the team's OUTSCALE accounts."""

import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from outscale.regions import REGION_CHOICES


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email, password, **extra):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Signs in with an email address."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May sign in to the Django admin.")
    # Site-wide, read-only: sees every team's audit trail, changes nothing.
    is_compliance_officer = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        ordering = ["email"]

    def __str__(self):
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.full_name or self.email

    def get_full_name(self):
        return self.display_name

    def get_short_name(self):
        return self.display_name


class Team(models.Model):
    """A tenant. Everything team-owned hangs off one of these."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=80, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Team settings (admins change them on the team settings page).
    # On by default: an account is the team's "own" only by an admin's word, so without an
    # approver one admin could copy to any outside account by registering it first.
    require_approval_for_own_accounts = models.BooleanField(
        default=True, help_text="Also require an approver when copying between this team's own accounts.")
    request_expiry_days = models.PositiveSmallIntegerField(
        default=7, help_text="Share requests nobody decided on expire after this many days.")
    approval_lifetime_days = models.PositiveSmallIntegerField(
        default=30, help_text="An approval allows exports for this many days; a later re-export needs a new approval.")
    auto_accept_incoming = models.BooleanField(
        default=False, help_text="Import images shared with this team as soon as they are ready.")
    cleanup_exports = models.BooleanField(
        default=True, help_text="Delete export files from the bucket once every import from them has ended.")
    require_two_factor_for_privileged = models.BooleanField(
        default=False, help_text="Approvers and admins must pass two-factor sign-in before approving or managing.")

    class DiskFormat(models.TextChoices):
        QCOW2 = "qcow2", "qcow2 (smaller files)"
        RAW = "raw", "raw (no conversion on import)"

    export_disk_format = models.CharField(
        max_length=8, choices=DiskFormat.choices, default=DiskFormat.QCOW2,
        help_text="The disk format of this team's exports (OUTSCALE's DiskImageFormat).")
    # Tag keys of a source image carried to its copies (the portal's provenance tags are always set).
    copy_tag_allowlist = models.JSONField(
        default=list, blank=True, help_text="Tag keys of a source image that its copies carry too.")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Role(models.TextChoices):
    MEMBER = "member", "Member"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"
    AUDITOR = "auditor", "Auditor"


class Membership(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)
    # Who gave this person their current role, and when: an approver whose role came from the
    # requester, or after the request was made, may not approve it (no sock puppets).
    role_granted_by = models.ForeignKey("User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    role_granted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__name", "user__email"]
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="membership_unique_user_team")]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"


bucket_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
    "Use 3 to 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


class CloudAccount(models.Model):
    """One OUTSCALE account in one Region, with its keys sealed by the vault."""

    class Validation(models.TextChoices):
        PENDING = "pending", "Not checked yet"
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="cloud_accounts")
    label = models.CharField(max_length=80)
    region = models.CharField(max_length=32, choices=REGION_CHOICES)
    # Sealed by accounts.vault; bound to (team, public_id, field) so a copied
    # ciphertext does not open anywhere else.
    access_key_sealed = models.TextField()
    secret_key_sealed = models.TextField()
    access_key_hint = models.CharField(max_length=32, help_text="Masked access key id, safe to display.")
    account_id = models.CharField(max_length=32, blank=True, help_text="Learned from the cloud (ReadAccounts).")
    export_bucket = models.CharField(max_length=63, validators=[bucket_name_validator])
    accepts_incoming_shares = models.BooleanField(default=False)
    validation_status = models.CharField(max_length=16, choices=Validation.choices, default=Validation.PENDING)
    validation_message = models.CharField(max_length=500, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    # An account is the team's "own" only once a second admin (or an approver) confirmed it: until
    # then copies to it are treated like copies to another team's account.
    registered_by = models.ForeignKey("User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ownership_confirmed_by = models.ForeignKey("User", null=True, blank=True, on_delete=models.SET_NULL,
                                               related_name="+")
    ownership_confirmed_at = models.DateTimeField(null=True, blank=True)
    # A used account cannot be deleted (its shares, exports and imports keep pointing at it): it
    # is retired instead, its sealed keys wiped, and no picker or directory offers it again.
    retired_at = models.DateTimeField(null=True, blank=True)
    # What the last pre-flight check found (export bucket exists and is the account's own, the keys
    # can use OOS, image quota headroom), each with a message; run at validation and before approval.
    preflight = models.JSONField(default=dict, blank=True)
    preflight_checked_at = models.DateTimeField(null=True, blank=True)
    retired_by = models.ForeignKey("User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__name", "label"]
        constraints = [models.UniqueConstraint(fields=["team", "label"], name="cloudaccount_unique_team_label")]

    def __str__(self):
        return f"{self.label} ({self.region})"

    @property
    def is_valid(self) -> bool:
        return self.validation_status == self.Validation.VALID

    @property
    def ownership_confirmed(self) -> bool:
        return self.ownership_confirmed_at is not None

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None
