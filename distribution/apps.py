from django.apps import AppConfig


class DistributionConfig(AppConfig):
    name = "distribution"
    verbose_name = "Distribution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Retention: the tick proposes a run for each rule with copies to delete, and takes back
        # deletions whose job was lost or whose worker died (services/retention_deletes.py).
        from distribution.services import retention_deletes
        from transfers import events

        events.register_sweep(retention_deletes.retention_sweep)
