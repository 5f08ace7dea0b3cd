"""API tokens (stored hashed, shown once) and the record of each idempotent POST."""

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Role, Team


class ApiToken(models.Model):
    """A bearer token acting within one team, at most with ``role``.

    Personal: it acts for ``user`` (never beyond that person's current role in the team).
    Service: a team's pipeline; ``user`` is the admin who made it and answers for it (its uses are
    recorded with that person and the token), it is capped by that admin's current role, and it
    can never approve.
    """

    class Kind(models.TextChoices):
        PERSONAL = "personal", "Personal"
        SERVICE = "service", "Team service"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=80)
    role = models.CharField(max_length=16, choices=Role.choices)
    # The token is "omi_<prefix>_<secret>": the prefix finds the row and is safe to show; only the
    # SHA-256 of the whole token is kept (a random 256-bit secret needs no slow hash).
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"], name="apitoken_team_created")]
        constraints = [
            # A service token never holds the approver's or admin's role: approval stays with people.
            models.CheckConstraint(condition=~Q(kind="service") | Q(role__in=[Role.MEMBER, Role.AUDITOR]),
                                   name="apitoken_service_never_approves"),
        ]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display().lower()} token omi_{self.prefix}…)"

    @property
    def is_service(self) -> bool:
        return self.kind == self.Kind.SERVICE

    def is_usable(self, now=None) -> bool:
        return self.revoked_at is None and self.expires_at > (now or timezone.now())


class IdempotentRequest(models.Model):
    """One POST made with an ``Idempotency-Key``: what it asked (a fingerprint) and what it got.

    Exactly once by a constraint and one transaction: the row is inserted in the same transaction
    as the POST's own writes and holds its answer when that transaction commits. A second POST with
    the same key waits on the unique index until the first commits, then gets the stored answer;
    if the first rolled back, the second runs instead.
    """

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # SHA-256 of method, path and body
    status_code = models.PositiveSmallIntegerField(default=0)
    response = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    location = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["token", "key"], name="idempotentrequest_once_per_token")]

    def __str__(self):
        return f"{self.key} ({self.status_code or 'in flight'})"
