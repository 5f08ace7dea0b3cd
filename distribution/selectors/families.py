"""Reads of families, their versions and subscriptions. Every query starts from the team.

A team's own families and subscriptions: another team's id is not found (NotInTeam, a 404 recorded
where the request is handled). The directory is the exception, on purpose: every team sees the live
families of every team (name, team, Region, how versions are found), as it sees the accounts'
directory when it asks for a share, so that it can subscribe.
"""

from django.db.models import Count, Exists, F, Max, OuterRef, Prefetch, Q, QuerySet

from accounts.access import NotInTeam
from accounts.models import CloudAccount, Team
from accounts.selectors import TeamAccess
from audit.recorder import AuditTarget
from distribution.models import Family, FamilyVersion, Subscription

ACTIVE = Q(ended_at__isnull=True)


def _not_found(access: TeamAccess, public_id, kind: str) -> NotInTeam:
    return NotInTeam("Not found in this team.", user=access.user, team=access.team,
                     target=AuditTarget(kind, str(public_id), ""))


def _with_counts(qs: QuerySet) -> QuerySet:
    return qs.select_related("team", "source_account").annotate(
        version_count=Count("versions", distinct=True), latest_number=Max("versions__number"),
        subscriber_count=Count("subscriptions", filter=Q(subscriptions__ended_at__isnull=True), distinct=True))


def families_for_team(*, team: Team) -> QuerySet:
    """The families the team publishes, live ones first, each with its counts: one query."""
    return _with_counts(Family.objects.filter(team=team)).order_by(F("archived_at").asc(nulls_first=True), "name")


def family_get_for_team(*, access: TeamAccess, public_id) -> Family:
    family = Family.objects.select_related("team", "source_account", "created_by") \
        .filter(team=access.team, public_id=public_id).first()
    if family is None:
        raise _not_found(access, public_id, "distribution.family")
    return family


def family_directory(*, team: Team) -> QuerySet:
    """Every live family of every team, with whether ``team`` subscribes it already."""
    mine = Subscription.objects.filter(ACTIVE, family=OuterRef("pk"), team=team)
    return _with_counts(Family.objects.filter(archived_at__isnull=True)).annotate(subscribed=Exists(mine)) \
        .order_by("team__name", "name")


def versions_for_family(*, family: Family) -> QuerySet:
    """Newest first, with the share made for each and the approval it went under."""
    return FamilyVersion.objects.filter(family=family).select_related("share", "approval").order_by("-number")


def subscriptions_for_family(*, family: Family) -> QuerySet:
    """The family's active subscriptions (every team's): the source team sees who receives it."""
    return Subscription.objects.filter(ACTIVE, family=family).select_related("team") \
        .prefetch_related(Prefetch("accounts", queryset=CloudAccount.objects.order_by("label"))) \
        .order_by("team__name")


def subscriptions_for_team(*, team: Team) -> QuerySet:
    """The subscriptions the team holds, active ones first."""
    return Subscription.objects.filter(team=team).select_related("family__team", "family__source_account") \
        .prefetch_related(Prefetch("accounts", queryset=CloudAccount.objects.order_by("label"))) \
        .order_by(F("ended_at").asc(nulls_first=True), "family__name", "-created_at")


def subscription_get_for_team(*, access: TeamAccess, public_id) -> Subscription:
    subscription = Subscription.objects.select_related("family__team", "family__source_account", "created_by") \
        .filter(team=access.team, public_id=public_id).first()
    if subscription is None:
        raise _not_found(access, public_id, "distribution.subscription")
    return subscription


def source_account_choices(*, team: Team) -> QuerySet:
    """Accounts a family may read its versions from: the team's, validated, not retired."""
    return CloudAccount.objects.filter(team=team, validation_status=CloudAccount.Validation.VALID,
                                       retired_at__isnull=True).exclude(account_id="").order_by("label")


def subscription_account_choices(*, team: Team) -> QuerySet:
    """Accounts that may receive a family's versions: the team's, validated, not retired, accepting
    incoming shares (the family's own source account is refused by the service)."""
    return source_account_choices(team=team).filter(accepts_incoming_shares=True)
