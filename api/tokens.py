"""Creating, revoking and checking API tokens. Services: they own the writes and record them."""

import hashlib
import secrets
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.access import require
from accounts.models import Role
from accounts.roles import ROLE_CAPABILITIES, Capability
from accounts.selectors import TeamAccess
from api.models import ApiToken
from audit import recorder
from audit.recorder import record

PREFIX = "omi_"
MAX_DAYS = 365
# last_used_at is written at most this often per token: a pipeline polling every second must
# not turn each read into a write.
LAST_USED_GRANULARITY = timedelta(seconds=60)

ROLE_ABOVE_YOURS = "A token cannot have a role above your own in {team} ({role})."
SERVICE_ROLES = "A service token can be a member or an auditor: approving stays with people."
SERVICE_NEEDS_ADMIN = "Only a team admin can create or revoke the team's service tokens."
NOT_YOURS = "You can revoke your own tokens; a team admin can also revoke the team's service tokens."
ALREADY_REVOKED = "This token was already revoked."
BAD_DAYS = f"A token lasts from 1 to {MAX_DAYS} days."


def digest_of(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _role_rank(role: str) -> frozenset:
    return ROLE_CAPABILITIES[Role(role)]


def token_create(*, access: TeamAccess, kind: str, name: str, role: str, days: int) -> tuple[ApiToken, str]:
    """Make a token and return it with its only plain copy (shown once, then gone)."""
    if kind == ApiToken.Kind.SERVICE:
        require(access, Capability.MANAGE_TEAM)
        if role not in (Role.MEMBER, Role.AUDITOR):
            raise ValidationError(SERVICE_ROLES)
    own = access.capabilities
    if not _role_rank(role) <= own:  # personal or service: never above the maker's own standing
        raise ValidationError(ROLE_ABOVE_YOURS.format(team=access.team.name, role=access.role or "compliance"))
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(BAD_DAYS)
    prefix = secrets.token_hex(6)
    raw = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with recorder.atomic():
        token = ApiToken.objects.create(
            team=access.team, user=access.user, kind=kind, name=name.strip(), role=role, prefix=prefix,
            digest=digest_of(raw), expires_at=timezone.now() + timedelta(days=days))
        record(action="api_token.created", actor=access.user, team=access.team, target=token,
               details={"kind": kind, "role": role, "expires_at": token.expires_at.isoformat(),
                        "prefix": f"{PREFIX}{prefix}"})
    return token, raw


def may_revoke(*, access: TeamAccess, token: ApiToken) -> bool:
    return token.user_id == access.user.pk or (token.is_service and access.can(Capability.MANAGE_TEAM))


def token_revoke(*, access: TeamAccess, token: ApiToken) -> ApiToken:
    if not may_revoke(access=access, token=token):
        require(access, Capability.MANAGE_TEAM, target=token)  # records the refusal, raises 403
        raise PermissionDenied(NOT_YOURS)
    now = timezone.now()
    with recorder.atomic():
        moved = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=access.user)
        if not moved:
            raise ValidationError(ALREADY_REVOKED)
        token.refresh_from_db()
        record(action="api_token.revoked", actor=access.user, team=access.team, target=token,
               details={"kind": token.kind, "prefix": f"{PREFIX}{token.prefix}"})
    return token


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
