from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

from omiportal.audit.models import AuditEvent

ESTIMATE_ABOVE = 100_000  # rows; below this an exact COUNT(*) is cheap enough


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL, the unfiltered trail's size from the planner's statistics (``pg_class.reltuples``,
    kept by autovacuum and ANALYZE) instead of a COUNT(*) over every row on each page. Filtered lists,
    small tables and other databases are counted exactly."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        connection = connections[qs.db]
        if connection.vendor == "postgresql" and not qs.query.where:
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [qs.model._meta.db_table])
                row = cursor.fetchone()
            if row and row[0] > ESTIMATE_ABOVE:
                return int(row[0])
        return super().count


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only and only the recorder writes it."""

    list_display = ("seq", "occurred_at", "actor_name", "team_name", "action", "outcome", "target_label")
    list_filter = ("outcome", "occurred_at")
    search_fields = ("action", "actor_name", "team_name", "target_label", "target_id", "request_id")
    ordering = ("-seq",)
    show_full_result_count = False  # COUNT(*) on a large append-only table is slow and rarely useful
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
