"""Who may do what to a share or a recipient, and when: each rule is written once, here.

The services enforce them, raising their usual errors and recording the denials; a state change
still goes through the service's conditional update (built from the same filters below), which
has the last word when two people act at once. The pages ask the ``may_*`` functions which
buttons to show, so a button is there exactly when the service takes the action
(tests/test_transfers_buttons.py holds both sides to that).
"""

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from accounts.models import Membership
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from transfers import errors
from transfers.models import Export, Recipient, Share

LINK_STATES = (Share.State.READY, Share.State.IMPORTING, Share.State.COMPLETED)


def _utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _source(access: TeamAccess, share: Share) -> bool:
    """Only the team that asked for the copy acts on the share itself."""
    return share.team_id == access.team.pk


def _receives(access: TeamAccess, recipient: Recipient) -> bool:
    """Only the team a copy goes to answers it (an external account has no team here)."""
    return recipient.team_id == access.team.pk and recipient.kind in (Recipient.Kind.TEAM, Recipient.Kind.LINK)


# --- Deciding (share_approve, share_reject) -----------------------------------------------------------


def decision_blocker(*, membership: Membership, share: Share) -> tuple[str, str] | None:
    """Why this approver may not decide on this share, as (audit reason, message), or None.

    No sock puppets: a role given by the requester, or given after the request (an approver added
    or promoted for the occasion, even re-promoted after a demotion), does not count as a second pair of eyes.
    """
    if membership.role_granted_by_id is not None and membership.role_granted_by_id == share.requested_by_id:
        return "role_granted_by_requester", errors.ROLE_GRANTED_BY_REQUESTER.format(
            requester=share.requested_by.display_name)
    if membership.role_granted_at > share.requested_at:
        return "role_granted_after_request", errors.ROLE_GRANTED_AFTER_REQUEST
    return None


def decision_refusal(*, membership: Membership, share: Share) -> tuple[str, str] | None:
    """``decision_blocker``, and first of all four eyes: the requester never decides."""
    if membership.user_id == share.requested_by_id:
        return "self_approval", errors.SELF_APPROVAL
    return decision_blocker(membership=membership, share=share)


def decision_overdue(share: Share, now: datetime | None = None) -> str:
    """Why a waiting request can no longer be decided ("" while it can): its deadline passed (the
    service's conditional update says so; the reconciler expires the request a little later)."""
    deadline = share.approval_deadline
    if deadline is not None and deadline <= (now or timezone.now()):
        return errors.REQUEST_EXPIRED.format(when=_utc(deadline))
    return ""


def may_decide(*, access: TeamAccess, share: Share, now: datetime | None = None) -> bool:
    return _source(access, share) and access.can(Capability.APPROVE) and share.state == Share.State.REQUESTED \
        and not decision_overdue(share, now) and decision_refusal(membership=access.membership, share=share) is None


# An offer that starts its import without anyone answering it: its team accepts everything, or
# accepted this one in advance (a subscription to a family).
STARTS_WITHOUT_ANSWER = Q(team__auto_accept_incoming=True) | Q(accepted_in_advance=True)


# --- Cancelling (share_cancel) ------------------------------------------------------------------------


CANCELLABLE_STATES = (Share.State.REQUESTED, Share.State.APPROVED)
# Before its export starts, or while it runs: withdrawing the last share of an export still in flight
# cancels the export task (transfers/services/export_cancels.py).
CANCELLABLE = Q(state__in=CANCELLABLE_STATES, export__isnull=True) \
    | Q(state=Share.State.EXPORTING, export__state__in=Export.IN_FLIGHT)


def cancel_needs(*, access: TeamAccess, share: Share) -> Capability:
    """The requester withdraws their own request; anyone else's takes a team admin."""
    return Capability.REQUEST_SHARE if share.requested_by_id == access.user.pk else Capability.MANAGE_TEAM


def cancellable(share: Share) -> bool:
    """Before its export starts, or while it is still in flight (``CANCELLABLE``)."""
    if share.state == Share.State.EXPORTING:
        return share.export_id is not None and share.export.state in Export.IN_FLIGHT
    return share.state in CANCELLABLE_STATES and share.export_id is None


def may_cancel(*, access: TeamAccess, share: Share) -> bool:
    return _source(access, share) and access.can(cancel_needs(access=access, share=share)) and cancellable(share)


# --- The approval's lifetime, and exporting again (share_reexport) ----------------------------------


def approval_expiry(team, *, start: datetime) -> datetime:
    """When an approval given (or a request auto-approved) at ``start`` stops allowing exports."""
    return start + timedelta(days=team.approval_lifetime_days)


def approval_ends(share: Share) -> datetime | None:
    """When the share's approval stops allowing exports; None while it was never approved.
    Shares approved before approvals had a lifetime count it from their decision (or, without
    an approver, from their request)."""
    if share.approval_expires_at:
        return share.approval_expires_at
    if share.decided_at:
        return approval_expiry(share.team, start=share.decided_at)
    if not share.approval_required:
        return approval_expiry(share.team, start=share.requested_at)
    return None


REEXPORTABLE_STATES = (Share.State.EXPIRED, Share.State.FAILED)
# Only a share that had an export: one whose recipients all copied in their Region has none to redo.
REEXPORTABLE = Q(state__in=REEXPORTABLE_STATES, export__isnull=False) \
    & (Q(decided_at__isnull=False) | Q(approval_required=False))


def reexportable(share: Share) -> bool:
    """Expired or failed after its export started, approved or needing no approval
    (``REEXPORTABLE``): a request that expired unanswered was never approved."""
    return share.state in REEXPORTABLE_STATES and share.export_id is not None and (
        share.decided_at is not None or not share.approval_required)


def approval_lapsed(share: Share, now: datetime | None = None) -> datetime | None:
    """When the approval of an expired or failed share stopped allowing exports, if it has."""
    if share.state not in REEXPORTABLE_STATES:
        return None
    ends = approval_ends(share)
    return ends if ends is not None and ends <= (now or timezone.now()) else None


def may_reexport(*, access: TeamAccess, share: Share, now: datetime | None = None) -> bool:
    return _source(access, share) and access.can(Capability.REQUEST_SHARE) and reexportable(share) \
        and approval_lapsed(share, now) is None


# --- Answering an offer (recipient_accept, recipient_decline) and retrying (recipient_retry) --------


def may_answer(*, access: TeamAccess, recipient: Recipient) -> bool:
    """Accept or decline an offer to the team. An offer whose account changed since the approval
    still shows Accept: the service then refuses the import and fails it with the reason."""
    return _receives(access, recipient) and access.can(Capability.ACCEPT_SHARE) \
        and recipient.state == Recipient.State.OFFERED


def retry_refusal(recipient: Recipient, now: datetime | None = None) -> str:
    """Why a failed import cannot run again ("" when it can): past its link's deadline, or the
    files (or the pasted link) are gone, and only a new export helps. A copy made from the source
    image itself (same Region) needs no link: it can run again (by launch permission, granted
    again first)."""
    if recipient.share_id and recipient.method in Recipient.COPY_METHODS:
        return ""
    export = recipient.share.export if recipient.share_id else None
    deadline = export.manifest_deadline if export is not None else recipient.link_expires_at
    if deadline is None or deadline <= (now or timezone.now()) or (export is not None and export.cleaned_at) or \
            (export is None and not recipient.link_sealed):
        return errors.LINK_EXPIRED.format(when=_utc(deadline) if deadline else "an unknown date")
    return ""


def may_retry(*, access: TeamAccess, recipient: Recipient, now: datetime | None = None) -> bool:
    return _receives(access, recipient) and access.can(Capability.ACCEPT_SHARE) \
        and recipient.state == Recipient.State.FAILED and not retry_refusal(recipient, now)


# --- Revealing an external recipient's link (link_reveal) ---------------------------------------------


def link_refusal(*, access: TeamAccess, share: Share, recipient: Recipient, now: datetime | None = None) -> str:
    """Why the source team cannot reveal this recipient's manifest link now ("" when it can)."""
    if share.team_id != access.team.pk or recipient.share_id != share.pk or recipient.kind != Recipient.Kind.EXTERNAL:
        return errors.LINK_SOURCE_ONLY
    if recipient.method == Recipient.Method.OBJECT_ACL and recipient.state != Recipient.State.FAILED:
        # Read is granted to the account itself: no bearer link (a grant that failed may fall back to one).
        return errors.LINK_NOT_NEEDED
    export = share.export
    if share.state not in LINK_STATES or export is None or export.manifest_deadline is None:
        return errors.LINK_NOT_YET
    if export.manifest_deadline <= (now or timezone.now()) or export.cleaned_at or export.cleanup_claimed_at:
        return errors.LINK_EXPIRED.format(when=_utc(export.manifest_deadline))
    return ""


def may_reveal(*, access: TeamAccess, share: Share, recipient: Recipient, now: datetime | None = None) -> bool:
    return access.can(Capability.REQUEST_SHARE) and not link_refusal(access=access, share=share, recipient=recipient,
                                                                      now=now)


# --- Revoking a launch permission (grant_releases.grant_revoke, the team's open grants page) ------------------


def grant_revoke_refusal(*, access: TeamAccess, grant) -> str:
    """Why the source team cannot take this launch permission back now ("" when it can): it is not
    in place, or a copy by it is under way (it is removed as soon as that copy ends). ``grant`` is a
    LaunchGrant; a page's list may carry ``copying`` already (one query for the whole list)."""
    if grant.share.team_id != access.team.pk:
        return errors.GRANT_SOURCE_ONLY
    if grant.state != grant.State.GRANTED:
        return errors.GRANT_NOT_OPEN.format(state=grant.get_state_display().lower())
    copying = getattr(grant, "copying", None)
    if copying is None:
        copying = Recipient.objects.filter(share_id=grant.share_id, bound_account_id=grant.grantee_account_id,
                                           method__in=Recipient.GRANT_METHODS, state=Recipient.State.IMPORTING).exists()
    return errors.GRANT_IN_USE if copying else ""


def may_revoke_grant(*, access: TeamAccess, grant) -> bool:
    return access.can(Capability.REQUEST_SHARE) and not grant_revoke_refusal(access=access, grant=grant)
