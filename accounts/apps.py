from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Teams and accounts"

    def ready(self):
        # In ready(), Django's idiom: both import the models, which cannot load before the app registry.
        from accounts import checks, signals  # noqa: F401  (registers checks and auth signal receivers)
