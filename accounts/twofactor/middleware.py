"""The second sign-in step and the RQ dashboard guard. Install after django-otp's OTPMiddleware."""

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

from accounts.twofactor.enforcement import is_verified
from accounts.twofactor.signals import SESSION_KEY

VERIFY_FIRST_MESSAGE = "Enter the code from your authenticator app to finish signing in."


class TwoFactorMiddleware:
    """A signed-in user with an active device is not fully signed in until a code checks out.

    Until then every page except the verify step and sign-out sends them to the verify step.
    Whether a device was active is noted in the session at sign-in (``signals``), so this costs
    no query; a session signed in before the device was added stays as it was.
    The RQ dashboard (django-rq's own views check staff only) also needs a verified session.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if request.session.get(SESSION_KEY) and user is not None and user.is_authenticated and not is_verified(user):
            exempt = (reverse("accounts:twofactor-verify"), reverse("logout"))
            if request.path not in exempt:
                if request.method in ("GET", "HEAD"):
                    messages.info(request, VERIFY_FIRST_MESSAGE)
                    next_url = request.get_full_path()
                else:
                    next_url = reverse("accounts:home")
                return redirect(f"{reverse('accounts:twofactor-verify')}?{urlencode({'next': next_url})}")
        if _under_rq_dashboard(request.path) and not (
            user is not None and user.is_active and user.is_staff and is_verified(user)
        ):
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        return self.get_response(request)


def _under_rq_dashboard(path: str) -> bool:
    try:
        return path.startswith(reverse("django_rq:home"))
    except NoReverseMatch:  # a URLconf without the dashboard (some tests use their own)
        return False
