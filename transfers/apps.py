from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    verbose_name = "Transfers"

    def ready(self):
        # Tells accounts what points at a cloud account (it may not import transfers). Imported here,
        # not at the top: it imports the models, which cannot load before the app registry is ready.
        from transfers import account_uses

        account_uses.register()
