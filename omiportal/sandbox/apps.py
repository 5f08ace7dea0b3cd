from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "omiportal.sandbox"
    label = "sandbox"
    verbose_name = "OUTSCALE sandbox"
