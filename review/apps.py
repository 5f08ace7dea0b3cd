from django.apps import AppConfig


class ReviewConfig(AppConfig):
    """The audit trail's review pages, downloads and admin: above transfers and accounts, whose
    access checks and share timeline they use, so the trail's core (audit) stays at the bottom."""

    name = "review"
    verbose_name = "Audit review"
