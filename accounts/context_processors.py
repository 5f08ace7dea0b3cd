from accounts import selectors


def current_team(request):
    """The team switcher's data and the team the page belongs to, if any."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    access = getattr(request, "team_access", None)
    # A team page already read the user's memberships to check access: no second query.
    memberships = getattr(access, "memberships", None)
    return {
        "my_memberships": memberships if memberships is not None else selectors.memberships_for_user(user=user),
        "access": access,
    }
