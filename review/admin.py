from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

from accounts.access import deny_access
from audit.models import AuditEvent
from audit.recorder import AuditTarget, record
from review.views import NOT_COMPLIANCE, recordable

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


def _is_compliance_officer(request) -> bool:
    return getattr(request.user, "is_compliance_officer", False)  # the sign-in page asks as AnonymousUser


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only and only the recorder writes it.

    Like the portal's site-wide review pages, it shows every team's events, so only compliance
    officers read it, whatever their model permissions, and each read is recorded (``audit.read``).
    Superusers are not let in by their flag alone: one who wants to read grants themselves the
    compliance role first, and that grant is in the trail too (``user.access_changed``).
    """

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

    def has_module_permission(self, request):
        return _is_compliance_officer(request) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return _is_compliance_officer(request) and super().has_view_permission(request, obj)

    def _require_compliance(self, request):
        if not self.has_view_permission(request):
            deny_access(user=request.user, team=None, reason="not_compliance_officer",
                        target=AuditTarget("audit.trail", "all", "Audit trail of every team"),
                        details={"needs": "compliance", "via": "admin"})
            raise PermissionDenied(NOT_COMPLIANCE)

    def changelist_view(self, request, extra_context=None):
        self._require_compliance(request)
        record(action="audit.read", target=AuditTarget("audit.trail", "all", "Audit trail of every team"),
               details={"view": "admin-list", "filters": recordable(request.GET.dict())})
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._require_compliance(request)
        event = self.get_object(request, unquote(object_id))
        if event is not None:
            record(action="audit.read", team=event.team,
                   target=AuditTarget("audit.auditevent", str(event.public_id), f"#{event.seq} {event.action}"),
                   details={"view": "admin-event", "seq": event.seq})
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        self._require_compliance(request)
        return super().history_view(request, object_id, extra_context)
