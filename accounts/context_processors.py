def current_team(request):
    return {}
