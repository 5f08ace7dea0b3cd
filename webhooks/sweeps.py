"""What the reconciler runs for webhooks on every tick (registered with transfers.events):

- ``link.expiring``: a share whose manifest link still has recipients to serve and expires within
  OMIPORTAL_WEBHOOK_LINK_WARNING_HOURS. Found by time, not by a change, so each one is marked once
  found (WebhookEventMark, unique key per share and export): announced once, whatever the sweeps.
- the safety net: a delivery whose attempt is overdue (its job lost with a flushed Redis, a worker
  killed while sending) is enqueued again; the claim makes a duplicate harmless.
"""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from transfers.events import emit
from transfers.models import Recipient, Share
from webhooks import outbox
from webhooks.models import WebhookDelivery, WebhookEventMark

BATCH = 500


def sweep(*, now) -> int:
    overdue = now - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    return links_expiring(now=now) + deliveries_due_again(now=now, overdue=overdue)


def links_expiring(*, now) -> int:
    horizon = now + timedelta(hours=float(settings.OMIPORTAL_WEBHOOK_LINK_WARNING_HOURS))
    candidates = list(
        Share.objects.filter(state__in=[Share.State.READY, Share.State.IMPORTING],
                             export__manifest_deadline__gt=now, export__manifest_deadline__lte=horizon,
                             recipients__state=Recipient.State.OFFERED,
                             recipients__method__in=Recipient.EXPORT_METHODS)
        .values_list("pk", "public_id", "export__public_id").distinct()[:BATCH])
    keys = {pk: f"link.expiring:{public_id}:{export_id}" for pk, public_id, export_id in candidates}
    seen = set(WebhookEventMark.objects.filter(key__in=keys.values()).values_list("key", flat=True))
    found = 0
    for pk, _, export_id in candidates:
        if keys[pk] in seen:
            continue
        try:
            with transaction.atomic():
                WebhookEventMark.objects.create(key=keys[pk], created_at=now)
                emit("link.expiring", [pk], occasion=str(export_id))
        except IntegrityError:
            continue  # another worker's sweep marked it first
        found += 1
    return found


def deliveries_due_again(*, now, overdue) -> int:
    state = WebhookDelivery.State
    due = (WebhookDelivery.objects.filter(state=state.PENDING, next_attempt_at__lt=overdue)
           | WebhookDelivery.objects.filter(state=state.SENDING, lease_until__lt=now))
    count = 0
    for row in due.order_by("next_attempt_at").values("pk", "public_id", "state", "next_attempt_at",
                                                      "attempt_count")[:BATCH]:
        if row["state"] == state.PENDING:
            # Only as read, and pushed to now: the next sweep leaves it alone for another grace period.
            moved = WebhookDelivery.objects.filter(pk=row["pk"], state=state.PENDING,
                                                   next_attempt_at=row["next_attempt_at"]).update(next_attempt_at=now)
        else:
            moved = 1  # a lapsed lease: the claim takes the delivery back
        if moved:
            with transaction.atomic():  # enqueued at once (on_commit of this block)
                outbox.enqueue(row["public_id"], row["attempt_count"] + 1, tag=f"-r{int(now.timestamp())}")
            count += 1
    return count
