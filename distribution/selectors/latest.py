"""Reads of the latest pointer: per account, the copy of a family that carries its latest tag.

The same rows answer the family's latest page, the API (GET /api/v1/families/{id}/latest/) and,
in each account, ReadImages with ``Tags: ["omiportal:latest=<family>"]`` (the tagging job keeps
``is_latest`` as it tags, under the same lock).

Who sees what: the family's own team sees every account its shares delivered the family to;
another team sees its own accounts only, and only for a family it holds copies of or subscribes.
"""

from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.access import NotInTeam
from accounts.selectors import TeamAccess
from audit.recorder import AuditTarget
from distribution.models import Family, InventoryEntry, Subscription


def family_get_for_latest(*, access: TeamAccess, public_id) -> Family:
    team = access.team
    holds = InventoryEntry.objects.filter(family=OuterRef("pk"), team=team)
    subscribes = Subscription.objects.filter(family=OuterRef("pk"), team=team, ended_at__isnull=True)
    family = Family.objects.select_related("team").filter(public_id=public_id) \
        .filter(Q(team=team) | Exists(holds) | Exists(subscribes)).first()
    if family is None:
        raise NotInTeam("No such family for this team.", user=access.user, team=team,
                        target=AuditTarget("distribution.family", str(public_id), ""))
    return family


def latest_per_account(*, team, family: Family) -> QuerySet:
    """The copies holding the family's latest tag, one per account, with the account (and its team)
    and the version: one query."""
    qs = InventoryEntry.objects.filter(family=family, is_latest=True, orphan=False)
    qs = qs.filter(recipient__share__team=team) if family.team_id == team.pk else qs.filter(team=team)
    return qs.select_related("account", "account__team", "version").order_by("account__team__name",
                                                                               "account__label", "pk")
