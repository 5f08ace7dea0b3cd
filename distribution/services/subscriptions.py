"""Subscriptions: a recipient team asks for every version of a family in some of its own accounts.

Who: anyone of the recipient team who may accept incoming shares (members, approvers, admins).
Which families: every live family of every team (the family directory, as the accounts' directory
is for shares); a team may subscribe its own family too, with accounts other than the source.
Which accounts: the team's own, validated, not retired, and accepting incoming shares (a team's
"yes" to images from outside, like the directory of recipients).

A subscription sends nothing by itself: versions go out under the family's standing approval, and
one signed before the subscription was made or changed does not cover it. Every change of the list
(made, changed, ended) asks the approvals part to stop an approval that no longer covers exactly
what was signed (approvals.approvals_stop_for_change); ``changed_at`` records when the list moved.
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.access import require
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from distribution.models import Family, Subscription
from distribution.services.families import standing_approval_stop

NO_ACCOUNTS = "Choose at least one of your team's accounts to receive the family's versions."
ACCOUNT_NOT_YOURS = "Only your team's own accounts can receive a family's versions."
ACCOUNT_NOT_READY = "{label} cannot receive versions: {reason}."
FAMILY_ARCHIVED = "{name} is archived: it has no new versions to subscribe to."
ALREADY_SUBSCRIBED = "Your team already subscribes {name}: change the accounts of that subscription instead."
SAME_ACCOUNTS = "These are already the subscription's accounts: nothing changed."
ENDED = "This subscription has ended; subscribe again from the family directory."


def account_problem(account: CloudAccount, family: Family) -> str:
    """Why this account cannot receive the family's versions ("" when it can)."""
    if account.is_retired:
        return "it is retired"
    if not account.is_valid or not account.account_id:
        return "its keys are not validated"
    if not account.accepts_incoming_shares:
        return "it does not accept incoming shares (an admin turns that on for the account)"
    if account.pk == family.source_account_id:
        return "it is the family's source account"
    return ""


def _accounts(access: TeamAccess, family: Family, accounts) -> list[CloudAccount]:
    chosen = sorted({a.pk: a for a in accounts or []}.values(), key=lambda a: a.label)
    if not chosen:
        raise ValidationError({"accounts": NO_ACCOUNTS})
    for account in chosen:
        if account.team_id != access.team.pk:
            raise ValidationError({"accounts": ACCOUNT_NOT_YOURS})
        problem = account_problem(account, family)
        if problem:
            raise ValidationError({"accounts": ACCOUNT_NOT_READY.format(label=account.label, reason=problem)})
    return chosen


def _lines(accounts) -> list[dict]:
    return [{"label": a.label, "account_id": a.account_id, "region": a.region} for a in accounts]


def _details(family: Family) -> dict:
    return {"family": family.name, "family_team": family.team.name, "family_id": str(family.public_id)}


def subscription_create(*, access: TeamAccess, family: Family, accounts) -> Subscription:
    require(access, Capability.ACCEPT_SHARE)
    if family.archived_at is not None:
        raise ValidationError({"family": FAMILY_ARCHIVED.format(name=family.name)})
    chosen = _accounts(access, family, accounts)
    now = timezone.now()
    with recorder.atomic():
        try:
            with transaction.atomic():
                subscription = Subscription.objects.create(family=family, team=access.team, created_by=access.user,
                                                           created_at=now, changed_at=now)
        except IntegrityError:
            raise ValidationError({"family": ALREADY_SUBSCRIBED.format(name=family.name)}) from None
        subscription.accounts.set(chosen)
        record(action="subscription.created", actor=access.user, team=access.team, target=subscription,
               details={**_details(family), "accounts": _lines(chosen)})
        standing_approval_stop(family, f"{access.team.name} subscribed")
    return subscription


def subscription_change(*, access: TeamAccess, subscription: Subscription, accounts) -> Subscription:
    """New accounts for the subscription: ``changed_at`` moves, and the family's standing approval
    stops when it no longer covers exactly what was signed."""
    require(access, Capability.ACCEPT_SHARE, target=subscription)
    family = subscription.family
    chosen = _accounts(access, family, accounts)
    with recorder.atomic():
        # Under the row's lock: two changes at once apply one after the other, each recorded with its own before.
        locked = Subscription.objects.select_for_update().filter(pk=subscription.pk, team=access.team,
                                                                 ended_at__isnull=True).first()
        if locked is None:
            raise ValidationError(ENDED)
        before = sorted(locked.accounts.all(), key=lambda a: a.label)
        if {a.pk for a in before} == {a.pk for a in chosen}:
            raise ValidationError({"accounts": SAME_ACCOUNTS})
        locked.accounts.set(chosen)
        Subscription.objects.filter(pk=locked.pk).update(changed_at=timezone.now())
        locked.refresh_from_db()
        record(action="subscription.changed", actor=access.user, team=access.team, target=locked,
               details={**_details(family), "before": _lines(before), "after": _lines(chosen)})
        standing_approval_stop(family, f"{access.team.name} changed the accounts of its subscription")
    return locked


def subscription_end(*, access: TeamAccess, subscription: Subscription) -> Subscription:
    require(access, Capability.ACCEPT_SHARE, target=subscription)
    now = timezone.now()
    with recorder.atomic():
        if not Subscription.objects.filter(pk=subscription.pk, team=access.team, ended_at__isnull=True).update(
                ended_at=now, changed_at=now):
            raise ValidationError(ENDED)
        subscription.refresh_from_db()
        record(action="subscription.ended", actor=access.user, team=access.team, target=subscription,
               details={**_details(subscription.family),
                        "accounts": _lines(subscription.accounts.order_by("label"))})
        standing_approval_stop(subscription.family, f"{access.team.name} ended its subscription")
    return subscription
