"""Reads of standing approvals. Every query starts from the team: another team's id is not found
(NotInTeam, a 404 recorded where the request is handled)."""

from django.db.models import Prefetch, QuerySet

from accounts.access import NotInTeam
from accounts.selectors import TeamAccess
from audit.recorder import AuditTarget
from distribution.models import Family, FamilyVersion, StandingApproval, StandingRecipient


def approvals_for_family(*, family: Family) -> QuerySet:
    """The family's approvals, newest first, each with its bound recipients: three queries."""
    recipients = StandingRecipient.objects.select_related("account__team").order_by("account__team__name",
                                                                                      "account__label")
    return StandingApproval.objects.filter(family=family).select_related("signed_by", "stopped_by", "group") \
        .prefetch_related(Prefetch("recipients", queryset=recipients)).order_by("-signed_at", "-pk")


def approval_get_for_team(*, access: TeamAccess, public_id) -> StandingApproval:
    approval = StandingApproval.objects.select_related("family__team", "family__source_account") \
        .filter(family__team=access.team, public_id=public_id).first()
    if approval is None:
        raise NotInTeam("Not found in this team.", user=access.user, team=access.team,
                        target=AuditTarget("distribution.standingapproval", str(public_id), ""))
    return approval


def versions_waiting(*, family: Family) -> QuerySet:
    """The versions held back, newest first: what a new signature would release (the newest)."""
    return FamilyVersion.objects.filter(family=family, state=FamilyVersion.State.WAITING).order_by("-number")
