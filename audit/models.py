"""The audit trail's two tables: the events and the head of their hash chain."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from audit.actions import ACTION_RE
from audit.errors import AuditError
from audit.hashing import GENESIS_HASH

ACTION_INVALID = (
    "Audit action {action!r} must be dotted lowercase past tense, like 'share.approved' or "
    "'membership.role_changed'."
)
action_validator = RegexValidator(ACTION_RE, "Use dotted lowercase past tense, like 'share.approved'.")

APPEND_ONLY = "Audit events are append-only: they cannot be changed or deleted."


class AuditEventQuerySet(models.QuerySet):
    # The database triggers are the real guarantee; refusing here too gives a
    # clear Python error at the line that tried, before any SQL is sent.
    def update(self, **kwargs):
        raise AuditError(APPEND_ONLY)

    def delete(self):
        raise AuditError(APPEND_ONLY)

    update.queryset_only = True
    delete.queryset_only = True


class AuditEvent(models.Model):
    """One thing that happened. Written once by ``recorder.record``, never changed."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        DENIED = "denied", "Denied"
        FAILED = "failed", "Failed"

    # Gapless, from 1: the position in the chain. Used as the primary key so the
    # chain order is the table's natural order.
    seq = models.BigIntegerField(primary_key=True, editable=False)
    public_id = models.UUIDField(unique=True, editable=False)
    occurred_at = models.DateTimeField(editable=False)
    # No database constraint and no cascade: deleting a user or team must never
    # touch (UPDATE or DELETE) an audit row. The names are copied for the same reason.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, db_index=False, related_name="+",
    )
    actor_name = models.CharField(max_length=254, blank=True)
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, db_index=False, related_name="+",
    )
    team_name = models.CharField(max_length=80, blank=True)
    action = models.CharField(max_length=64, validators=[action_validator])
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=100, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    cloud_request_ids = models.JSONField(default=list, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["team", "seq"], name="audit_team_seq"),
            models.Index(fields=["actor", "seq"], name="audit_actor_seq"),
            models.Index(fields=["action", "seq"], name="audit_action_seq"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
            models.Index(fields=["occurred_at"], name="audit_occurred_at"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_event_seq_positive"),
            models.CheckConstraint(
                condition=models.Q(outcome__in=["success", "denied", "failed"]), name="audit_event_outcome_valid"
            ),
        ]

    def __str__(self):
        return f"#{self.seq} {self.action} ({self.outcome})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditError(APPEND_ONLY)
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditError(APPEND_ONLY)


class AuditChainHead(models.Model):
    """The single row naming the chain's last event.

    Appends lock it (``select_for_update``) so they happen one at a time, and
    verification compares it with the last event, which is how a deleted tail
    is noticed. Triggers refuse deleting it or moving it other than one step on.
    """

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_head_singleton")]

    def __str__(self):
        return f"audit chain head at #{self.seq}"



class AuditPendingEvent(models.Model):
    """An event recorded while the chain head was busy, waiting for its place in the chain.

    A web request does not queue behind the chain head (``recorder._append``): when another
    transaction holds it, the request's events are written here, in the request's own
    transaction (so they commit or roll back with its change), and the next writer that holds the
    head chains them, oldest first, before its own events (or ``audit_chain_job`` does, at the
    latest a tick later). Chaining inserts the event and deletes this row in one transaction.
    Triggers refuse changing a row and deleting one that is not in the chain yet, so a row leaves
    this table only by being chained; verification fails on a row left here too long.
    """

    id = models.BigAutoField(primary_key=True)
    public_id = models.UUIDField(unique=True, editable=False)
    recorded_at = models.DateTimeField(editable=False)
    # Every other field of the AuditEvent it becomes, but seq, occurred_at and the hashes (given
    # when it is chained), as JSON: recorder._parked_fields says how.
    fields = models.JSONField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"pending audit event {self.public_id} ({self.fields.get('action', '')})"



# Operational data beside the chain: one row per verification run (audit.integrity).
class AuditVerification(models.Model):
    ran_at = models.DateTimeField(default=timezone.now, db_index=True)
    ok = models.BooleanField()
    count = models.BigIntegerField(default=0)  # events checked
    last_seq = models.BigIntegerField(default=0)  # the last good seq
    checkpoint_seq = models.BigIntegerField(null=True, blank=True)  # latest checkpoint compared, if any
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        app_label = "audit"
        ordering = ["-ran_at", "-id"]

    def __str__(self):
        return f"audit verification {'ok' if self.ok else 'FAILED'} at {self.ran_at:%Y-%m-%d %H:%M:%S}"
