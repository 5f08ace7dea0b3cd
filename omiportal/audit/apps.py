from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    name = "omiportal.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        post_migrate.connect(_ensure_triggers, sender=self, dispatch_uid="omiportal.audit.ensure_triggers")


def _ensure_triggers(sender, using, plan=None, **kwargs):
    # A later migration that makes SQLite rebuild the audit table drops its
    # triggers with the old table; putting back whatever is missing after every
    # migrate keeps the table append-only without anyone having to remember.
    from django.db import connections

    from omiportal.audit import triggers
    from omiportal.audit.models import AuditEvent

    connection = connections[using]
    if AuditEvent._meta.db_table in connection.introspection.table_names():
        triggers.install(connection)
