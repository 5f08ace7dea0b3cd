from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Teams and accounts"

    def ready(self):
        from accounts import checks, signals  # noqa: F401  (registers checks and auth signal receivers)
