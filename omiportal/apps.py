from django.apps import AppConfig
from django.conf import settings
from django.core.signals import setting_changed

import outscale

# The settings the cloud layer is built from (it reads none itself).
CLOUD_SETTINGS = {"SECRET_KEY", "SECRET_KEY_FALLBACKS", "REDIS_URL"}
CLOUD_PREFIX = "OMIPORTAL_OUTSCALE_"


def configure_cloud() -> None:
    """Hand the cloud layer its configuration, from the settings."""
    outscale.configure(outscale.Config(
        endpoints=settings.OMIPORTAL_OUTSCALE_ENDPOINTS or {},
        connect_timeout=settings.OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT,
        read_timeout=settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT,
        calls_per_second=settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND,
        pace_url=settings.REDIS_URL if settings.OMIPORTAL_OUTSCALE_PACE_SHARED else "",
        retry_attempts=settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS,
        retry_base_delay=settings.OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY,
        retry_max_delay=settings.OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY,
        mark_keys=(settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS),
    ))


def _setting_changed(*, setting, **kwargs) -> None:
    # override_settings and the settings fixture reach the cloud layer on their next call.
    if setting in CLOUD_SETTINGS or setting.startswith(CLOUD_PREFIX):
        configure_cloud()


class PortalConfig(AppConfig):
    """The wiring as an app: the production checks register, and the cloud layer gets its
    configuration, when the apps are ready."""

    name = "omiportal"
    verbose_name = "OMI Portal"

    def __init__(self, app_name, app_module):
        super().__init__(app_name, app_module)
        # Every host keeps PostgreSQL's time (omiportal/clock.py). Installed here, before any app's
        # models are imported, so fields with default=timezone.now take the database's clock too.
        if settings.OMIPORTAL_CLOCK_FROM_DATABASE:
            from omiportal import clock

            clock.install()

    def ready(self):
        # Registers the production checks (production fails closed); they read settings only.
        # In ready(), Django's idiom: checks register once the app registry is loaded.
        from omiportal import checks  # noqa: F401

        configure_cloud()
        setting_changed.connect(_setting_changed, dispatch_uid="omiportal.configure_cloud")
