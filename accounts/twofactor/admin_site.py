from django_otp.admin import OTPAdminSite


class PortalAdminSite(OTPAdminSite):
    """Staff with a password alone get the admin's sign-in page: it asks for a TOTP code too."""

    site_header = "OMI Portal administration"
    site_title = "OMI Portal admin"
