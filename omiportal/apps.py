from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The wiring as an app: only so its start-up checks register with the others' at ready()."""

    name = "omiportal"
    verbose_name = "OMI Portal"

    def ready(self):
        # Registers the production checks (production fails closed); they read settings only.
        # In ready(), Django's idiom: checks register once the app registry is loaded.
        from omiportal import checks  # noqa: F401
