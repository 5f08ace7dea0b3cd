"""Django admin for operators: it can look at everything and undo none of the portal's controls.

Credentials (passwords, second factors, sealed keys) and team security settings, memberships and roles
change only through the portal's own pages, which check roles and record each change in the audit
trail. What the admin may still change (access flags, device removal) is recorded here, in the same
transaction as the save (INS-05).
"""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied

from accounts.access import deny_access
from accounts.models import CloudAccount, Membership, Team, User
from audit.recorder import record

NO_PASSWORD_CHANGE = "Passwords are changed by their owner in the portal, or reset by email; never in the admin."
ACCESS_FLAGS = ("is_active", "is_staff", "is_superuser", "is_compliance_officer")


class ViewOnlyAdmin(admin.ModelAdmin):
    """Shown to staff with view permission; no add, change or delete whatever their model permissions."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """People arrive by the portal's invitations (or ``createsuperuser``) and set their own password.

    Here an operator only flips access flags. Flags stay editable rather than read-only because
    operators need somewhere to deactivate a person or grant the compliance role; each change is
    recorded (``user.access_changed``, before and after). The email is read-only: it is where
    password resets go, so changing it would hand over the account.
    """

    # A plain model form: Django's UserChangeForm links to the password change view.
    form = forms.ModelForm
    ordering = ["email"]
    list_display = ["email", "full_name", "is_active", "is_staff", "is_compliance_officer"]
    list_filter = ["is_active", "is_staff", "is_compliance_officer"]
    search_fields = ["email", "full_name"]
    fieldsets = [
        (None, {"fields": ["email", "password_state"]}),
        ("Profile", {"fields": ["full_name"]}),
        ("Access", {"fields": list(ACCESS_FLAGS)}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    readonly_fields = ["email", "password_state", "full_name", "last_login", "date_joined"]
    # Group and permission assignments are left out on purpose: they would let staff raise their own powers.
    filter_horizontal = []
    actions = None

    @admin.display(description="Password")
    def password_state(self, user):
        return "Set" if user.has_usable_password() else "Not set"

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields.append("is_superuser")  # only a superuser makes another one
        return fields

    def has_add_permission(self, request, obj=None):
        return False  # people come in by invitation, or by createsuperuser on the server

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # staff cannot deactivate or demote the superusers above them
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead: deleting would drop memberships without an audit event

    def user_change_password(self, request, id, form_url=""):
        deny_access(user=request.user, team=None, reason="admin_password_change",
                    target=self.get_object(request, unquote(id)), details={"via": "admin"})
        raise PermissionDenied(NO_PASSWORD_CHANGE)

    def save_model(self, request, obj, form, change):
        # changeform_view runs in one transaction: the event commits or rolls back with the save.
        before = User.objects.filter(pk=obj.pk).values(*ACCESS_FLAGS).first() or {}
        super().save_model(request, obj, form, change)
        changed = [flag for flag in ACCESS_FLAGS if before.get(flag) != getattr(obj, flag)]
        if changed:
            record(action="user.access_changed", target=obj,
                   details={"before": {flag: before.get(flag) for flag in changed},
                            "after": {flag: getattr(obj, flag) for flag in changed}, "via": "admin"})


# Django's groups and permissions would let staff with "change group" raise their own powers; the
# portal gives no power through them (roles live in memberships), so they are shown, never changed.
if admin.site.is_registered(Group):
    admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(ViewOnlyAdmin):
    search_fields = ["name"]
    fields = ["name", "permissions"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "role_granted_by", "role_granted_at", "created_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # memberships change through the portal so they are audited

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Team)
class TeamAdmin(ViewOnlyAdmin):
    """Team security settings change on the team's settings page, where they are audited."""

    list_display = ["name", "public_id", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(CloudAccount)
class CloudAccountAdmin(ViewOnlyAdmin):
    """Keys are sealed and audited by the portal's own form; they are never displayed here."""

    list_display = ["label", "team", "region", "account_id", "access_key_hint", "validation_status"]
    list_filter = ["region", "validation_status"]
    search_fields = ["label", "account_id", "team__name"]
    exclude = ["access_key_sealed", "secret_key_sealed"]


# django-axes' lock-outs: deleting an attempt would unlock someone an attacker is guessing the password
# of, with no event in the trail. Operators unlock with ``manage.py axes_reset_username`` on the server.
def _view_only_copy(model_admin_class):
    return type(model_admin_class.__name__, (ViewOnlyAdmin, model_admin_class),
                {"actions": None, "__module__": __name__})


for _model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(_model):
        _registered = type(admin.site._registry[_model])
        admin.site.unregister(_model)
        admin.site.register(_model, _view_only_copy(_registered))
