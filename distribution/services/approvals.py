"""Standing approvals: an approver of the source team signs, once, for a family's next versions.

Signing binds the exact recipients (approval_binding.py), an expiry and a maximum number of
versions; the sign page posts the digest of what it showed, and a different one is refused. One
approval is active per family (a database constraint): a new signature stops the old one in the
same transaction. An approval stops when a person stops it, when it expires (the reconciler's
sweep), when its versions are used up (releases.py), and when what it covers changes
(``approvals_stop_for_change``, called by the services that change subscriptions; releases.py
checks again before every share).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from accounts.access import require
from accounts.models import Membership
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from accounts.twofactor.enforcement import step_up_fresh
from audit import recorder
from audit.recorder import record
from distribution.models import Family, FamilyVersion, RecipientGroup, StandingApproval, StandingRecipient
from distribution.services import approval_binding as binding
from transfers import errors as transfer_errors


class ApprovalError(ValidationError):
    """Bad input or a rule broken: shown on the page, nothing changed."""


class ApprovalConflict(ApprovalError):
    """What the page showed is not what is there now (another signature, a changed list, a stop)."""


NOT_YOURS = "Only the family's own team signs or stops its standing approvals."
ARCHIVED = "This family is archived: nothing is released from it any more."
GROUP_NOT_YOURS = "Only the team's own recipient groups can be named."
NO_RECIPIENTS = ("Nobody receives this family yet: a recipient team subscribes to it first (or name a recipient "
                 "group), then sign.")
RECIPIENT_PROBLEMS = "Nothing was signed: {problems}"
LICENCE_REQUIRED = "Confirm that the third-party licences of this family's images allow their export."
EXPIRY_PAST = "The expiry must be in the future."
EXPIRY_TOO_FAR = "A standing approval runs at most {days} days: choose an expiry on or before {latest}."
MAX_RANGE = "The maximum number of versions is between 1 and {most}."
STALE = "Who receives this family changed since the page was shown: review the list again, then sign."
SIGNED_MEANWHILE = "Someone signed a standing approval for this family meanwhile: review it first."
NOT_ACTIVE = "This standing approval is no longer active (it is {state})."
STEP_UP = ("{team} asks approvers for a fresh two-factor code: enter one (within the last {minutes} minutes) "
           "before signing.")

REPLACED = "Replaced by standing approval {number}, signed by {name}."
STOPPED_BY = "Stopped by {name}."
EXPIRED = "Expired on {when}."
CHANGED = "What it covers changed ({what}): a new signature is needed."


def max_days() -> int:
    return int(settings.OMIPORTAL_STANDING_APPROVAL_MAX_DAYS)


def max_versions_allowed() -> int:
    return int(settings.OMIPORTAL_STANDING_APPROVAL_MAX_VERSIONS)


def utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def check_terms(*, expires_at: datetime, max_versions: int, now: datetime | None = None) -> None:
    """An expiry in the future and within the longest term; a maximum within bounds."""
    now = now or timezone.now()
    if expires_at <= now:
        raise ApprovalError(EXPIRY_PAST)
    latest = now + timedelta(days=max_days())
    if expires_at > latest:
        raise ApprovalError(EXPIRY_TOO_FAR.format(days=max_days(), latest=f"{latest:%Y-%m-%d}"))
    if not 1 <= int(max_versions) <= max_versions_allowed():
        raise ApprovalError(MAX_RANGE.format(most=max_versions_allowed()))


@dataclass(frozen=True)
class Proposal:
    """What the sign page shows: exactly whom a signature would cover now, what stops it, its digest."""

    accounts: list
    problems: list[str]
    digest: str


def standing_approval_preview(*, family: Family, group: RecipientGroup | None, expires_at: datetime,
                              max_versions: int) -> Proposal:
    accounts = binding.recipients_now(family, group)
    return Proposal(accounts=accounts, problems=binding.recipient_problems(family, accounts),
                    digest=binding.proposal_digest(family=family, group=group, accounts=accounts,
                                                   expires_at=expires_at, max_versions=max_versions))


def _deny(access: TeamAccess, family: Family, reason: str, **details) -> None:
    # No transaction is open: the refusal stays in the trail.
    record(action="standing_approval.signed", outcome="denied", actor=access.user, team=access.team, target=family,
           details={"reason": reason, **details})


def standing_approval_sign(*, access: TeamAccess, family: Family, group: RecipientGroup | None,
                           expires_at: datetime, max_versions: int, digest: str, licence_confirmed: bool,
                           verified_at: datetime | None = None) -> StandingApproval:
    """Sign for the family's next versions. ``digest``: what the sign page showed
    (``approval_binding.proposal_digest``); ``verified_at``: when the session last checked a
    two-factor code (teams that require it)."""
    require(access, Capability.APPROVE, target=family)
    if family.team_id != access.team.pk:
        raise ApprovalError(NOT_YOURS)
    if family.archived_at is not None:
        raise ApprovalError(ARCHIVED)
    if group is not None and group.team_id != access.team.pk:
        raise ApprovalError(GROUP_NOT_YOURS)
    if not licence_confirmed:
        raise ApprovalError(LICENCE_REQUIRED)
    check_terms(expires_at=expires_at, max_versions=max_versions)
    # Re-read: the role's origin is the rule, not what the request happened to load.
    refusal = binding.signing_refusal(membership=Membership.objects.get(pk=access.membership.pk), family=family,
                                      group=group)
    if refusal:
        _deny(access, family, refusal[0])
        raise ApprovalError(refusal[1])
    if access.team.require_two_factor_for_privileged and not step_up_fresh(verified_at):
        _deny(access, family, "step_up_stale" if verified_at else "step_up_missing")
        raise transfer_errors.StepUpRequired(STEP_UP.format(
            team=access.team.name, minutes=max(1, settings.OMIPORTAL_APPROVAL_STEP_UP_SECONDS // 60)))
    accounts = binding.recipients_now(family, group)
    if not accounts:
        raise ApprovalError(NO_RECIPIENTS)
    problems = binding.recipient_problems(family, accounts)
    if problems:
        raise ApprovalError(RECIPIENT_PROBLEMS.format(problems=" ".join(problems)))
    if binding.proposal_digest(family=family, group=group, accounts=accounts, expires_at=expires_at,
                               max_versions=max_versions) != digest:
        _deny(access, family, "stale_digest")
        raise ApprovalConflict(STALE)
    now = timezone.now()
    try:
        with recorder.atomic():
            Family.objects.select_for_update().filter(pk=family.pk).first()  # one signature at a time per family
            old = StandingApproval.objects.filter(family=family, state=StandingApproval.State.ACTIVE).first()
            if old is not None:  # stopped first: the constraint allows one active approval per family
                _stop(old, state=StandingApproval.State.STOPPED, reason="", stopped_by=access.user, now=now)
            approval = StandingApproval.objects.create(
                family=family, group=group, signed_by=access.user, signed_at=now, expires_at=expires_at,
                max_versions=max_versions, digest=digest)
            StandingRecipient.objects.bulk_create([
                StandingRecipient(approval=approval, account=a, bound_account_id=a.account_id, bound_region=a.region)
                for a in accounts])
            if old is not None:
                reason = REPLACED.format(number=approval.pk, name=access.user.display_name)
                StandingApproval.objects.filter(pk=old.pk).update(stopped_reason=reason)
                _record_stop(old, "standing_approval.stopped", reason, actor=access.user, replaced_by=approval.pk)
            record(action="standing_approval.signed", actor=access.user, team=access.team, target=approval, details={
                "family": family.name, "number": approval.pk, "group": group.name if group else "",
                "source": [family.source_account.account_id, family.source_account.region],
                "recipients": [[a.label, a.team.name, a.account_id, a.region] for a in accounts],
                "expires_at": expires_at.isoformat(), "max_versions": max_versions, "digest": digest,
                "licence_confirmed": True})
            _release_waiting(family, approval)
    except IntegrityError:  # another signature won the family's one active slot
        raise ApprovalConflict(SIGNED_MEANWHILE) from None
    return approval


def _release_waiting(family: Family, approval: StandingApproval) -> None:
    """A new signature releases the family's newest waiting version (on commit); older waiting
    ones are skipped when it is shared (releases.py: only the newest version is ever released)."""
    from distribution.services.releases import release_later

    newest = FamilyVersion.objects.filter(family=family, state__in=[FamilyVersion.State.WAITING,
                                                                    FamilyVersion.State.FOUND]).order_by("-number").first()
    if newest is not None:
        release_later(newest, occasion=f"a{approval.pk}")


def _stop(approval: StandingApproval, *, state: str, reason: str, stopped_by=None, now=None) -> bool:
    """Move an active approval to ``state`` (conditional update): False when it was not active."""
    return bool(StandingApproval.objects.filter(pk=approval.pk, state=StandingApproval.State.ACTIVE).update(
        state=state, stopped_reason=reason[:300], stopped_at=now or timezone.now(), stopped_by=stopped_by))


def _record_stop(approval: StandingApproval, action: str, reason: str, *, actor=recorder.CURRENT_ACTOR, **details):
    record(action=action, actor=actor, team=approval.family.team, target=approval,
           details={"family": approval.family.name, "number": approval.pk, "reason": reason,
                    "versions_used": approval.versions_used, "max_versions": approval.max_versions, **details})


def standing_approval_stop(*, access: TeamAccess, approval: StandingApproval) -> StandingApproval:
    """An approver (or admin) of the source team stops an approval: the next versions wait."""
    require(access, Capability.APPROVE, target=approval)
    if approval.family.team_id != access.team.pk:
        raise ApprovalError(NOT_YOURS)
    reason = STOPPED_BY.format(name=access.user.display_name)
    with recorder.atomic():
        if not _stop(approval, state=StandingApproval.State.STOPPED, reason=reason, stopped_by=access.user):
            approval.refresh_from_db()
            raise ApprovalConflict(NOT_ACTIVE.format(state=approval.get_state_display().lower()))
        _record_stop(approval, "standing_approval.stopped", reason, actor=access.user)
    approval.refresh_from_db()
    return approval


def approval_end(approval: StandingApproval, *, state: str, reason: str, action: str) -> bool:
    """End an active approval for a reason found by the portal (its own transaction, or the
    caller's); False when it had ended already."""
    with recorder.atomic():
        if not _stop(approval, state=state, reason=reason):
            return False
        _record_stop(approval, action, reason, actor=None)
    return True


def approvals_stop_for_change(family: Family, reason: str) -> int:
    """Call in the transaction that changed who receives the family (a subscription created,
    changed or ended; an account re-keyed, moved or retired): an active approval that no longer
    covers exactly what was signed stops, and the next versions wait for a new signature. An
    approval whose list did not change (a group's, when a subscription changed) goes on."""
    approval = StandingApproval.objects.filter(family=family, state=StandingApproval.State.ACTIVE) \
        .select_related("family__team", "group").first()
    if approval is None:
        return 0
    what = binding.drift(approval)
    if not what:
        return 0
    return int(approval_end(approval, state=StandingApproval.State.STOPPED,
                            reason=CHANGED.format(what=f"{reason}: {what}" if reason else what),
                            action="standing_approval.stopped"))


def approvals_expire(*, now: datetime | None = None) -> int:
    """Active approvals past their expiry end (the reconciler's sweep; releases check it too)."""
    now = now or timezone.now()
    ended = 0
    for approval in StandingApproval.objects.filter(state=StandingApproval.State.ACTIVE, expires_at__lte=now) \
            .select_related("family__team"):
        ended += approval_end(approval, state=StandingApproval.State.EXPIRED,
                              reason=EXPIRED.format(when=utc(approval.expires_at)),
                              action="standing_approval.expired")
    return ended
