"""Reads of recipient groups. Two sides see a membership: the group's team (its groups, their members)
and the account's team (invitations waiting for its answer, the groups its accounts are in). Another
team's group or membership is not found (``NotInTeam``: a 404, recorded where the request is handled).
"""

import uuid

from django.db.models import Count, Q, QuerySet

from accounts.access import NotInTeam
from accounts.models import CloudAccount
from accounts.selectors import TeamAccess, cloud_account_directory
from audit.recorder import AuditTarget
from distribution.models import GroupMember, RecipientGroup
from transfers.recipient_sources import RecipientSource

SOURCE_PREFIX = "group"  # the share form's key for a group: "group:<public id>" (transfers/recipient_sources.py)


def _not_found(access: TeamAccess, public_id, kind: str) -> NotInTeam:
    return NotInTeam("Not found in this team.", user=access.user, team=access.team,
                     target=AuditTarget(kind, str(public_id), ""))


def group_accounts_joined(group: RecipientGroup) -> list[CloudAccount]:
    """The accounts in ``group`` now: joined, and still recipients (validated, accepting incoming
    shares, not retired). An account invited, declined or gone is not; neither is one whose team
    has since closed it to incoming shares or retired it. Read once by whoever binds the list (a
    share request, a standing approval at signing); re-exported by distribution.services.groups."""
    return list(cloud_account_directory().filter(
        group_memberships__group=group, group_memberships__state=GroupMember.State.JOINED))


def group_list_for_team(*, team) -> QuerySet:
    """The team's groups with their counts at a glance: one query."""
    state = GroupMember.State
    return RecipientGroup.objects.filter(team=team).annotate(
        joined=Count("members", filter=Q(members__state=state.JOINED)),
        invited=Count("members", filter=Q(members__state=state.INVITED)),
    ).order_by("name")


def group_get_for_team(*, access: TeamAccess, public_id) -> RecipientGroup:
    group = RecipientGroup.objects.select_related("team", "created_by").filter(
        team=access.team, public_id=public_id).first()
    if group is None:
        raise _not_found(access, public_id, "distribution.recipientgroup")
    return group


def group_members(*, group: RecipientGroup) -> QuerySet:
    """Every row of the group, joined first, with the account, its team and who answered."""
    order = {GroupMember.State.JOINED: 0, GroupMember.State.INVITED: 1, GroupMember.State.DECLINED: 2,
             GroupMember.State.LEFT: 3}
    rows = GroupMember.objects.filter(group=group).select_related("account__team", "invited_by", "answered_by")
    return sorted(rows, key=lambda m: (order[m.state], m.account.team.name, m.account.label))


def group_member_get_for_group(*, access: TeamAccess, group: RecipientGroup, public_id) -> GroupMember:
    member = GroupMember.objects.select_related("group__team", "account__team").filter(
        group=group, group__team=access.team, public_id=public_id).first()
    if member is None:
        raise _not_found(access, public_id, "distribution.groupmember")
    return member


def invite_candidates(*, group: RecipientGroup) -> QuerySet:
    """The directory's accounts not invited to nor in the group (one that declined or left can be
    asked again)."""
    asked = GroupMember.objects.filter(group=group, state__in=[GroupMember.State.INVITED, GroupMember.State.JOINED])
    return cloud_account_directory().exclude(pk__in=asked.values("account"))


# --- The account's team --------------------------------------------------------------------------


def memberships_for_account_team(*, team) -> QuerySet:
    """Invitations to the team's accounts and the groups they are in (other teams' groups included)."""
    return GroupMember.objects.filter(account__team=team).select_related(
        "group__team", "account", "invited_by", "answered_by").order_by("-invited_at", "-pk")


def membership_get_for_account_team(*, access: TeamAccess, public_id) -> GroupMember:
    member = GroupMember.objects.select_related("group__team", "account__team").filter(
        account__team=access.team, public_id=public_id).first()
    if member is None:
        raise _not_found(access, public_id, "distribution.groupmember")
    return member


# --- The share form's "Recipient group" (registered in distribution/apps.py) ------------------------


def group_recipient_sources(*, team) -> list[RecipientSource]:
    return [RecipientSource(f"{SOURCE_PREFIX}:{g.public_id}", f"{g.name} ({g.joined} account{'s' * (g.joined != 1)})")
            for g in group_list_for_team(team=team)]


def group_recipient_accounts(*, access: TeamAccess, ident: str) -> list[CloudAccount]:
    """The group's accounts now, for the team's own group only."""
    try:
        public_id = uuid.UUID(ident)
    except ValueError:
        public_id = None
    group = RecipientGroup.objects.filter(team=access.team, public_id=public_id).first() if public_id else None
    if group is None:
        raise _not_found(access, ident, "distribution.recipientgroup")
    return group_accounts_joined(group)
