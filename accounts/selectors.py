"""Reads of team-owned data. Every query starts from what the user may see.

An object outside the user's teams is a 404 (its existence is not leaked): the read raises
``accounts.access.NotInTeam`` and writes nothing; the request's boundary records the refusal.
"""

from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet

from accounts import dependents
from accounts.access import NotInTeam
from accounts.models import CloudAccount, Membership, Role, Team, User
from accounts.roles import COMPLIANCE_CAPABILITIES, ROLE_CAPABILITIES, Capability
from audit.recorder import AuditTarget


@dataclass(frozen=True)
class TeamAccess:
    """A user's standing in one team, re-read from the database on every request."""

    user: User
    team: Team
    membership: Membership | None  # None: site-wide compliance access only
    # All the user's memberships, read with this one (the team switcher shows them); None: not read.
    memberships: list[Membership] | None = field(default=None, compare=False, repr=False)

    @property
    def role(self) -> str | None:
        return self.membership.role if self.membership else None

    @property
    def capabilities(self) -> frozenset:
        caps = ROLE_CAPABILITIES[Role(self.role)] if self.membership else frozenset()
        if self.user.is_compliance_officer:
            caps = caps | COMPLIANCE_CAPABILITIES
        return caps

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    # For templates, which cannot call can() with an argument.
    @property
    def can_manage(self) -> bool:
        return self.can(Capability.MANAGE_TEAM)

    @property
    def can_approve(self) -> bool:
        return self.can(Capability.APPROVE)

    @property
    def can_request(self) -> bool:
        return self.can(Capability.REQUEST_SHARE)

    @property
    def can_view_audit(self) -> bool:
        return self.can(Capability.VIEW_AUDIT)


def team_access_for_user(*, user: User, team_public_id) -> TeamAccess:
    # One query for a member: all their memberships with the teams, which the team switcher
    # shows on every page anyway. Anyone else (compliance officers, outsiders) is looked up as before.
    memberships = list(memberships_for_user(user=user))
    membership = next((m for m in memberships if m.team.public_id == team_public_id), None)
    if membership is not None:
        return TeamAccess(user=user, team=membership.team, membership=membership, memberships=memberships)
    team = Team.objects.filter(public_id=team_public_id).first()
    if team is not None:
        membership = Membership.objects.filter(team=team, user=user).select_related("team").first()
    if team is None or (membership is None and not user.is_compliance_officer):
        raise NotInTeam("No such team.", user=user, team=None, reason="not_a_member",
                        target=AuditTarget("accounts.team", str(team_public_id), ""))
    return TeamAccess(user=user, team=team, membership=membership, memberships=memberships)


def memberships_for_user(*, user: User) -> QuerySet:
    return Membership.objects.filter(user=user).select_related("team").order_by("team__name")


def team_list_for_user(*, user: User) -> QuerySet:
    if user.is_compliance_officer:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user)


def membership_list_for_team(*, team: Team) -> QuerySet:
    return Membership.objects.filter(team=team).select_related("user").order_by("user__email")


def membership_get_for_team(*, access: TeamAccess, public_id) -> Membership:
    membership = Membership.objects.filter(team=access.team, public_id=public_id).select_related("user").first()
    if membership is None:
        raise NotInTeam("No such member in this team.", user=access.user, team=access.team,
                        target=AuditTarget("accounts.membership", str(public_id), ""))
    return membership


def team_role_counts(*, team: Team) -> dict:
    rows = Membership.objects.filter(team=team).values("role").annotate(n=Count("id"))
    return {row["role"]: row["n"] for row in rows}


def cloud_account_list_for_team(*, team: Team) -> QuerySet:
    """The team's accounts, retired ones included (their history stays), each with ``has_history``:
    whether shares, exports or imports point at it (then it is retired, not deleted)."""
    return CloudAccount.objects.filter(team=team).select_related("registered_by", "ownership_confirmed_by") \
        .annotate(has_history=dependents.used()).order_by("label")


def cloud_account_summaries_for_team(*, team: Team) -> QuerySet:
    """The team's accounts as the dashboard lists them: label, Region and validation only. Without
    ``has_history`` (an EXISTS per kind of dependent, slow to compile on every visit)."""
    return CloudAccount.objects.filter(team=team).only("team_id", "label", "region", "validation_status") \
        .order_by("label")


def cloud_account_get_for_team(*, access: TeamAccess, public_id) -> CloudAccount:
    account = CloudAccount.objects.filter(team=access.team, public_id=public_id).first()
    if account is None:
        raise NotInTeam("No such cloud account in this team.", user=access.user, team=access.team,
                        target=AuditTarget("accounts.cloudaccount", str(public_id), ""))
    return account


def cloud_account_directory(*, exclude_team: Team | None = None) -> QuerySet:
    """Validated accounts of every team that accept incoming shares (the recipients' directory)."""
    qs = CloudAccount.objects.filter(
        accepts_incoming_shares=True, validation_status=CloudAccount.Validation.VALID, retired_at__isnull=True
    ).select_related("team")
    if exclude_team is not None:
        qs = qs.filter(~Q(team=exclude_team))
    return qs.order_by("team__name", "label")
