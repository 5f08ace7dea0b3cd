"""When a team asks for it, approvers and admins act only from an OTP-verified session.

``team_view`` asks :func:`withheld_capabilities` on every team page. Capabilities it
withholds are taken out of the request's ``TeamAccess``, so every ``require()`` (in
views and in services) refuses them; the page itself sends the person to enrol or
verify. Jobs build their own access from the database and are not affected: they
carry out what a verified session decided.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from accounts.access import deny_access
from accounts.models import Role
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from accounts.twofactor.services import has_device

PRIVILEGED = frozenset({Capability.APPROVE, Capability.MANAGE_TEAM})
PRIVILEGED_ROLES = frozenset({Role.APPROVER, Role.ADMIN})
STEP_UP_MESSAGE = "{team} requires two-factor sign-in for approvers and admins."
# When the session last checked a code: approvals in a team that requires two-factor need a recent one.
VERIFIED_AT_SESSION_KEY = "twofactor_verified_at"


def is_verified(user) -> bool:
    """``user.is_verified()`` from django-otp's middleware; anything else counts as not verified."""
    check = getattr(user, "is_verified", None)
    return bool(check and check())


def note_verified(request) -> None:
    request.session[VERIFIED_AT_SESSION_KEY] = timezone.now().timestamp()


def verified_at(request) -> datetime | None:
    """When this session last checked a code, if its OTP login still holds."""
    stamp = request.session.get(VERIFIED_AT_SESSION_KEY)
    if not isinstance(stamp, (int, float)) or not is_verified(request.user):
        return None
    return datetime.fromtimestamp(stamp, tz=UTC)


def step_up_fresh(when: datetime | None, *, now: datetime | None = None) -> bool:
    if when is None:
        return False
    age = (now or timezone.now()) - when
    return age <= timedelta(seconds=settings.OMIPORTAL_APPROVAL_STEP_UP_SECONDS)


def withheld_capabilities(*, user, access: TeamAccess) -> frozenset:
    if not access.team.require_two_factor_for_privileged or access.role not in PRIVILEGED_ROLES:
        return frozenset()
    if is_verified(user):
        return frozenset()
    return PRIVILEGED & access.capabilities


@dataclass(frozen=True)
class StepUpAccess(TeamAccess):
    """A privileged member's access before OTP verification: the privileged capabilities withheld."""

    withheld: frozenset = frozenset()
    # Which withheld capabilities something asked for: the page then sends the person to verify.
    refused: set = field(default_factory=set, compare=False)

    @property
    def capabilities(self) -> frozenset:
        return super().capabilities - self.withheld

    def can(self, capability: Capability) -> bool:
        if capability in self.withheld:
            self.refused.add(capability)
            return False
        return super().can(capability)

    # Pages still show privileged links and buttons by role: following one leads to the verify step.
    @property
    def can_manage(self) -> bool:
        return Capability.MANAGE_TEAM in TeamAccess.capabilities.fget(self)

    @property
    def can_approve(self) -> bool:
        return Capability.APPROVE in TeamAccess.capabilities.fget(self)


def safe_next(request, candidate: str | None, default: str) -> str:
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                     require_https=request.is_secure()):
        return candidate
    return resolve_url(default)


def step_up_url(*, enrolled: bool, next_url: str) -> str:
    name = "accounts:twofactor-verify" if enrolled else "accounts:twofactor"
    return f"{reverse(name)}?{urlencode({'next': next_url})}"


def step_up_redirect_url(request, access: TeamAccess, capability) -> str:
    """Record the refusal and say where to go: verify (or enrol first), then come back."""
    deny_access(user=access.user, team=access.team, reason="two_factor_required",
                details={"needs": str(capability), "role": access.role})
    dashboard = reverse(settings.OMIPORTAL_TEAM_HOME, kwargs={"team_id": access.team.public_id})
    if request.method in ("GET", "HEAD"):
        next_url = request.get_full_path()
    else:  # an action cannot be replayed by a redirect: come back to the page it was posted from
        next_url = safe_next(request, request.headers.get("referer"), dashboard)
    return step_up_url(enrolled=has_device(user=access.user), next_url=next_url)
