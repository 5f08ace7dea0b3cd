def current_team(request):
    """The team switcher's data and the team the page belongs to, if any."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from accounts.selectors import memberships_for_user

    return {
        "my_memberships": memberships_for_user(user=user),
        "access": getattr(request, "team_access", None),
    }
