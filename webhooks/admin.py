"""Webhook endpoints and their log in the admin: read-only (endpoints are managed on the team's pages,
where each change is audited), and never a sealed secret or a message body."""

from django.contrib import admin

from webhooks.models import WebhookDelivery, WebhookEndpoint


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnly):
    list_display = ("public_id", "team", "host", "created_at", "secret_rotated_at")
    list_filter = ("team",)
    fields = ("public_id", "team", "host", "description", "events", "created_by", "created_at", "updated_at",
              "secret_rotated_at", "previous_secret_until")
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly):
    list_display = ("msg_id", "event_type", "endpoint", "state", "attempt_count", "last_status", "created_at")
    list_filter = ("state", "event_type")
    fields = ("public_id", "endpoint", "event_type", "subject_id", "msg_id", "state", "tries", "attempt_count",
              "next_attempt_at", "lease_until", "last_status", "last_error", "created_at", "delivered_at")
    readonly_fields = fields
