from rest_framework import permissions

from api.models import ApiToken


class HasToken(permissions.BasePermission):
    """Only a valid API token gets in (no session: nothing for a cross-site page to ride on)."""

    def has_permission(self, request, view):
        return isinstance(request.auth, ApiToken)
