"""Recipient groups: named sets of recipient accounts across teams and Regions ("all production
accounts"), which an account joins only with its own team's consent.

Who does what, and why:
- A group belongs to a team. Its approvers and admins make, change and delete it, invite accounts and
  remove them: the group is a list that the team's approvers sign shares to, so drawing it up is
  theirs. Every member reads it and may use it to tick recipients in a share request.
- Any account of the recipients' directory (validated, accepting incoming shares, not retired) may
  be invited. It joins only when an approver or admin of *its own* team accepts; that team may
  decline, and may take the account out again at any time (it left). An account of the group's own
  team joins when invited: the inviter is an approver of that very team.
- Nothing here shares anything. A share request or a standing approval that names a group reads
  ``group_accounts_joined`` once, when it is made or signed, and names those accounts one by one;
  an account that joins later is in none of them until someone signs again.

Each change records its audit event in the same transaction (recorder.atomic); a refusal is
recorded, then raised once the block has ended.
"""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, Q
from django.utils import timezone

from accounts.access import deny_access, require
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess, cloud_account_directory
from audit import recorder
from audit.recorder import AuditTarget, record
from distribution.models import GroupMember, RecipientGroup, StandingApproval
from distribution.selectors.groups import group_accounts_joined  # noqa: F401 - the contract others call (a read)

NAME_REQUIRED = "Give the group a name."
NAME_TOO_LONG = "A group's name has at most 80 characters."
DESCRIPTION_TOO_LONG = "A description has at most 255 characters."
TEXT_NUL = "Text cannot contain a NUL character."
NAME_TAKEN = "Your team already has a group named {name}."
GROUP_GONE = "This group was deleted meanwhile."
GROUP_IN_USE = ("A standing approval names {name}: its record keeps the group. Stop relying on it, and "
                "remove its members instead.")
NO_ACCOUNT = "Choose at least one account to invite."
NOT_IN_DIRECTORY = "{label} cannot be invited: only validated accounts that accept incoming shares can."
NOT_WAITING = "This invitation is no longer waiting for an answer."
NOT_JOINED = "This account is not in the group."
MEMBER_GONE = "This account was taken out of the group meanwhile."
NOT_YOUR_ACCOUNT = "Only the account's own team answers for it."
NOT_YOUR_GROUP = "Only the group's team changes its members."


def _text(value: str, *, limit: int, too_long: str) -> str:
    value = (value or "").strip()
    if "\x00" in value:
        raise ValidationError(TEXT_NUL)
    if len(value) > limit:
        raise ValidationError(too_long)
    return value


def _clean(name: str, description: str) -> tuple[str, str]:
    name = _text(name, limit=80, too_long=NAME_TOO_LONG)
    if not name:
        raise ValidationError(NAME_REQUIRED)
    return name, _text(description, limit=255, too_long=DESCRIPTION_TOO_LONG)


def _member_details(member: GroupMember) -> dict:
    account, group = member.account, member.group
    return {"group": str(group.public_id), "group_name": group.name, "group_team": group.team.name,
            "account": account.label, "account_id": account.account_id, "region": account.region,
            "account_team": account.team.name}


def _member_target(member: GroupMember) -> AuditTarget:
    # Named explicitly: a removed member's row is gone when the block's events are appended.
    return AuditTarget("distribution.groupmember", str(member.public_id), str(member))


def _own_group(access: TeamAccess, group: RecipientGroup) -> None:
    if group.team_id != access.team.pk:  # the selectors never hand one over; a service holds to it anyway
        deny_access(user=access.user, team=access.team, reason="not_found_in_team", target=group)
        raise PermissionDenied(NOT_YOUR_GROUP)


def group_create(*, access: TeamAccess, name: str, description: str = "") -> RecipientGroup:
    require(access, Capability.APPROVE)
    name, description = _clean(name, description)
    try:
        with recorder.atomic():
            group = RecipientGroup.objects.create(team=access.team, name=name, description=description,
                                                  created_by=access.user)
            record(action="recipient_group.created", actor=access.user, team=access.team, target=group,
                   details={"name": name, "description": description})
    except IntegrityError:
        raise ValidationError(NAME_TAKEN.format(name=name)) from None
    return group


def group_change(*, access: TeamAccess, group: RecipientGroup, name: str, description: str = "") -> RecipientGroup:
    require(access, Capability.APPROVE, target=group)
    _own_group(access, group)
    name, description = _clean(name, description)
    before = {"name": group.name, "description": group.description}
    try:
        with recorder.atomic():
            if not RecipientGroup.objects.filter(pk=group.pk, team=access.team).update(name=name,
                                                                                     description=description):
                raise ValidationError(GROUP_GONE)
            group.name, group.description = name, description
            record(action="recipient_group.changed", actor=access.user, team=access.team, target=group,
                   details={"before": before, "after": {"name": name, "description": description}})
    except IntegrityError:
        raise ValidationError(NAME_TAKEN.format(name=name)) from None
    return group


def group_delete(*, access: TeamAccess, group: RecipientGroup) -> None:
    """Delete a group with its invitations and members. Refused while a standing approval names it:
    that approval's record says which group it was resolved from."""
    require(access, Capability.APPROVE, target=group)
    _own_group(access, group)
    refused = False
    with recorder.atomic():
        locked = RecipientGroup.objects.select_for_update().filter(pk=group.pk).first()
        if locked is None:
            raise ValidationError(GROUP_GONE)
        details = {"name": locked.name, "members": locked.members.filter(state=GroupMember.State.JOINED).count(),
                   "invited": locked.members.filter(state=GroupMember.State.INVITED).count()}
        refused = StandingApproval.objects.filter(group=locked).exists()
        if not refused:
            try:
                with recorder.atomic():  # a savepoint: an approval signed meanwhile protects the row
                    record(action="recipient_group.deleted", actor=access.user, team=access.team, target=locked,
                           details=details)
                    locked.delete()
            except ProtectedError:
                refused = True
        if refused:
            record(action="recipient_group.deleted", outcome="denied", actor=access.user, team=access.team,
                   target=locked, details={**details, "reason": "named_by_standing_approval"})
    if refused:
        raise ValidationError(GROUP_IN_USE.format(name=group.name))


def group_member_invite(*, access: TeamAccess, group: RecipientGroup,
                        accounts: list[CloudAccount]) -> list[GroupMember]:
    """Invite accounts of the directory. One already invited or in the group stays as it is; one that
    declined or left is invited again (its team answers again). Accounts of the group's own team join
    at once."""
    require(access, Capability.APPROVE, target=group)
    _own_group(access, group)
    if not accounts:
        raise ValidationError(NO_ACCOUNT)
    allowed = set(cloud_account_directory().filter(pk__in=[a.pk for a in accounts]).values_list("pk", flat=True))
    for account in accounts:
        if account.pk not in allowed:
            raise ValidationError(NOT_IN_DIRECTORY.format(label=account.label))
    now, invited = timezone.now(), []
    with recorder.atomic():
        if not RecipientGroup.objects.select_for_update().filter(pk=group.pk).exists():
            raise ValidationError(GROUP_GONE)
        for account in accounts:
            member, created = GroupMember.objects.get_or_create(
                group=group, account=account, defaults={"invited_by": access.user, "invited_at": now})
            if not created and not GroupMember.objects.filter(
                    pk=member.pk, state__in=[GroupMember.State.DECLINED, GroupMember.State.LEFT]).update(
                    state=GroupMember.State.INVITED, invited_by=access.user, invited_at=now,
                    answered_by=None, answered_at=None):
                continue  # invited or in the group already: nothing to ask again
            member.refresh_from_db()
            record(action="group_member.invited", actor=access.user, team=access.team, target=_member_target(member),
                   details={**_member_details(member), "again": not created})
            if account.team_id == access.team.pk:
                _answer(access, member, GroupMember.State.JOINED, now=now, details={"own_team": True})
            invited.append(member)
    return invited


def _answer(access, member, state, *, now, details=None) -> bool:
    answered = GroupMember.objects.filter(pk=member.pk, state=GroupMember.State.INVITED).update(
        state=state, answered_by=access.user, answered_at=now)
    action = "group_member.joined" if state == GroupMember.State.JOINED else "group_member.declined"
    record(action=action, outcome="success" if answered else "denied", actor=access.user, team=access.team,
           target=_member_target(member), details={**_member_details(member), **(details or {}),
                                                   **({} if answered else {"reason": "not_waiting"})})
    if answered:
        member.state, member.answered_by, member.answered_at = state, access.user, now
    return bool(answered)


def _accounts_team(access: TeamAccess, member: GroupMember) -> None:
    if member.account.team_id != access.team.pk:
        deny_access(user=access.user, team=access.team, reason="not_found_in_team", target=_member_target(member))
        raise PermissionDenied(NOT_YOUR_ACCOUNT)


def group_member_answer(*, access: TeamAccess, member: GroupMember, accept: bool) -> GroupMember:
    """The account's own team says yes (it joins) or no to an invitation still waiting."""
    require(access, Capability.APPROVE, target=_member_target(member))
    _accounts_team(access, member)
    state = GroupMember.State.JOINED if accept else GroupMember.State.DECLINED
    with recorder.atomic():
        answered = _answer(access, member, state, now=timezone.now())
    if not answered:
        raise ValidationError(NOT_WAITING)
    return member


def group_member_leave(*, access: TeamAccess, member: GroupMember) -> GroupMember:
    """The account's own team takes it out of the group: no request or approval made from now on
    includes it."""
    require(access, Capability.APPROVE, target=_member_target(member))
    _accounts_team(access, member)
    now = timezone.now()
    with recorder.atomic():
        left = GroupMember.objects.filter(pk=member.pk, state=GroupMember.State.JOINED).update(
            state=GroupMember.State.LEFT, answered_by=access.user, answered_at=now)
        record(action="group_member.left", outcome="success" if left else "denied", actor=access.user,
               team=access.team, target=_member_target(member),
               details={**_member_details(member), **({} if left else {"reason": "not_joined"})})
    if not left:
        raise ValidationError(NOT_JOINED)
    member.state = GroupMember.State.LEFT
    return member


def group_member_remove(*, access: TeamAccess, member: GroupMember) -> None:
    """The group's team takes an account out (or withdraws its invitation). The row goes: inviting the
    account again asks its team again."""
    require(access, Capability.APPROVE, target=_member_target(member))
    _own_group(access, member.group)
    with recorder.atomic():
        gone = GroupMember.objects.filter(Q(pk=member.pk), Q(group__team=access.team)).delete()[0]
        if gone:
            record(action="group_member.removed", actor=access.user, team=access.team, target=_member_target(member),
                   details={**_member_details(member), "state": member.state})
    if not gone:
        raise ValidationError(MEMBER_GONE)
