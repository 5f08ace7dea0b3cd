"""At each sign-in, note in the session whether the user has an active device.

The middleware then knows, without a query per request, that this session still owes a code.
Every sign-in path sends ``user_logged_in`` (the portal's, the admin's, tests' ``force_login``).
"""

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from accounts.twofactor.services import has_device

SESSION_KEY = "twofactor_required"


def remember(request, required: bool) -> None:
    if required:
        request.session[SESSION_KEY] = True
    else:
        request.session.pop(SESSION_KEY, None)


@receiver(user_logged_in)
def _remember_device(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        remember(request, has_device(user=user))
