"""What each team role may do (DESIGN §5).

Roles nest: an admin can do what an approver can, an approver what a member
can. Auditors and the site-wide compliance role only read.
"""

from enum import StrEnum

from accounts.models import Role


class Capability(StrEnum):
    VIEW = "view"
    REQUEST_SHARE = "request_share"
    ACCEPT_SHARE = "accept_share"
    APPROVE = "approve"
    MANAGE_TEAM = "manage_team"  # cloud accounts, members, team settings
    VIEW_AUDIT = "view_audit"


_MEMBER = {Capability.VIEW, Capability.REQUEST_SHARE, Capability.ACCEPT_SHARE}
_APPROVER = _MEMBER | {Capability.APPROVE}

ROLE_CAPABILITIES = {
    Role.MEMBER: frozenset(_MEMBER),
    Role.APPROVER: frozenset(_APPROVER),
    Role.ADMIN: frozenset(_APPROVER | {Capability.MANAGE_TEAM, Capability.VIEW_AUDIT}),
    Role.AUDITOR: frozenset({Capability.VIEW, Capability.VIEW_AUDIT}),
}
COMPLIANCE_CAPABILITIES = frozenset({Capability.VIEW, Capability.VIEW_AUDIT})

ROLE_DESCRIPTIONS = {
    Role.MEMBER: "Requests shares of the team's images and accepts incoming ones.",
    Role.APPROVER: "Everything a member does, plus approving or rejecting other people's requests.",
    Role.ADMIN: "Everything an approver does, plus cloud accounts, members and team settings.",
    Role.AUDITOR: "Reads everything, including the audit trail; changes nothing.",
}
