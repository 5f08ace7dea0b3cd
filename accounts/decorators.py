"""The one way into a team's pages: resolve the team from the URL, check the role."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache

from accounts.access import refusals_recorded, require
from accounts.roles import Capability
from accounts.selectors import team_access_for_user
from accounts.twofactor.enforcement import STEP_UP_MESSAGE, StepUpAccess, step_up_redirect_url, withheld_capabilities


def team_view(capability: Capability = Capability.VIEW):
    """Wrap a view taking ``(request, access, ...)``; the URL carries ``team_id``.

    Outsiders get a 404, members without ``capability`` a 403, both audited. When the
    team requires two-factor sign-in for approvers and admins, an unverified one is sent
    to verify (or enrol) before a page needing a privileged capability, and the access
    handed to the view lacks those capabilities, so no ``require()`` further in grants them.
    """

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, team_id, *args, **kwargs):
            with refusals_recorded():  # a read's 404 (accounts.access.NotInTeam) is recorded here
                return _open(request, team_id, *args, **kwargs)

        def _open(request, team_id, *args, **kwargs):
            access = team_access_for_user(user=request.user, team_public_id=team_id)
            withheld = withheld_capabilities(user=request.user, access=access)
            if withheld:
                if capability in withheld:
                    return _step_up(request, access, capability)
                access = StepUpAccess(**_fields(access), withheld=withheld)
            require(access, capability)
            request.team_access = access
            if request.session.get("team") != str(access.team.public_id):
                request.session["team"] = str(access.team.public_id)  # remembered for the home page
            try:
                return view(request, access, *args, **kwargs)
            except PermissionDenied:
                # A privileged action inside a page open to every role (e.g. adding a member).
                if isinstance(access, StepUpAccess) and access.refused:
                    return _step_up(request, access, ",".join(sorted(access.refused)))
                raise

        return wrapped

    return decorator


def _fields(access) -> dict:
    # dataclasses.asdict would deep-copy the model instances.
    return {name: getattr(access, name) for name in ("user", "team", "membership")}


def _step_up(request, access, capability):
    messages.info(request, STEP_UP_MESSAGE.format(team=access.team.name))
    return redirect(step_up_redirect_url(request, access, capability))


def secret_page(view):
    """No cache, no referrer: for answers that show or take a secret (a manifest link, an API token,
    a webhook signing secret)."""

    @never_cache
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Referrer-Policy"] = "no-referrer"
        return response

    return wrapped
