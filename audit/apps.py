from django.apps import AppConfig
from django.db import connections
from django.db.migrations.recorder import MigrationRecorder
from django.db.models.signals import post_migrate

from audit import triggers

TRIGGER_MIGRATION = ("audit", "0002_append_only")


class AuditConfig(AppConfig):
    name = "audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        # Registers the checkpoint signing key's system check; it imports the models, so it cannot
        # be imported before the app registry is ready (the usual Django cycle, hence here).
        from audit import integrity  # noqa: F401

        post_migrate.connect(_ensure_triggers, sender=self, dispatch_uid="audit.ensure_triggers")


def _ensure_triggers(sender, using, **kwargs):
    # A later migration that makes SQLite rebuild the audit table drops its
    # triggers with the old table; putting back whatever is missing after every
    # migrate (and test flush) keeps the table append-only without anyone having
    # to remember. Only once the trigger migration is applied, so unapplying it
    # really removes them.
    connection = connections[using]
    if TRIGGER_MIGRATION in MigrationRecorder(connection).applied_migrations():
        triggers.install(connection)
