"""A token's access: the pages' ``TeamAccess`` of its person, capped at the token's role.

Re-read on every request (as the pages do): a person demoted or removed since the token was made
loses the capabilities with it, and a token never exceeds the role it was given. A service token
never approves (its role cannot be approver, and APPROVE is taken out besides). In a team that
requires two-factor sign-in for approvers and admins, APPROVE and MANAGE_TEAM are withheld unless
the request carried a current code (``api.views.shares`` checks it on approve and reject).
"""

from dataclasses import dataclass

from accounts.models import Role
from accounts.roles import ROLE_CAPABILITIES, Capability
from accounts.selectors import TeamAccess, team_access_for_user
from accounts.twofactor.enforcement import PRIVILEGED, PRIVILEGED_ROLES
from api.models import ApiToken


@dataclass(frozen=True)
class TokenAccess(TeamAccess):
    token: ApiToken | None = None
    two_factor_checked: bool = False  # this request carried a code that checked out

    @property
    def ceiling(self) -> frozenset:
        caps = ROLE_CAPABILITIES[Role(self.token.role)]
        if self.token.is_service:
            caps = caps - {Capability.APPROVE, Capability.MANAGE_TEAM}
        return caps

    @property
    def withheld(self) -> frozenset:
        team = self.team
        if team.require_two_factor_for_privileged and self.role in PRIVILEGED_ROLES and not self.two_factor_checked:
            return PRIVILEGED
        return frozenset()

    @property
    def capabilities(self) -> frozenset:
        return (super().capabilities & self.ceiling) - self.withheld


def token_access(token: ApiToken, *, two_factor_checked: bool = False) -> TokenAccess:
    """Raises ``accounts.access.NotInTeam`` when the token's person is no longer in its team."""
    base = team_access_for_user(user=token.user, team_public_id=token.team.public_id)
    return TokenAccess(user=base.user, team=base.team, membership=base.membership, token=token,
                       two_factor_checked=two_factor_checked)
