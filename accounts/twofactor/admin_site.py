from django.shortcuts import redirect
from django_otp.admin import OTPAdminSite


class PortalAdminSite(OTPAdminSite):
    """Staff with a password alone get the admin's sign-in page: it asks for a TOTP code too."""

    site_header = "OMI Portal administration"
    site_title = "OMI Portal admin"

    def password_change(self, request, extra_context=None):
        # The portal's own page records the change (user.password_changed); the admin's would not.
        return redirect("password_change")
