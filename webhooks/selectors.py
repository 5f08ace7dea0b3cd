"""Reads of a team's webhook endpoints and their delivery log. Every query starts from the team;
another team's endpoint or message is not found (a 404, recorded where the request is handled)."""

from django.db.models import Count, Max, Prefetch, Q, QuerySet

from accounts.access import NotInTeam
from accounts.selectors import TeamAccess
from audit.recorder import AuditTarget
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def _not_found(access: TeamAccess, public_id, kind: str) -> NotInTeam:
    return NotInTeam("Not found in this team.", user=access.user, team=access.team,
                     target=AuditTarget(kind, str(public_id), ""))


def endpoints_for_team(*, team) -> QuerySet:
    """The team's endpoints with what their log says at a glance: one query."""
    state = WebhookDelivery.State
    return WebhookEndpoint.objects.filter(team=team).annotate(
        delivered=Count("deliveries", filter=Q(deliveries__state=state.DELIVERED)),
        failed=Count("deliveries", filter=Q(deliveries__state=state.FAILED)),
        waiting=Count("deliveries", filter=Q(deliveries__state__in=[state.PENDING, state.SENDING])),
        last_event_at=Max("deliveries__created_at"),
    ).order_by("created_at")


def endpoint_get_for_team(*, access: TeamAccess, public_id) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.select_related("team").filter(team=access.team, public_id=public_id).first()
    if endpoint is None:
        raise _not_found(access, public_id, "webhooks.webhookendpoint")
    return endpoint


def deliveries_for_endpoint(*, endpoint: WebhookEndpoint) -> QuerySet:
    """Newest first, each with its attempts (newest first); page it before reading."""
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk").prefetch_related(
        Prefetch("attempts", queryset=WebhookAttempt.objects.order_by("-started_at", "-pk")))


def delivery_get_for_endpoint(*, access: TeamAccess, endpoint: WebhookEndpoint, public_id) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.select_related("endpoint__team") \
        .filter(endpoint=endpoint, endpoint__team=access.team, public_id=public_id).first()
    if delivery is None:
        raise _not_found(access, public_id, "webhooks.webhookdelivery")
    return delivery
