"""Second-factor devices in the admin: listed, never added or edited, removed only with an audit event.

django-otp's own admin shows each device's secret and QR code, and lets staff edit the key: anyone
with the admin could then produce an approver's codes. OTP_ADMIN_HIDE_SENSITIVE_DATA (settings) hides
the key and the QR views of existing devices; adding (whose form shows a key) and editing are off here.
Removing a device stays, audited: it is how an operator resets a lost authenticator, after which
the person enrols again with their own password.
"""

from django.contrib import admin
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import recorder
from audit.recorder import record


class PortalTOTPDeviceAdmin(TOTPDeviceAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        # delete_view runs in one transaction: the event commits or rolls back with the removal.
        _record_removal(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with recorder.atomic():  # each device is locked after the previous one's event: the head goes last
            for device in queryset.select_related("user").select_for_update(of=("self",)):
                _record_removal(device)
            super().delete_queryset(request, queryset)


def _record_removal(device: TOTPDevice) -> None:
    # The same action as a person removing their own device; the actor (the operator) tells them apart.
    record(action="twofactor.removed", target=device.user,
           details={"device": device.name, "confirmed": device.confirmed, "via": "admin"})


if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)
admin.site.register(TOTPDevice, PortalTOTPDeviceAdmin)
