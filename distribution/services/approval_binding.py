"""What a standing approval binds, who may sign it, and whether it still holds.

A signature covers exactly what the signer saw: the family (its name, how its versions are
recognised, how copies are named), its source account's real OUTSCALE account id and Region, each
recipient account's real account id and Region, the expiry and the maximum number of versions. The
digest of all that is stored with the approval; before every release the same digest is computed
again from the rows as they are now, and any difference (an account subscribed, unsubscribed,
re-keyed, moved, retired; a group member gone; the family redefined) stops the approval: nothing
silently widens and nothing silently shrinks, a changed list waits for a new signature.

The recipients are the accounts of the family's active subscriptions, or a recipient group's
members that joined, resolved when the approval is signed (an account joining the group later is
not covered: the list kept is the one signed).
"""

import hashlib
import json
from datetime import datetime

from django.db.models import QuerySet

from accounts.models import CloudAccount, Membership, Role
from audit.models import AuditEvent
from distribution.models import Family, RecipientGroup, StandingApproval, Subscription

APPROVER_ROLES = (Role.APPROVER, Role.ADMIN)

# Four eyes (signing_refusal): (audit reason, message).
DECLARED_FAMILY = "You declared this family, so someone else must sign its standing approval."
SET_UP_SUBSCRIPTION = ("You set up or last changed {team}'s subscription to this family, so someone else must sign "
                       "an approval that covers it.")
CREATED_GROUP = "You created the recipient group {group}, so someone else must sign an approval to it."
ROLE_GRANTED_BY_DECLARER = ("{declarer} declared this family and gave you your role, so you cannot sign for it: "
                            "another approver must.")
ROLE_GRANTED_AFTER_FAMILY = ("You became an approver of this team after this family was declared, so you cannot "
                             "sign for it: an approver who held the role before must.")

# Why an account cannot be signed for (recipient_problems).
PROBLEM_RETIRED = "{label} is retired."
PROBLEM_NO_KEYS = "{label} has no validated keys: nothing could be copied into it."
PROBLEM_CLOSED = "{label} does not accept images from other teams."
PROBLEM_SOURCE = "{label} is the family's source account."


def subscribed_accounts(family: Family) -> QuerySet:
    """The accounts of the family's active subscriptions, as they are now."""
    return CloudAccount.objects.filter(subscriptions__family=family, subscriptions__ended_at__isnull=True) \
        .select_related("team").distinct().order_by("team__name", "label")


def group_accounts(group: RecipientGroup) -> list[CloudAccount]:
    # Imported here: the groups part (distribution/services/groups.py) answers who joined.
    from distribution.services.groups import group_accounts_joined

    return sorted(group_accounts_joined(group), key=lambda a: (a.team.name, a.label))


def recipients_now(family: Family, group: RecipientGroup | None) -> list[CloudAccount]:
    """Whom a new signature would cover: the group's joined members, or the subscribed accounts."""
    return group_accounts(group) if group is not None else list(subscribed_accounts(family))


def recipient_problems(family: Family, accounts: list[CloudAccount]) -> list[str]:
    """Why some of these accounts could not receive a copy (nothing is signed for such a list)."""
    problems = []
    for account in accounts:
        if account.is_retired:
            problems.append(PROBLEM_RETIRED.format(label=account.label))
        elif account.pk == family.source_account_id:
            problems.append(PROBLEM_SOURCE.format(label=account.label))
        elif not account.is_valid or not account.account_id:
            problems.append(PROBLEM_NO_KEYS.format(label=account.label))
        elif account.team_id != family.team_id and not account.accepts_incoming_shares:
            problems.append(PROBLEM_CLOSED.format(label=account.label))
    return problems


def _line(account: CloudAccount, account_id: str, region: str) -> list[str]:
    line = [str(account.public_id), account_id, region]
    return [*line, "retired"] if account.is_retired else line


def digest_of(*, family: Family, source: CloudAccount, group: RecipientGroup | None,
              lines: list[list[str]], expires_at: datetime, max_versions: int) -> str:
    content = {
        "family": [str(family.public_id), family.name, family.match, family.name_pattern, family.tag_key,
                   family.tag_value, family.copy_name_template],
        "source": [str(source.public_id), source.account_id, source.region],
        "group": str(group.public_id) if group is not None else "",
        "recipients": sorted(lines),
        "expires_at": expires_at.isoformat(),
        "max_versions": int(max_versions),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def proposal_digest(*, family: Family, group: RecipientGroup | None, accounts: list[CloudAccount],
                    expires_at: datetime, max_versions: int) -> str:
    """The digest of what the sign page shows: these accounts as they are now."""
    source = CloudAccount.objects.get(pk=family.source_account_id)
    return digest_of(family=family, source=source, group=group, expires_at=expires_at, max_versions=max_versions,
                     lines=[_line(a, a.account_id, a.region) for a in accounts])


def current_accounts(approval: StandingApproval) -> list[CloudAccount]:
    """The accounts the approval would cover if it were signed again now. A group approval keeps the
    list it was signed with: members who joined since are not covered, members who left drop out."""
    if approval.group_id is None:
        return list(subscribed_accounts(approval.family))
    joined = {a.pk for a in group_accounts(approval.group)}
    return [r.account for r in approval.recipients.select_related("account__team") if r.account_id in joined]


def current_digest(approval: StandingApproval) -> str:
    family = Family.objects.get(pk=approval.family_id)
    return proposal_digest(family=family, group=approval.group, accounts=current_accounts(approval),
                           expires_at=approval.expires_at, max_versions=approval.max_versions)


def drift(approval: StandingApproval) -> str:
    """How the approval no longer matches what was signed, in words; "" while it still does."""
    if current_digest(approval) == approval.digest:
        return ""
    signed = {r.account_id: r for r in approval.recipients.select_related("account")}
    for r in signed.values():
        account = r.account
        if account.is_retired:
            return f"{account.label} was retired"
        if (account.account_id, account.region) != (r.bound_account_id, r.bound_region):
            return (f"{account.label} is now OUTSCALE account {account.account_id or 'unknown'} in "
                    f"{account.region}, signed as {r.bound_account_id} in {r.bound_region}")
    now = {a.pk: a for a in current_accounts(approval)}
    for pk, r in signed.items():
        if pk not in now:
            return (f"{r.account.label} is no longer a member of the group {approval.group.name} that can receive "
                    f"copies" if approval.group_id else f"{r.account.label} no longer subscribes to the family")
    for pk, account in now.items():
        if pk not in signed:
            return f"{account.label} subscribed to the family since the signature"
    return "the family or its source account changed since the signature"


# --- Who may sign -----------------------------------------------------------------------------------


def _subscription_people(family: Family) -> dict[int, str]:
    """Who created, or last changed, each active subscription of the family: {user id: team name}."""
    subscriptions = list(Subscription.objects.filter(family=family, ended_at__isnull=True).select_related("team"))
    people = {s.created_by_id: s.team.name for s in subscriptions}
    by_public_id = {str(s.public_id): s for s in subscriptions}
    last_changed = {}  # the trail knows who changed a subscription: the latest change of each
    for target_id, actor_id in AuditEvent.objects.filter(
            action="subscription.changed", outcome="success", target_type="distribution.subscription",
            target_id__in=list(by_public_id)).order_by("seq").values_list("target_id", "actor_id"):
        last_changed[target_id] = actor_id
    for target_id, actor_id in last_changed.items():
        if actor_id is not None:
            people.setdefault(actor_id, by_public_id[target_id].team.name)
    return people


def signing_refusal(*, membership: Membership, family: Family,
                    group: RecipientGroup | None) -> tuple[str, str] | None:
    """Why this approver may not sign for the family, as (audit reason, message), or None.

    Four eyes: whoever declared the family, set up or last changed a subscription it would cover,
    or created the group it names, never signs. No sock puppets (as transfers/rules.py
    decision_blocker for a request): a role given by the family's declarer, or given after the
    family was declared, does not count as a second pair of eyes.
    """
    if membership.user_id == family.created_by_id:
        return "declared_family", DECLARED_FAMILY
    if group is None:
        team = _subscription_people(family).get(membership.user_id)
        if team is not None:
            return "set_up_subscription", SET_UP_SUBSCRIPTION.format(team=team)
    elif membership.user_id == group.created_by_id:
        return "created_group", CREATED_GROUP.format(group=group.name)
    if membership.role_granted_by_id is not None and membership.role_granted_by_id == family.created_by_id:
        return "role_granted_by_declarer", ROLE_GRANTED_BY_DECLARER.format(declarer=family.created_by.display_name)
    if membership.role_granted_at > family.created_at:
        return "role_granted_after_family", ROLE_GRANTED_AFTER_FAMILY
    return None


def signer_gone(approval: StandingApproval) -> str:
    """Why the signer no longer stands behind the approval ("" while they do): they left the team,
    or are no longer an approver of it."""
    role = Membership.objects.filter(team_id=approval.family.team_id, user_id=approval.signed_by_id) \
        .values_list("role", flat=True).first()
    if role in APPROVER_ROLES:
        return ""
    name = approval.signed_by.display_name
    return f"{name} is no longer a member of the team" if role is None else f"{name} is no longer an approver"
