from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class TwoFactorConfig(AppConfig):
    name = "accounts.twofactor"
    label = "twofactor"
    verbose_name = "Two-factor sign-in"

    def ready(self):
        # In ready(), Django's idiom: the receivers import the models, which cannot load before the app registry.
        from accounts.twofactor import signals  # noqa: F401  (connects the receivers)


class PortalAdminConfig(AdminConfig):
    """Django's admin, but its default site also requires a verified OTP device (WEB-12)."""

    default_site = "accounts.twofactor.admin_site.PortalAdminSite"
