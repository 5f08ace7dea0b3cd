"""Django admin for operators. Sealed keys are never displayed or editable here."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import CloudAccount, Membership, Team, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_active", "is_staff", "is_compliance_officer"]
    list_filter = ["is_active", "is_staff", "is_compliance_officer"]
    search_fields = ["email", "full_name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name"]}),
        ("Access", {"fields": ["is_active", "is_staff", "is_superuser", "is_compliance_officer"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["user", "role", "created_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # memberships change through the portal so they are audited


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [MembershipInline]


@admin.register(CloudAccount)
class CloudAccountAdmin(admin.ModelAdmin):
    list_display = ["label", "team", "region", "account_id", "access_key_hint", "validation_status"]
    list_filter = ["region", "validation_status"]
    search_fields = ["label", "account_id", "team__name"]
    exclude = ["access_key_sealed", "secret_key_sealed"]
    readonly_fields = [
        "public_id", "team", "label", "region", "access_key_hint", "account_id", "export_bucket",
        "accepts_incoming_shares", "validation_status", "validation_message", "validated_at",
        "created_at", "updated_at",
    ]

    def has_add_permission(self, request):
        return False  # keys are sealed and audited by the portal's own form

    def has_change_permission(self, request, obj=None):
        return False
