"""The base of every API view: a token, the team it acts in, the capability the view needs.

Tenancy as in the pages: another team's id is a 404 (recorded as ``access.denied``, like
``accounts.decorators.team_view``), a missing role a 403 (recorded by ``require``).
"""

from rest_framework import exceptions
from rest_framework.views import APIView

from accounts.access import NotInTeam, deny_access, require
from accounts.roles import Capability
from api.access import TokenAccess, token_access
from api.permissions import HasToken

LEFT_TEAM = "The token's person is no longer a member of its team: the token no longer works."


class TeamAPIView(APIView):
    """``self.access`` is the token's access; ``capability`` is checked before the handler runs."""

    permission_classes = [HasToken]
    capability: Capability = Capability.VIEW
    access: TokenAccess

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        try:
            self.access = token_access(request.auth)
        except NotInTeam:
            raise exceptions.AuthenticationFailed(LEFT_TEAM) from None
        require(self.access, self.capability)

    def handle_exception(self, exc):
        if isinstance(exc, NotInTeam):  # a read found nothing this token may see: recorded, then a 404
            deny_access(user=exc.user, team=exc.team, reason=exc.reason, target=exc.target)
        return super().handle_exception(exc)
