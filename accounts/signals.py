"""Sign-in events reach the audit trail through Django's and axes' signals."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from omiportal.audit.recorder import record


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    record(action="auth.logged_in", actor=user, target=user)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        record(action="auth.logged_out", actor=user, target=user)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    # Django already replaces the password with asterisks; keep only the name tried.
    record(action="auth.login_failed", outcome="failed", actor=None,
           details={"username": str(credentials.get("username", ""))[:254]})


@receiver(user_locked_out)
def _locked_out(sender, request, username, ip_address, **kwargs):
    record(action="auth.locked_out", outcome="denied", actor=None,
           details={"username": str(username or "")[:254]})
