"""Managing a team's webhook endpoints (admins) and asking for a redelivery. Services: they check
the role, write, and record each change in the audit trail in the same transaction.

The audit details name the URL's host, never the whole URL (a receiver may keep a token in its
path), and never a secret.
"""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.access import require
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from transfers.events import KINDS
from webhooks import outbox, secrets
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.url_checks import check_url

NO_EVENTS = "Choose at least one event to send."
UNKNOWN_EVENT = "Unknown event: {kind}."
DESCRIPTION_TOO_LONG = "A description has at most 200 characters."
TEXT_NUL = "Text cannot contain a NUL character."
STILL_ON_ITS_WAY = "This message is still on its way (attempt {n}): wait for it to end before sending it again."
GONE = "This endpoint was deleted meanwhile."


def _clean(*, url: str, description: str, events) -> tuple[str, str, list[str]]:
    url, description = (url or "").strip(), (description or "").strip()
    if "\x00" in url or "\x00" in description:
        raise ValidationError(TEXT_NUL)
    if len(description) > 200:
        raise ValidationError(DESCRIPTION_TOO_LONG)
    chosen = [kind for kind in KINDS if kind in set(events or [])]  # in the events' own order
    unknown = sorted(set(events or []) - set(KINDS))
    if unknown:
        raise ValidationError(UNKNOWN_EVENT.format(kind=unknown[0]))
    if not chosen:
        raise ValidationError(NO_EVENTS)
    check_url(url)  # UrlRefused (a ValidationError) says why, and nothing is saved
    return url, description, chosen


def _details(endpoint: WebhookEndpoint) -> dict:
    return {"host": endpoint.host, "events": list(endpoint.events), "description": endpoint.description}


def endpoint_create(*, access: TeamAccess, url: str, description: str, events) -> tuple[WebhookEndpoint, str]:
    """Make an endpoint and return it with its signing secret: the only time the secret is given."""
    require(access, Capability.MANAGE_TEAM)
    url, description, events = _clean(url=url, description=description, events=events)
    secret = secrets.new_secret()
    with recorder.atomic():
        endpoint = WebhookEndpoint(team=access.team, url=url, description=description, events=events,
                                   created_by=access.user)
        endpoint.secret_sealed = secrets.seal(endpoint, secret)
        endpoint.save()
        record(action="webhook.created", actor=access.user, team=access.team, target=endpoint,
               details=_details(endpoint))
    return endpoint, secret


def endpoint_update(*, access: TeamAccess, endpoint: WebhookEndpoint, url: str, description: str,
                    events) -> WebhookEndpoint:
    require(access, Capability.MANAGE_TEAM, target=endpoint)
    url, description, events = _clean(url=url, description=description, events=events)
    before, url_changed = _details(endpoint), url != endpoint.url
    with recorder.atomic():
        if not WebhookEndpoint.objects.filter(pk=endpoint.pk, team=access.team).update(
                url=url, description=description, events=events, updated_at=timezone.now()):
            raise ValidationError(GONE)
        endpoint.refresh_from_db()
        after = _details(endpoint)
        record(action="webhook.changed", actor=access.user, team=access.team, target=endpoint,
               details={"before": before, "after": after, "url_changed": url_changed})
    return endpoint


def endpoint_delete(*, access: TeamAccess, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint, its messages and their log (its sends still under way find nothing)."""
    require(access, Capability.MANAGE_TEAM, target=endpoint)
    with recorder.atomic():
        details = {**_details(endpoint), "deliveries": endpoint.deliveries.count()}
        record(action="webhook.deleted", actor=access.user, team=access.team, target=endpoint, details=details)
        if not WebhookEndpoint.objects.filter(pk=endpoint.pk, team=access.team).delete()[0]:
            raise ValidationError(GONE)


def endpoint_rotate_secret(*, access: TeamAccess, endpoint: WebhookEndpoint) -> str:
    """A new secret, returned once. The old one also signs for OMIPORTAL_WEBHOOK_SECRET_OVERLAP_HOURS
    (a second signature), so a receiver can switch without refusing a message meanwhile."""
    require(access, Capability.MANAGE_TEAM, target=endpoint)
    secret = secrets.new_secret()
    now = timezone.now()
    overlap = timedelta(hours=float(settings.OMIPORTAL_WEBHOOK_SECRET_OVERLAP_HOURS))
    with recorder.atomic():
        current = WebhookEndpoint.objects.select_for_update().select_related("team") \
            .filter(pk=endpoint.pk, team=access.team).first()
        if current is None:
            raise ValidationError(GONE)
        # The old secret is sealed again under its own field: a value opens only where it was sealed.
        previous = secrets.reseal_as_previous(current) if overlap.total_seconds() > 0 else ""
        WebhookEndpoint.objects.filter(pk=current.pk).update(
            secret_sealed=secrets.seal(current, secret), previous_secret_sealed=previous,
            previous_secret_until=now + overlap if previous else None, secret_rotated_at=now, updated_at=now)
        endpoint.refresh_from_db()
        record(action="webhook.secret_rotated", actor=access.user, team=access.team, target=endpoint,
               details={"host": endpoint.host, "old_one_signs_until":
                        endpoint.previous_secret_until.isoformat() if previous else None})
    return secret


def delivery_redeliver(*, access: TeamAccess, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a message again, with the same webhook-id (receivers recognise it), as a new attempt
    that starts a new series of retries."""
    endpoint = delivery.endpoint
    require(access, Capability.MANAGE_TEAM, target=endpoint)
    now = timezone.now()
    with recorder.atomic():
        if not WebhookDelivery.objects.filter(
                pk=delivery.pk, endpoint__team=access.team,
                state__in=[WebhookDelivery.State.DELIVERED, WebhookDelivery.State.FAILED]).update(
                state=WebhookDelivery.State.PENDING, tries=0, next_attempt_at=now, last_error=""):
            delivery.refresh_from_db()
            raise ValidationError(STILL_ON_ITS_WAY.format(n=delivery.attempt_count))
        delivery.refresh_from_db()
        record(action="webhook.redelivery_requested", actor=access.user, team=access.team, target=endpoint,
               details={"delivery": str(delivery.public_id), "msg_id": delivery.msg_id,
                        "event": delivery.event_type, "subject": str(delivery.subject_id),
                        "attempts_before": delivery.attempt_count})
        outbox.enqueue(delivery.public_id, delivery.attempt_count + 1)
    return delivery

