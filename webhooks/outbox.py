"""The outbox: an event becomes one delivery per endpoint subscribed to it, in the transaction of
the change it announces, and each delivery's first attempt is enqueued once that commits.

Registered with transfers.events from the app's ready(). ``event_key`` names the event itself
(kind, object, occasion), and a unique constraint on (endpoint, event_key) keeps one delivery per
endpoint however many times the event is emitted: a job run twice, a sweep run on two workers.
"""

import uuid

from django.db.models import Q
from django.utils import timezone

from transfers import scheduling
from transfers.events import RECIPIENT_EVENTS
from transfers.models import Recipient, Share
from webhooks import payloads
from webhooks.models import WebhookDelivery, WebhookEndpoint


def job_id(delivery_public_id, number: int, tag: str = "") -> str:
    return f"webhook-deliver-{delivery_public_id}-{number}{tag}"


def enqueue(delivery_public_id, number: int, *, delay: float = 0, tag: str = "") -> None:
    """Enqueue an attempt of this delivery once the current transaction commits (ids only)."""
    scheduling.enqueue("webhooks.jobs.webhook_deliver_job", str(delivery_public_id),
                       job_id=job_id(delivery_public_id, number, tag), delay=delay)


def _event_key(kind: str, subject_public_id, occasion: str) -> str:
    return f"{kind}:{subject_public_id}:{occasion}"


def _teams_concerned(kind: str, ids: list[int]) -> Q:
    """The endpoints of the teams an event may concern (payloads.subjects says exactly which), as
    subqueries: one query finds them, however many teams have endpoints."""
    if kind in RECIPIENT_EVENTS:
        return (Q(team__in=Recipient.objects.filter(pk__in=ids).values("team_id"))
                | Q(team__in=Share.objects.filter(recipients__in=ids).values("team_id")))
    return (Q(team__in=Share.objects.filter(pk__in=ids).values("team_id"))
            | Q(team__in=Recipient.objects.filter(share__in=ids).values("team_id")))


def record_event(kind: str, ids: list[int], occasion: str) -> None:
    """The sink: in the caller's transaction. One query when no endpoint of the teams concerned listens."""
    endpoints = [e for e in WebhookEndpoint.objects.filter(_teams_concerned(kind, ids)).only("pk", "team_id", "events")
                 .order_by() if kind in e.events]
    if not endpoints:
        return
    subjects = payloads.subjects(kind, ids)
    now = timezone.now()
    rows = []
    for pk in ids:
        subject = subjects.get(pk)
        if subject is None:
            continue
        # An import's own attempt tells its ends apart: one failed, retried, then completed.
        when = str(subject["recipient"].attempt) if kind in RECIPIENT_EVENTS else occasion
        key = _event_key(kind, subject["public_id"], when)
        for endpoint in endpoints:
            data = subject["views"].get(endpoint.team_id)
            if data is None:
                continue
            rows.append(WebhookDelivery(
                endpoint_id=endpoint.pk, event_type=kind, event_key=key, subject_id=subject["public_id"],
                msg_id=f"msg_{uuid.uuid4().hex}", payload=payloads.body(kind=kind, timestamp=now, data=data),
                next_attempt_at=now, created_at=now))
    if not rows:
        return
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    # Those this call made (a conflict keeps the row from before): their new message ids say which.
    for public_id in WebhookDelivery.objects.filter(msg_id__in=[r.msg_id for r in rows]) \
            .values_list("public_id", flat=True):
        enqueue(public_id, 1)
