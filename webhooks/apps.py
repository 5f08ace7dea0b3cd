from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self):
        # transfers announces its events and runs the sweeps of the apps above it without importing
        # them (transfers/events.py); accounts re-seals every sealed column at key rotation
        # (accounts/dependents.py). Imported here: they import the models.
        from accounts import dependents
        from transfers import events
        from webhooks import outbox, secrets, sweeps
        from webhooks.models import WebhookEndpoint

        events.register_sink(outbox.record_event)
        events.register_sweep(sweeps.sweep)
        dependents.register_sealed(dependents.SealedColumns(
            WebhookEndpoint, {"secret_sealed": secrets.FIELD, "previous_secret_sealed": secrets.PREVIOUS_FIELD},
            "webhook endpoint"))
