"""Creating, revoking and checking API tokens. Services: they own the writes and record them."""

import hashlib
import secrets
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.access import NotInTeam, deny_access, require
from accounts.models import Role
from accounts.roles import ROLE_CAPABILITIES, Capability
from accounts.selectors import TeamAccess
from api.models import ApiToken
from audit import recorder
from audit.recorder import AuditTarget, record

PREFIX = "omi_"
MAX_DAYS = 365
DEFAULT_DAYS = 90
# last_used_at is written at most this often per token: a pipeline polling every second must
# not turn each read into a write.
LAST_USED_GRANULARITY = timedelta(seconds=60)

ROLE_ABOVE_YOURS = "A token cannot have a role above your own in {team} ({role})."
SERVICE_ROLES = "A service token can be a member or an auditor: approving stays with people."
SERVICE_NEEDS_ADMIN = "Only a team admin can create the team's service tokens."
NOT_YOURS = "You can revoke your own tokens; a team admin can revoke any token of the team."
ALREADY_REVOKED = "This token was already revoked."
BAD_DAYS = f"A token lasts from 1 to {MAX_DAYS} days."


def digest_of(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _role_rank(role: str) -> frozenset:
    return ROLE_CAPABILITIES[Role(role)]


def _standing(access: TeamAccess) -> frozenset:
    """The person's capabilities by their role, before two-factor withholds any: a role within this
    is theirs to give (a withheld capability then asks for a code, not for another role)."""
    return TeamAccess.capabilities.fget(access)


def roles_offered(*, access: TeamAccess, kind: str) -> list[str]:
    """The roles this person may give a token of ``kind``, highest first (what the page offers)."""
    roles = [r for r in (Role.ADMIN, Role.APPROVER, Role.MEMBER, Role.AUDITOR) if _role_rank(r) <= _standing(access)]
    if kind == ApiToken.Kind.SERVICE:
        roles = [r for r in roles if r in (Role.MEMBER, Role.AUDITOR)]
    return [str(r) for r in roles]


def token_create(*, access: TeamAccess, kind: str, name: str, role: str, days: int) -> tuple[ApiToken, str]:
    """Make a token and return it with its only plain copy (shown once, then gone)."""
    if kind not in ApiToken.Kind.values or role not in Role.values:
        raise ValidationError("Choose one of the listed kinds and roles.")
    if kind == ApiToken.Kind.SERVICE:
        require(access, Capability.MANAGE_TEAM)
        if role not in (Role.MEMBER, Role.AUDITOR):
            raise ValidationError(SERVICE_ROLES)
    wanted = _role_rank(role)
    if not wanted <= _standing(access):  # personal or service: never above the maker's own standing
        deny_access(user=access.user, team=access.team, reason="missing_role",
                    details={"needs": f"token role {role}", "role": access.role or "compliance"})
        raise PermissionDenied(ROLE_ABOVE_YOURS.format(team=access.team.name, role=access.role or "compliance"))
    for capability in sorted(wanted):
        require(access, capability)  # one withheld until a two-factor code: the page asks for it
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(BAD_DAYS)
    name = name.strip()
    if not name:
        raise ValidationError("Give the token a name that says what uses it.")
    prefix = secrets.token_hex(6)
    raw = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with recorder.atomic():
        token = ApiToken.objects.create(
            team=access.team, user=access.user, kind=kind, name=name, role=role, prefix=prefix,
            digest=digest_of(raw), expires_at=timezone.now() + timedelta(days=days))
        record(action="api_token.created", actor=access.user, team=access.team, target=token,
               details={"kind": kind, "role": role, "expires_at": token.expires_at.isoformat(),
                        "prefix": f"{PREFIX}{prefix}"})
    return token, raw


def may_revoke(*, access: TeamAccess, token: ApiToken) -> bool:
    """The token's maker, or an admin of its team: an admin can stop a leaked personal token without
    removing its person from the team. By role (``can_manage``): an admin not yet verified in a team
    that requires two-factor sees the button and is asked for a code when using it."""
    return token.team_id == access.team.pk and (token.user_id == access.user.pk or access.can_manage)


def token_revoke(*, access: TeamAccess, token: ApiToken) -> ApiToken:
    if token.team_id != access.team.pk:
        raise PermissionDenied(NOT_YOURS)  # the selectors never hand one over; a guard, not a path
    if token.user_id != access.user.pk:
        require(access, Capability.MANAGE_TEAM, target=token)  # records the refusal, raises 403
    now = timezone.now()
    with recorder.atomic():
        moved = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=access.user)
        if not moved:
            raise ValidationError(ALREADY_REVOKED)
        token.refresh_from_db()
        record(action="api_token.revoked", actor=access.user, team=access.team, target=token,
               details={"kind": token.kind, "role": token.role, "prefix": f"{PREFIX}{token.prefix}",
                        "owner": token.user.email})
    return token


# --- Reads (the token pages) -------------------------------------------------------------------------------


def token_list_for_viewer(*, access: TeamAccess) -> QuerySet:
    """Admins see every token of the team; anyone else their own and the team's service tokens."""
    tokens = ApiToken.objects.filter(team=access.team).select_related("user", "revoked_by")
    if not access.can_manage:
        tokens = tokens.filter(Q(user=access.user) | Q(kind=ApiToken.Kind.SERVICE))
    return tokens.order_by("-created_at", "-pk")


def token_get_for_viewer(*, access: TeamAccess, public_id) -> ApiToken:
    token = token_list_for_viewer(access=access).filter(public_id=public_id).first()
    if token is None:
        raise NotInTeam("No such API token in this team.", user=access.user, team=access.team,
                        target=AuditTarget("api.apitoken", str(public_id), ""))
    return token


def token_state(token: ApiToken, now=None) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "active" if token.expires_at > (now or timezone.now()) else "expired"


def token_for(raw: str) -> ApiToken | None:
    """The usable token this bearer string is, or None. Compares digests only."""
    if not raw.startswith(PREFIX) or len(raw) > 200:
        return None
    token = ApiToken.objects.select_related("team", "user").filter(digest=digest_of(raw)).first()
    if token is None or not token.is_usable() or not token.user.is_active:
        return None
    return token


def token_touch(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_GRANULARITY:
        with transaction.atomic():
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
