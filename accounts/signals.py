"""Sign-in events reach the audit trail through Django's and axes' signals."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from accounts import attempts
from audit.recorder import record


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    record(action="auth.logged_in", actor=user, target=user)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        record(action="auth.logged_out", actor=user, target=user)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    # Django already replaces the password with asterisks; the name typed may be a password too,
    # so it is kept as the person it names, or as a fingerprint (accounts.attempts).
    user, details = attempts.attempt_details(str(credentials.get("username", "")))
    record(action="auth.login_failed", outcome="failed", actor=None, target=user, details=details)


@receiver(user_locked_out)
def _locked_out(sender, request, username, ip_address, **kwargs):
    # ``username`` is already what axes keeps (accounts.attempts.axes_username).
    user, details = attempts.axes_name_details(str(username or ""))
    record(action="auth.locked_out", outcome="denied", actor=None, target=user, details=details)
