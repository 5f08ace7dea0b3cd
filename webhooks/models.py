"""Webhook endpoints (a team's receivers), the outbox of messages to deliver to them, and the log of
every delivery attempt.

The outbox row (``WebhookDelivery``) is written in the transaction of the change it announces
(transfers/events.py), once per endpoint and event (a unique constraint), so an event is neither
lost nor sent twice; Redis only carries the next attempt, and a sweep puts back any attempt whose
job was lost. A delivery is claimed by a conditional update that sets a lease, so two workers never
send the same attempt at once.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Team
from transfers.events import KINDS
from webhooks.url_checks import host_of

EVENT_CHOICES = [
    ("share.requested", "Share requested"),
    ("share.approved", "Share approved"),
    ("share.rejected", "Share rejected"),
    ("share.ready", "Share ready for its recipients"),
    ("import.completed", "Import completed (each recipient)"),
    ("import.failed", "Import failed (each recipient)"),
    ("share.expired", "Share expired"),
    ("link.expiring", "Manifest link expires within 24 hours"),
]
if {kind for kind, _ in EVENT_CHOICES} != set(KINDS):  # at import: a new event needs its words here
    raise ImportError("webhooks.models.EVENT_CHOICES must name every event of transfers.events.KINDS.")


class WebhookEndpoint(models.Model):
    """A team's receiver: an https URL, the events it subscribes to, and its signing secret
    (sealed by the vault, bound to the team and this row; shown once when made or rotated)."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list)
    secret_sealed = models.TextField()
    # After a rotation the old secret signs too (a second signature), until then: a receiver
    # switches secrets without rejecting a message meanwhile.
    previous_secret_sealed = models.TextField(blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["team", "created_at"], name="webhookendpoint_team")]

    def __str__(self):
        return f"webhook endpoint {self.host}"

    @property
    def host(self) -> str:
        return host_of(self.url)

    def event_labels(self) -> list[str]:
        labels = dict(EVENT_CHOICES)
        return [labels.get(kind, kind) for kind in self.events]


class WebhookDelivery(models.Model):
    """One event for one endpoint: its message (id, exact body) and where its delivery stands.

    ``msg_id`` is the ``webhook-id`` header: the same for every attempt, retries and redeliveries
    alike, so that receivers can recognise a message they already handled."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENDING = "sending", "Being sent"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=40)
    # What makes the event itself (kind, object, occasion): one delivery per endpoint and event.
    event_key = models.CharField(max_length=200)
    # What the event is about, for the log: a share's or a recipient's public id.
    subject_id = models.UUIDField()
    msg_id = models.CharField(max_length=64, unique=True)
    payload = models.TextField()  # the exact JSON body, signed as is at each attempt
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    tries = models.PositiveSmallIntegerField(default=0)  # attempts of the current series (redelivery starts one)
    attempt_count = models.PositiveIntegerField(default=0)  # attempts in all
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set by the claim (a conditional update): who sends now, and until when that claim holds.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhookdelivery_due"),
                   models.Index(fields=["endpoint", "-created_at"], name="webhookdelivery_endpoint")]
        constraints = [
            # Exactly once: an event emitted twice (a retried job, a sweep run twice) makes one delivery.
            models.UniqueConstraint(fields=["endpoint", "event_key"], name="webhookdelivery_once_per_event"),
        ]

    def __str__(self):
        return f"{self.event_type} {self.msg_id} ({self.state})"


class WebhookAttempt(models.Model):
    """One try at sending a delivery: when, what the receiver answered, how long it took, or why it
    could not be sent, in words."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True)
    redelivery = models.BooleanField(default=False)  # the first try of a series someone asked for

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["delivery", "-started_at"], name="webhookattempt_delivery")]

    def __str__(self):
        return f"attempt {self.number} of {self.delivery_id}"


class WebhookEventMark(models.Model):
    """An event found by a sweep rather than emitted by a change (a link about to expire): marked
    once found, so each is announced once, whatever the number of sweeps."""

    key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.key
