"""Writes for teams, memberships and cloud accounts.

Each service checks the rule it owns, writes, and records its audit event in
the same transaction: if the audit write fails, nothing changes.
"""

from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.debug import sensitive_variables

import outscale
from accounts import dependents, preflight, vault
from accounts.access import require
from accounts.keys import credentials_for
from accounts.models import CloudAccount, Membership, Role, Team, User
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from accounts.tag_keys import clean_tag_keys
from audit import recorder
from audit.recorder import record

LAST_ADMIN_MESSAGE = "A team needs at least one admin: make someone else admin first."
DUPLICATE_MEMBER_MESSAGE = "{email} is already a member of {team}."
ALREADY_HAS_PASSWORD_MESSAGE = (
    "{email} has already chosen a password; if it is forgotten, they can reset it from the sign-in page."
)
DUPLICATE_TEAM_MESSAGE = "A team with this name already exists."
DUPLICATE_LABEL_MESSAGE = "This team already has a cloud account called {label}: choose another label."
OWN_REGISTRATION_MESSAGE = ("You registered {label}, so another admin or approver of the team must confirm that "
                            "it is the team's own.")
CONFIRMER_GRANTED_BY_REGISTRANT_MESSAGE = ("{registrant} gave you your role in this team, so you cannot confirm an "
                                           "account they registered: another admin or approver must.")
CONFIRMER_GRANTED_AFTER_MESSAGE = ("You got your role in this team after {label} was registered, so you cannot "
                                   "confirm it: an admin or approver who held the role before must.")
OWNERSHIP_NOT_VALIDATED_MESSAGE = ("Check {label}'s keys first: the confirmation is for the OUTSCALE account "
                                   "they belong to.")
OWNERSHIP_ALREADY_CONFIRMED_MESSAGE = "{label} is already confirmed as the team's own."
ACCOUNT_IN_FLIGHT_MESSAGE = (
    "{label} has transfers in flight ({count}): its keys and Region cannot change until they end or are cancelled, "
    "since their approval bound this OUTSCALE account and Region."
)
ACCOUNT_HAS_HISTORY_MESSAGE = ("{label} was used by shares or imports, so the portal keeps it for their history: "
                               "retire it instead (its keys are wiped and nobody can pick it again).")
ACCOUNT_RETIRE_IN_FLIGHT_MESSAGE = ("{label} has transfers in flight ({count}): it can be retired once they end or are "
                                    "cancelled.")
ACCOUNT_RETIRED_MESSAGE = "{label} is retired: its keys were wiped, and it can no longer be used or changed."


class TeamError(ValidationError):
    """A team or membership rule was broken; the message is shown on the form."""


# --- Teams ---------------------------------------------------------------------


@transaction.atomic
def team_create(*, creator: User, name: str) -> Team:
    if Team.objects.filter(name__iexact=name).exists():
        raise TeamError(DUPLICATE_TEAM_MESSAGE)
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=creator, role=Role.ADMIN)
    record(action="team.created", actor=creator, team=team, target=team, details={"name": name})
    return team


# --- Memberships -------------------------------------------------------------------


def _invite(*, user: User, team: Team, site_url: str) -> None:
    """Mail a new user a link to choose a password (Django's reset token)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    link = site_url.rstrip("/") + reverse("password_reset_confirm", kwargs={"uidb64": uid, "token": token})
    send_mail(
        subject=f"You were added to {team.name} on OMI Portal",
        message=f"You were added to the team {team.name}.\n\nChoose your password here:\n{link}\n",
        from_email=None,
        recipient_list=[user.email],
    )


@transaction.atomic
def membership_add(*, access: TeamAccess, email: str, role: str, site_url: str = "http://127.0.0.1:8000") -> Membership:
    require(access, Capability.MANAGE_TEAM)
    email = User.objects.normalize_email(email).lower()
    user = User.objects.filter(email__iexact=email).first()
    invited = user is None
    if invited:
        user = User.objects.create_user(email=email, password=None)
    elif Membership.objects.filter(team=access.team, user=user).exists():
        raise TeamError(DUPLICATE_MEMBER_MESSAGE.format(email=email, team=access.team.name))
    membership = Membership.objects.create(team=access.team, user=user, role=role, role_granted_by=access.user,
                                           role_granted_at=timezone.now())
    record(action="membership.added", actor=access.user, team=access.team, target=membership,
           details={"email": email, "role": role, "invited": invited})
    if invited:
        transaction.on_commit(lambda: _invite(user=user, team=access.team, site_url=site_url))
    return membership


def _lock_admins(team: Team) -> list[int]:
    # Locking the team's admin rows makes two concurrent demotions queue up,
    # so they cannot both see "another admin remains".
    return list(
        Membership.objects.select_for_update().filter(team=team, role=Role.ADMIN).values_list("id", flat=True)
    )


@transaction.atomic
def membership_change_role(*, access: TeamAccess, membership: Membership, role: str) -> Membership:
    require(access, Capability.MANAGE_TEAM, target=membership)
    admins = _lock_admins(access.team)
    before = Membership.objects.select_for_update().get(pk=membership.pk).role
    if before == role:
        return membership
    if before == Role.ADMIN and admins == [membership.pk]:
        raise TeamError(LAST_ADMIN_MESSAGE)
    # Who gave the role and when decide which requests this person may approve (no sock puppets),
    # so a demotion followed by a re-promotion counts from the re-promotion.
    now = timezone.now()
    Membership.objects.filter(pk=membership.pk).update(role=role, role_granted_by=access.user, role_granted_at=now)
    membership.role, membership.role_granted_by, membership.role_granted_at = role, access.user, now
    record(action="membership.role_changed", actor=access.user, team=access.team, target=membership,
           details={"email": membership.user.email, "before": before, "after": role})
    return membership


@recorder.atomic()  # the row is deleted after the event is recorded: the chain head goes last
def membership_remove(*, access: TeamAccess, membership: Membership) -> None:
    require(access, Capability.MANAGE_TEAM, target=membership)
    admins = _lock_admins(access.team)
    if admins == [membership.pk]:
        raise TeamError(LAST_ADMIN_MESSAGE)
    record(action="membership.removed", actor=access.user, team=access.team, target=membership,
           details={"email": membership.user.email, "role": membership.role})
    membership.delete()


@transaction.atomic
def membership_reinvite(*, access: TeamAccess, membership: Membership, site_url: str) -> Membership:
    """Mail a fresh invitation link to a member who never chose a password (the first expired)."""
    require(access, Capability.MANAGE_TEAM, target=membership)
    user = User.objects.get(pk=membership.user_id)
    if user.has_usable_password():
        # They have a password: a link to set another would be a way to take the account over.
        raise TeamError(ALREADY_HAS_PASSWORD_MESSAGE.format(email=user.email))
    record(action="membership.reinvited", actor=access.user, team=access.team, target=membership,
           details={"email": user.email})
    transaction.on_commit(lambda: _invite(user=user, team=access.team, site_url=site_url))
    return membership


# --- Cloud accounts --------------------------------------------------------------------


def _seal_keys(account: CloudAccount, *, access_key: str, secret_key: str) -> None:
    ids = {"team_id": account.team.public_id, "object_id": account.public_id}
    account.access_key_sealed = vault.seal(access_key, field="access_key", **ids)
    account.secret_key_sealed = vault.seal(secret_key, field="secret_key", **ids)
    account.access_key_hint = vault.mask_access_key(access_key)


# SEC-10: a crash while saving keys must not put them in Django's error report: every local is
# masked, here, in transaction.atomic's wrapper (its **kwds) and in every frame below (vault.seal).
@sensitive_variables()
@transaction.atomic
def cloud_account_create(
    *,
    access: TeamAccess,
    label: str,
    region: str,
    access_key: str,
    secret_key: str,
    export_bucket: str,
    accepts_incoming_shares: bool = False,
) -> CloudAccount:
    require(access, Capability.MANAGE_TEAM)
    if CloudAccount.objects.filter(team=access.team, label=label).exists():
        raise TeamError(DUPLICATE_LABEL_MESSAGE.format(label=label))
    account = CloudAccount(
        team=access.team,
        label=label,
        region=region,
        export_bucket=export_bucket,
        accepts_incoming_shares=accepts_incoming_shares,
        registered_by=access.user,  # who may not confirm it as the team's own
    )
    _seal_keys(account, access_key=access_key, secret_key=secret_key)
    account.full_clean()
    try:
        with transaction.atomic():
            account.save()
    except IntegrityError:
        raise TeamError(DUPLICATE_LABEL_MESSAGE.format(label=label)) from None
    record(action="cloud_account.created", actor=access.user, team=access.team, target=account,
           details={"label": label, "region": region, "export_bucket": export_bucket,
                    "accepts_incoming_shares": accepts_incoming_shares, "access_key": account.access_key_hint})
    return account


EDITABLE_FIELDS = ("label", "region", "export_bucket", "accepts_incoming_shares")


class _InFlight(Exception):
    """Keys or Region asked to change under transfers in flight (refused once rolled back)."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def _transfers_in_flight(account: CloudAccount) -> int:
    """How many transfers still depend on this account being what was approved: shares it is the
    source of that are waiting for approval or under way, imports into it not yet ended."""
    # Asked of the apps above (accounts.dependents): their states are theirs to define.
    return dependents.in_flight(account)


@sensitive_variables()  # SEC-10, as cloud_account_create
def cloud_account_update(
    *,
    access: TeamAccess,
    account: CloudAccount,
    access_key: str = "",
    secret_key: str = "",
    **changes,
) -> CloudAccount:
    """Change an account. Keys are replaced only when both are given, and neither keys nor
    Region while transfers depend on the account (an approval binds its OUTSCALE account and
    Region; the export bucket may change, since each share keeps the bucket it bound)."""
    try:
        return _cloud_account_update(access=access, account=account, access_key=access_key, secret_key=secret_key,
                                     **changes)
    except _InFlight as refused:
        # Recorded after the rollback of what it refused, so the refusal stays in the trail.
        record(action="cloud_account.changed", outcome="denied", actor=access.user, team=access.team,
               target=account, details=refused.details)
        raise TeamError(str(refused)) from None


@sensitive_variables()  # SEC-10, as cloud_account_create
@transaction.atomic
def _cloud_account_update(
    *,
    access: TeamAccess,
    account: CloudAccount,
    access_key: str = "",
    secret_key: str = "",
    **changes,
) -> CloudAccount:
    require(access, Capability.MANAGE_TEAM, target=account)
    account = CloudAccount.objects.select_for_update().get(pk=account.pk, team=access.team)
    if account.is_retired:
        raise TeamError(ACCOUNT_RETIRED_MESSAGE.format(label=account.label))
    diff = {}
    for field in EDITABLE_FIELDS:
        if field in changes and changes[field] != getattr(account, field):
            diff[field] = {"before": getattr(account, field), "after": changes[field]}
            setattr(account, field, changes[field])
    if "label" in diff and CloudAccount.objects.filter(team=access.team, label=account.label).exclude(
        pk=account.pk
    ).exists():
        raise TeamError(DUPLICATE_LABEL_MESSAGE.format(label=account.label))
    keys_replaced = bool(access_key and secret_key)
    if keys_replaced or "region" in diff:
        busy = _transfers_in_flight(account)
        if busy:
            raise _InFlight(ACCOUNT_IN_FLIGHT_MESSAGE.format(label=account.label, count=busy),
                            {"reason": "transfers_in_flight", "in_flight": busy, "keys_replaced": keys_replaced,
                             "region": diff.get("region")})
    if keys_replaced:
        _seal_keys(account, access_key=access_key, secret_key=secret_key)
    if keys_replaced or "region" in diff:
        # New keys or another Region: what we knew about the account no longer holds.
        account.validation_status = CloudAccount.Validation.PENDING
        account.validation_message = ""
        account.account_id = ""
        account.validated_at = None
        # The confirmation was for the OUTSCALE account the old keys or Region named (INS-02).
        ownership_cleared = account.ownership_confirmed
        account.ownership_confirmed_by = None
        account.ownership_confirmed_at = None
    else:
        ownership_cleared = False
    if not diff and not keys_replaced:
        return account
    if keys_replaced or diff.keys() & {"region", "export_bucket"}:
        # What the pre-flight checks found was about the old keys, Region or bucket.
        account.preflight, account.preflight_checked_at = {}, None
    account.updated_at = timezone.now()
    account.full_clean()
    account.save()
    record(action="cloud_account.changed", actor=access.user, team=access.team, target=account,
           details={"changes": diff, "keys_replaced": keys_replaced,
                    "access_key": account.access_key_hint if keys_replaced else None,
                    "ownership_confirmation_cleared": ownership_cleared})
    return account


def _ownership_refusal(access: TeamAccess, account: CloudAccount) -> tuple[str, str] | None:
    """Why this person may not confirm the account as the team's own, as (audit reason, message)."""
    if account.registered_by_id is None:
        return None  # registered before the portal kept track: any admin or approver may confirm
    if account.registered_by_id == access.user.pk:
        return "registered_by_confirmer", OWN_REGISTRATION_MESSAGE.format(label=account.label)
    # The sock-puppet rule of approvals (INS-03), for the same reason: a confirmer the registrant
    # appointed, or appointed after registering, is not a second person.
    membership = Membership.objects.get(pk=access.membership.pk)
    if membership.role_granted_by_id == account.registered_by_id:
        return "role_granted_by_registrant", CONFIRMER_GRANTED_BY_REGISTRANT_MESSAGE.format(
            registrant=account.registered_by.display_name)
    if membership.role_granted_at > account.created_at:
        return "role_granted_after_registration", CONFIRMER_GRANTED_AFTER_MESSAGE.format(label=account.label)
    return None


def cloud_account_confirm_ownership(*, access: TeamAccess, account: CloudAccount) -> CloudAccount:
    """A second admin or approver confirms that the account is the team's own (INS-02).

    Until then copies to it need an approver, whatever the team's setting. Refusals are recorded
    before any transaction opens, so they stay in the trail.
    """
    require(access, Capability.APPROVE, target=account)
    account = CloudAccount.objects.select_related("registered_by").get(pk=account.pk, team=access.team)
    refusal = _ownership_refusal(access, account)
    if refusal:
        record(action="cloud_account.ownership_confirmed", outcome="denied", actor=access.user, team=access.team,
               target=account, details={"reason": refusal[0], "account_id": account.account_id})
        raise TeamError(refusal[1])
    if not account.is_valid:
        raise TeamError(OWNERSHIP_NOT_VALIDATED_MESSAGE.format(label=account.label))
    now = timezone.now()
    with transaction.atomic():
        # Bound to the OUTSCALE account it was shown as: a re-key in between makes this a no-op.
        confirmed = CloudAccount.objects.filter(
            pk=account.pk, ownership_confirmed_at__isnull=True, account_id=account.account_id,
            region=account.region, validation_status=CloudAccount.Validation.VALID,
        ).update(ownership_confirmed_by=access.user, ownership_confirmed_at=now, updated_at=now)
        if not confirmed:
            account.refresh_from_db()
            if account.ownership_confirmed:
                raise TeamError(OWNERSHIP_ALREADY_CONFIRMED_MESSAGE.format(label=account.label))
            raise TeamError(OWNERSHIP_NOT_VALIDATED_MESSAGE.format(label=account.label))
        account.ownership_confirmed_by, account.ownership_confirmed_at = access.user, now
        record(action="cloud_account.ownership_confirmed", actor=access.user, team=access.team, target=account,
               details={"label": account.label, "account_id": account.account_id, "region": account.region,
                        "registered_by": account.registered_by.email if account.registered_by else None})
    return account


def cloud_account_has_history(account: CloudAccount) -> bool:
    """Whether shares, exports or imports point at the account: then it is retired, never deleted
    (they keep its history, and their foreign keys protect it)."""
    return CloudAccount.objects.filter(pk=account.pk).filter(dependents.used()).exists()


def cloud_account_delete(*, access: TeamAccess, account: CloudAccount) -> None:
    """Forget an account nothing ever used. A used one is retired instead (cloud_account_retire)."""
    require(access, Capability.MANAGE_TEAM, target=account)
    try:
        with transaction.atomic():
            account = CloudAccount.objects.select_for_update().get(pk=account.pk, team=access.team)
            if cloud_account_has_history(account):
                raise TeamError(ACCOUNT_HAS_HISTORY_MESSAGE.format(label=account.label))
            record(action="cloud_account.deleted", actor=access.user, team=access.team, target=account,
                   details={"label": account.label, "region": account.region, "account_id": account.account_id})
            account.delete()
    except ProtectedError:
        # A share or an import took it between the look above and the delete.
        raise TeamError(ACCOUNT_HAS_HISTORY_MESSAGE.format(label=account.label)) from None


def cloud_account_retire(*, access: TeamAccess, account: CloudAccount) -> CloudAccount:
    """Retire an account: its sealed keys are wiped (the masked hint stays), it is offered by no
    picker or directory again, and its shares, exports, imports and trail keep pointing at it.
    Refused while transfers depend on it. The refusal is recorded outside the rolled-back work."""
    require(access, Capability.MANAGE_TEAM, target=account)
    now = timezone.now()
    with transaction.atomic():
        account = CloudAccount.objects.select_for_update().get(pk=account.pk, team=access.team)
        busy = 0 if account.is_retired else _transfers_in_flight(account)
        if not busy:
            retired = CloudAccount.objects.filter(pk=account.pk, retired_at__isnull=True).update(
                retired_at=now, retired_by=access.user, access_key_sealed="", secret_key_sealed="",
                accepts_incoming_shares=False, validation_status=CloudAccount.Validation.INVALID,
                validation_message=ACCOUNT_RETIRED_MESSAGE.format(label=account.label)[:500],
                ownership_confirmed_by=None, ownership_confirmed_at=None, updated_at=now)
            if not retired:
                raise TeamError(ACCOUNT_RETIRED_MESSAGE.format(label=account.label))
            record(action="cloud_account.retired", actor=access.user, team=access.team, target=account,
                   details={"label": account.label, "region": account.region, "account_id": account.account_id,
                            "access_key": account.access_key_hint})
            account.refresh_from_db()
            return account
    record(action="cloud_account.retired", outcome="denied", actor=access.user, team=access.team, target=account,
           details={"reason": "transfers_in_flight", "in_flight": busy})
    raise TeamError(ACCOUNT_RETIRE_IN_FLIGHT_MESSAGE.format(label=account.label, count=busy))


VALIDATION_OK_MESSAGE = "OUTSCALE accepted these keys."


def cloud_account_validate(*, access: TeamAccess, account: CloudAccount) -> CloudAccount:
    """Ask OUTSCALE who these keys belong to (one ReadAccounts call, never retried on bad keys).

    The cloud call happens outside any transaction; the outcome is then written
    with its audit event. A failure keeps the account invalid with the cloud's
    reason in words.
    """
    require(access, Capability.MANAGE_TEAM, target=account)
    account = CloudAccount.objects.select_related("team").get(pk=account.pk, team=access.team)
    if account.is_retired:
        raise TeamError(ACCOUNT_RETIRED_MESSAGE.format(label=account.label))
    with outscale.record_request_ids() as request_ids:
        identity, retryable, creds = None, False, None
        try:
            creds = credentials_for(account, purpose="validate keys")
            identity = outscale.identify_account(creds=creds)
        except outscale.CloudError as exc:
            problem, code, retryable = exc.user_message, exc.code, exc.retryable
        except vault.VaultError as exc:
            problem, code = str(exc), "vault"
    with transaction.atomic():
        now = timezone.now()
        if identity is not None:
            fields = {"validation_status": CloudAccount.Validation.VALID, "account_id": identity.account_id,
                      "validation_message": "", "validated_at": now, "updated_at": now}
        else:
            # A throttled or unreachable cloud says nothing about the keys: keep them pending.
            status = CloudAccount.Validation.PENDING if retryable else CloudAccount.Validation.INVALID
            fields = {"validation_status": status, "validation_message": problem[:500], "updated_at": now}
        CloudAccount.objects.filter(pk=account.pk).update(**fields)
        for name, value in fields.items():
            setattr(account, name, value)
        record(action="cloud_account.validated", outcome="success" if identity else "failed", actor=access.user,
               team=access.team, target=account, cloud_request_ids=list(request_ids),
               details={"account_id": account.account_id} if identity else {"reason": problem, "code": code})
    if identity is not None:
        # Keys OUTSCALE accepts can still fail an export hours later: the pre-flight checks say now.
        account = preflight.cloud_account_preflight(account=account, actor=access.user, creds=creds)
    return account


# --- Team settings ----------------------------------------------------------------------

TEAM_SETTINGS = ("require_approval_for_own_accounts", "request_expiry_days", "approval_lifetime_days",
                 "copy_tag_allowlist",
                 "auto_accept_incoming", "cleanup_exports", "require_two_factor_for_privileged", "export_disk_format")
APPROVAL_LIFETIME_RANGE = (1, 365)
APPROVAL_LIFETIME_MESSAGE = "An approval lasts between 1 and 365 days."


@transaction.atomic
def team_settings_change(*, access: TeamAccess, **values) -> Team:
    require(access, Capability.MANAGE_TEAM, target=access.team)
    lifetime = values.get("approval_lifetime_days")
    if lifetime is not None and not (type(lifetime) is int and
                                     APPROVAL_LIFETIME_RANGE[0] <= lifetime <= APPROVAL_LIFETIME_RANGE[1]):
        raise TeamError(APPROVAL_LIFETIME_MESSAGE)
    if "copy_tag_allowlist" in values:  # one rule for the form and any other caller
        values["copy_tag_allowlist"] = clean_tag_keys(values["copy_tag_allowlist"])
    team = Team.objects.select_for_update().get(pk=access.team.pk)
    before, after = {}, {}
    for field in TEAM_SETTINGS:
        if field in values and values[field] != getattr(team, field):
            before[field], after[field] = getattr(team, field), values[field]
            setattr(team, field, values[field])
    if after:
        team.full_clean()
        team.save(update_fields=list(after))
        record(action="team.settings_changed", actor=access.user, team=team, target=team,
               details={"before": before, "after": after})
    return team
