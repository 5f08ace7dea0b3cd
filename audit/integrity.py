"""Operational record of verification runs, and the system check for checkpoints.

``AuditVerification`` rows are written by every ``audit_verify`` run and by the
periodic verification job; the review pages read the latest one through
``checkpoints.latest_status()``. They are not part of the hash chain (a row here
proves nothing by itself: re-run ``audit_verify`` to know).
"""

from django.conf import settings
from django.core import checks
from django.db import models
from django.utils import timezone

from audit.errors import AuditError


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


NO_SIGNING_KEY = "Audit checkpoints are disabled: OMIPORTAL_AUDIT_SIGNING_KEY is not set."
NO_SIGNING_KEY_HINT = (
    "Set OMIPORTAL_AUDIT_SIGNING_KEY to the base64 of a 32-byte raw Ed25519 private key "
    "(generate one with: python manage.py audit_checkpoint --generate-key) and keep its public key "
    "(printed too) somewhere the database's administrators cannot change. Without signed checkpoints "
    "stored outside the database, someone who can write to the database can rewrite the audit trail undetected."
)


@checks.register(checks.Tags.security, deploy=False)
def audit_checkpoint_check(app_configs=None, **kwargs):
    from audit import signing

    try:
        key = signing.signing_key()
        signing.verify_keys()
    except AuditError as exc:
        return [checks.Error(str(exc), id="audit.E001")]
    if key is None and not settings.DEBUG:
        return [checks.Warning(NO_SIGNING_KEY, hint=NO_SIGNING_KEY_HINT, id="audit.W001")]
    return []
