from django.contrib import admin

from omiportal.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only and only the recorder writes it."""

    list_display = ("seq", "occurred_at", "actor_name", "team_name", "action", "outcome", "target_label")
    list_filter = ("outcome", "occurred_at")
    search_fields = ("action", "actor_name", "team_name", "target_label", "target_id", "request_id")
    ordering = ("-seq",)
    show_full_result_count = False  # COUNT(*) on a large append-only table is slow and rarely useful

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
