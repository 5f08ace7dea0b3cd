"""Sending a delivery: claim it, sign it, post it, write the attempt down, and schedule the next
try with backoff and jitter, or give up.

The claim is a conditional update that takes a delivery due now (or one whose last claim lapsed,
its worker gone) and sets a lease: of two workers running the same job, or a job and the sweep's
copy of it, exactly one sends; the other finds nothing to claim. The result is written only under
the lease it was sent with. A 2xx answer delivers; anything else (another status, a refused or
timed-out connection, an address that is no longer public) is retried after
OMIPORTAL_WEBHOOK_RETRY_SECONDS[n], give or take a fifth, and the delivery fails after the last.
"""

import logging
import random
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from webhooks import outbox, secrets, sender
from webhooks.models import WebhookAttempt, WebhookDelivery
from webhooks.url_checks import UrlRefused, check_url

logger = logging.getLogger(__name__)

JITTER = 0.2  # each wait is its schedule's value ± 20%, so receivers that fail together are not retried together
NOT_DELIVERED = "Not sent: {reason}"
SECRET_SHUT = "the endpoint's signing secret does not open with the portal's key ring."


def retry_schedule() -> list[float]:
    return [float(s) for s in settings.OMIPORTAL_WEBHOOK_RETRY_SECONDS]


def timeout() -> float:
    return float(settings.OMIPORTAL_WEBHOOK_TIMEOUT_SECONDS)


def lease_seconds() -> float:
    # Resolving, connecting, sending and reading are each bounded by the timeout.
    return 4 * timeout() + 30


def backoff(tries: int) -> float | None:
    """Seconds before the next try after ``tries`` failed ones of a series; None: give up."""
    schedule = retry_schedule()
    if tries > len(schedule):
        return None
    return schedule[tries - 1] * random.uniform(1 - JITTER, 1 + JITTER)


def _claim(public_id: str, now) -> tuple[WebhookDelivery | None, uuid.UUID]:
    token = uuid.uuid4()
    claimed = WebhookDelivery.objects.filter(
        Q(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now)
        | Q(state=WebhookDelivery.State.SENDING, lease_until__lt=now),
        public_id=public_id,
    ).update(state=WebhookDelivery.State.SENDING, lease_token=token,
             lease_until=now + timedelta(seconds=lease_seconds()),
             tries=F("tries") + 1, attempt_count=F("attempt_count") + 1)
    if not claimed:
        return None, token
    return WebhookDelivery.objects.select_related("endpoint__team").get(public_id=public_id), token


def webhook_deliver(*, delivery_id: str) -> str:
    """Make one attempt of this delivery if it is due; what happened, in a word (for tests and logs)."""
    now = timezone.now()
    delivery, token = _claim(delivery_id, now)
    if delivery is None:
        return _not_claimed(delivery_id, now)
    endpoint = delivery.endpoint
    started = timezone.now()
    try:
        target = check_url(endpoint.url)  # again: the name may resolve elsewhere since it was saved
    except UrlRefused as exc:
        outcome = sender.Outcome(status=None, duration_ms=0, error=NOT_DELIVERED.format(reason=exc.messages[0]))
    else:
        body = delivery.payload.encode()
        try:
            signature = secrets.signature(endpoint, msg_id=delivery.msg_id, timestamp=started, body=body, now=started)
        except secrets.SecretUnavailable:
            # A key ring without the key it was sealed with: retried, as the operator may restore it.
            outcome = sender.Outcome(status=None, duration_ms=0, error=NOT_DELIVERED.format(reason=SECRET_SHUT))
        else:
            headers = {"webhook-id": delivery.msg_id, "webhook-timestamp": str(int(started.timestamp())),
                       "webhook-signature": signature}
            outcome = sender.post(target, body=body, headers=headers, timeout=timeout())
    return _finish(delivery, token, started, outcome)


def _not_claimed(delivery_id: str, now) -> str:
    """Nothing to send now: gone, done, sent by another worker, or not due yet. A job that ran
    early (a scheduler's second, the tests' workers) puts its attempt back at the time it is due."""
    row = WebhookDelivery.objects.filter(public_id=delivery_id).values("state", "next_attempt_at",
                                                                      "attempt_count").first()
    if row and row["state"] == WebhookDelivery.State.PENDING and row["next_attempt_at"] \
            and row["next_attempt_at"] > now:
        outbox.enqueue(delivery_id, row["attempt_count"] + 1, tag=f"-e{time.time_ns()}",
                       delay=(row["next_attempt_at"] - now).total_seconds())
        return "early"
    return "skipped"


def _finish(delivery: WebhookDelivery, token, started, outcome: sender.Outcome) -> str:
    now = timezone.now()
    state = WebhookDelivery.State
    with transaction.atomic():
        # Locked first: an endpoint deleted meanwhile (its deliveries with it) waits, or is gone.
        if not WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk).exists():
            return "gone"
        # The log says what happened, even when the lease lapsed meanwhile.
        WebhookAttempt.objects.create(delivery=delivery, number=delivery.attempt_count, started_at=started,
                                      duration_ms=outcome.duration_ms, status_code=outcome.status, ok=outcome.ok,
                                      error=outcome.error[:300],
                                      # Only a redelivery starts a series again after the first.
                                      redelivery=delivery.tries == 1 and delivery.attempt_count > 1)
        fields = {"last_status": outcome.status, "last_error": outcome.error[:300], "lease_token": None,
                  "lease_until": None}
        if outcome.ok:
            fields.update(state=state.DELIVERED, delivered_at=now, next_attempt_at=None)
            result = "delivered"
        else:
            wait = backoff(delivery.tries)
            if wait is None:
                fields.update(state=state.FAILED, next_attempt_at=None)
                result = "failed"
            else:
                fields.update(state=state.PENDING, next_attempt_at=now + timedelta(seconds=wait))
                result = "retry"
        if not WebhookDelivery.objects.filter(pk=delivery.pk, state=state.SENDING, lease_token=token) \
                .update(**fields):
            return "lease lost"
        if result == "retry":
            outbox.enqueue(delivery.public_id, delivery.attempt_count + 1, delay=wait)
    if result != "delivered":
        logger.info("Webhook %s to %s: attempt %d %s (%s)", delivery.msg_id, delivery.endpoint.host,
                    delivery.attempt_count, result, outcome.error)
    return result

