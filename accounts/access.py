"""Access checks: who may see and do what in a team, and the record of every refusal.

Selectors only read. When a read finds nothing the acting person may see, it raises ``NotInTeam``
(a 404, so existence is not leaked) without writing anything; the request's boundary
(``accounts.decorators.team_view``, the review pages' ``compliance_view``) records the refusal
with ``refusals_recorded`` and lets the 404 through. A check that refuses an action (``require``,
called by services and views) records its ``access.denied`` itself, then raises a 403.
"""

import contextlib

from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.roles import Capability
from audit.recorder import AuditTarget, record


class NotInTeam(Http404):
    """Nothing the acting person may see under this id: a 404, recorded at the request's boundary."""

    def __init__(self, message: str, *, user, team, target: AuditTarget, reason: str = "not_found_in_team"):
        super().__init__(message)
        self.user, self.team, self.target, self.reason = user, team, target, reason


def deny_access(*, user, team, reason: str, target=None, details=None):
    record(
        action="access.denied",
        outcome="denied",
        actor=user,
        team=team,
        target=target,
        details={"reason": reason, **(details or {})},
    )


@contextlib.contextmanager
def refusals_recorded():
    """Around a request's work: a ``NotInTeam`` raised by a read is recorded, then goes on as a 404."""
    try:
        yield
    except NotInTeam as exc:
        deny_access(user=exc.user, team=exc.team, reason=exc.reason, target=exc.target)
        raise


def require(access, capability: Capability, *, target=None) -> None:
    if not access.can(capability):
        deny_access(user=access.user, team=access.team, reason="missing_role", target=target,
                    details={"needs": str(capability), "role": access.role or "compliance"})
        raise PermissionDenied(f"Your role in {access.team.name} does not allow this.")
