from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "omiportal.audit"
    label = "audit"
    verbose_name = "Audit trail"
