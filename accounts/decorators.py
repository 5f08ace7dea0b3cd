"""The one way into a team's pages: resolve the team from the URL, check the role."""

from functools import wraps

from django.contrib.auth.decorators import login_required

from accounts.roles import Capability
from accounts.selectors import require, team_access_for_user


def team_view(capability: Capability = Capability.VIEW):
    """Wrap a view taking ``(request, access, ...)``; the URL carries ``team_id``.

    Outsiders get a 404, members without ``capability`` a 403, both audited.
    """

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, team_id, *args, **kwargs):
            access = team_access_for_user(user=request.user, team_public_id=team_id)
            require(access, capability)
            request.team_access = access
            if request.session.get("team") != str(access.team.public_id):
                request.session["team"] = str(access.team.public_id)  # remembered for the home page
            return view(request, access, *args, **kwargs)

        return wrapped

    return decorator
