"""Automatic releases: each new version of a family becomes one share, under its standing approval.

``version_release`` (the job distribution.jobs.releases.release_job) asks transfers for one share
of the version to every account the family's active approval covers, as a request already
approved by the approval's signer (transfers' ``StandingDecision``); transfers then chooses each
recipient's method and delivers it like any approved share. The family's declarer is the share's
requester (so the signer, never the declarer, is its decider: four eyes by constraint).

Exactly once: in the share's own transaction, the version row is claimed by a conditional update
(found or waiting -> shared, with its share: a one-to-one) and the approval's use is counted by
another (only while active, unexpired, under its maximum and with the digest it was signed with);
a second job, a retried one or one racing in parallel, finds nothing to claim and its share is
rolled back. Without a valid approval the version waits, with the reason; a new signature releases
the newest waiting version. Only the newest version is ever released: an older one still waiting
(or found late) is skipped, with the version that superseded it.
"""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import F, Q
from django.utils import timezone

import outscale
from accounts.models import Membership, Role
from accounts.roles import ROLE_CAPABILITIES, Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from distribution.models import Family, FamilyVersion, StandingApproval, Subscription
from distribution.services import approval_binding as binding
from distribution.services import approvals
from transfers import scheduling
from transfers.models import Share
from transfers.services import requests as share_requests

OPEN = (FamilyVersion.State.FOUND, FamilyVersion.State.WAITING)
# A waiting version whose family has an active approval is tried again this often (a recipient's
# keys fixed, OUTSCALE back): the reconciler's sweep puts it back.
RETRY_WAITING_SECONDS = 600

NO_APPROVAL = "No standing approval is active for {family}: an approver of {team} signs one to release this version."
APPROVAL_ENDED = "Standing approval {number} ended ({reason}): a new signature releases this version."
DECLARER_GONE = ("{name} declared the family and asks for its shares, but can no longer ask for shares in {team}: "
                 "the family needs a declarer who can.")
SUPERSEDED = "Version {newer} was found before this one was released: only the newest version is released."
ARCHIVED = "The family is archived: its versions are not released."
BUSY = "OUTSCALE was busy; the release is tried again shortly."
SHARED = "Shared under standing approval {number}."
COMMENT = "Approved by standing approval {number} (signed by {name} on {when})."


class _NotClaimed(Exception):
    """Raised inside the share's transaction: the share is rolled back. ``why``: what happened."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def release_later(version: FamilyVersion, *, occasion: str) -> None:
    """Release the version once the current transaction commits (a duplicate job is harmless).
    ``occasion`` tells this release apart from the one enqueued when the version was found: a job
    id that ran within its result's lifetime would be refused as a duplicate, and nothing would run."""
    scheduling.enqueue("distribution.jobs.releases.release_job", str(version.public_id),
                       job_id=f"family-version-release-{version.public_id}-{occasion}")


def copy_name(family: Family, version: FamilyVersion) -> str:
    number = str(version.number)
    return family.copy_name_template.replace("{family}", family.name).replace("{number}", number) \
        .replace("{version}", number)


def _load(version_id) -> FamilyVersion | None:
    key = {"public_id": version_id} if isinstance(version_id, str) and not version_id.isdigit() else {"pk": version_id}
    return FamilyVersion.objects.select_related("family__team", "family__source_account", "family__created_by") \
        .filter(**key).first()


def _settle(version: FamilyVersion, state: str, message: str, action: str) -> None:
    """An open version waits or is skipped, with its reason; the event only when something changed
    (a version retried every few minutes for the same reason does not fill the trail)."""
    with recorder.atomic():
        current = FamilyVersion.objects.select_for_update().filter(pk=version.pk, state__in=OPEN).first()
        if current is None:
            return
        FamilyVersion.objects.filter(pk=version.pk).update(state=state, state_message=message[:500],
                                                           updated_at=timezone.now())
        if (current.state, current.state_message) != (state, message[:500]):
            record(action=action, actor=None, team=version.family.team, target=version,
                   details={"family": version.family.name, "number": version.number, "image_id": version.image_id,
                            "reason": message})


def usable_approval(family: Family, *, now=None) -> tuple[StandingApproval | None, str]:
    """The family's active approval if it may release a version now, or None and why not. An
    approval found expired, used up, without its signer or no longer matching what was signed is
    ended here, with its reason."""
    now = now or timezone.now()
    approval = StandingApproval.objects.filter(family=family, state=StandingApproval.State.ACTIVE) \
        .select_related("family__team", "group", "signed_by").first()
    if approval is not None:
        ending = None
        if approval.expires_at <= now:
            ending = (StandingApproval.State.EXPIRED, approvals.EXPIRED.format(when=approvals.utc(approval.expires_at)),
                      "standing_approval.expired")
        elif approval.versions_used >= approval.max_versions:
            ending = (StandingApproval.State.EXHAUSTED, f"all its {approval.max_versions} versions were released",
                      "standing_approval.exhausted")
        elif gone := binding.signer_gone(approval):
            ending = (StandingApproval.State.STOPPED, f"{gone}.", "standing_approval.stopped")
        elif what := binding.drift(approval):
            ending = (StandingApproval.State.STOPPED, approvals.CHANGED.format(what=what), "standing_approval.stopped")
        if ending is None:
            return approval, ""
        approvals.approval_end(approval, state=ending[0], reason=ending[1], action=ending[2])
    last = StandingApproval.objects.filter(family=family).order_by("-signed_at", "-pk").first()
    if last is None or last.state == StandingApproval.State.ACTIVE:
        return None, NO_APPROVAL.format(family=family.name, team=family.team.name)
    reason = last.stopped_reason.rstrip(".") or last.get_state_display().lower()
    return None, APPROVAL_ENDED.format(number=last.pk, reason=reason)


def _declarer_access(family: Family) -> TeamAccess | None:
    membership = Membership.objects.filter(team_id=family.team_id, user_id=family.created_by_id) \
        .select_related("team", "user").first()
    if membership is None or Capability.REQUEST_SHARE not in ROLE_CAPABILITIES[Role(membership.role)]:
        return None
    return TeamAccess(user=membership.user, team=membership.team, membership=membership)


def _claim(version: FamilyVersion, approval: StandingApproval):
    """The exactly-once step, run by share_request in the share's transaction, first."""

    def claim(share: Share) -> None:
        now = timezone.now()
        newer = FamilyVersion.objects.filter(family_id=version.family_id, number__gt=version.number) \
            .order_by("-number").values_list("number", flat=True).first()
        if newer is not None:
            raise _NotClaimed(SUPERSEDED.format(newer=newer))
        if not FamilyVersion.objects.filter(pk=version.pk, state__in=OPEN, share__isnull=True).update(
                state=FamilyVersion.State.SHARED, share=share, approval=approval,
                state_message=SHARED.format(number=approval.pk), updated_at=now):
            raise _NotClaimed("")  # released already (a retried or a parallel job)
        if not StandingApproval.objects.filter(
                pk=approval.pk, state=StandingApproval.State.ACTIVE, digest=approval.digest, expires_at__gt=now,
                versions_used__lt=F("max_versions")).update(versions_used=F("versions_used") + 1):
            raise _NotClaimed("approval")  # ended meanwhile: the version waits, with the reason found again
        approval.refresh_from_db(fields=["versions_used"])
        record(action="family_version.shared", actor=None, team=version.family.team, target=version, details={
            "family": version.family.name, "number": version.number, "image_id": version.image_id,
            "share": str(share.public_id), "standing_approval": approval.pk,
            "signed_by": approval.signed_by.display_name, "versions_used": approval.versions_used,
            "max_versions": approval.max_versions})
        if approval.versions_used >= approval.max_versions:
            approvals.approval_end(approval, state=StandingApproval.State.EXHAUSTED,
                                   reason=f"All its {approval.max_versions} versions were released.",
                                   action="standing_approval.exhausted")
        for older in FamilyVersion.objects.filter(family_id=version.family_id, number__lt=version.number,
                                                  state__in=OPEN).select_for_update():
            message = SUPERSEDED.format(newer=version.number)
            FamilyVersion.objects.filter(pk=older.pk).update(state=FamilyVersion.State.SKIPPED, state_message=message,
                                                             updated_at=now)
            record(action="family_version.skipped", actor=None, team=version.family.team, target=older,
                   details={"family": version.family.name, "number": older.number, "reason": message})

    return claim


def version_release(*, version_id, again: bool = True) -> str:
    """Share the version under its family's standing approval, or say why it waits. Returns what
    happened: "shared", "waiting", "skipped" or "done" (nothing left to do)."""
    version = _load(version_id)
    if version is None or version.state not in OPEN:
        return "done"
    family = version.family
    if family.archived_at is not None:
        _settle(version, FamilyVersion.State.SKIPPED, ARCHIVED, "family_version.skipped")
        return "skipped"
    newer = FamilyVersion.objects.filter(family=family, number__gt=version.number).order_by("-number").first()
    if newer is not None:
        _settle(version, FamilyVersion.State.SKIPPED, SUPERSEDED.format(newer=newer.number), "family_version.skipped")
        return "skipped"
    approval, why = usable_approval(family)
    access = _declarer_access(family) if approval is not None else None
    if approval is not None and access is None:
        why = DECLARER_GONE.format(name=family.created_by.display_name, team=family.team.name)
    if approval is None or access is None:
        _settle(version, FamilyVersion.State.WAITING, why, "family_version.waited")
        return "waiting"
    accounts = [r.account for r in approval.recipients.select_related("account__team").order_by("account__label")]
    standing = share_requests.StandingDecision(
        signer=approval.signed_by, label=f"standing approval {approval.pk}", digest=approval.digest,
        comment=COMMENT.format(number=approval.pk, name=approval.signed_by.display_name,
                               when=f"{approval.signed_at:%Y-%m-%d}"),
        claim=_claim(version, approval),
        # A subscription is its team's yes to every version: those accounts' imports start when offered.
        accept_for=frozenset(Subscription.objects.filter(family=family, ended_at__isnull=True)
                             .values_list("accounts", flat=True)))
    try:
        share_requests.share_request(
            access=access, source_account=family.source_account, image_id=version.image_id, accounts=accounts,
            externals=[], copy_name=copy_name(family, version), description=f"{family.name} version {version.number}",
            reason=f"Version {version.number} of the family {family.name}, under standing approval {approval.pk}.",
            licence_confirmed=True, standing=standing)
    except _NotClaimed as exc:
        if exc.why == "approval":  # the approval ended meanwhile: look again, to wait with its reason
            return version_release(version_id=version.pk, again=False) if again else "done"
        if exc.why:
            _settle(version, FamilyVersion.State.SKIPPED, exc.why, "family_version.skipped")
            return "skipped"
        return "done"
    except outscale.RetryLater:
        FamilyVersion.objects.filter(pk=version.pk, state__in=OPEN).update(state_message=BUSY,
                                                                           updated_at=timezone.now())
        return "waiting"  # the reconciler's sweep puts it back
    except (ValidationError, outscale.CloudError) as exc:
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        _settle(version, FamilyVersion.State.WAITING, message, "family_version.waited")
        return "waiting"
    return "shared"


def releases_sweep(*, now=None) -> int:
    """The reconciler's tick: approvals past their expiry end; versions whose release job was lost
    (still found after the grace) and waiting versions of families with an active approval (every
    RETRY_WAITING_SECONDS) are put back."""
    now = now or timezone.now()
    done = approvals.approvals_expire(now=now)
    grace = now - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    again = now - timedelta(seconds=RETRY_WAITING_SECONDS)
    stuck = FamilyVersion.objects.filter(
        Q(state=FamilyVersion.State.FOUND, updated_at__lte=grace)
        | Q(state=FamilyVersion.State.WAITING, updated_at__lte=again,
            family__standing_approvals__state=StandingApproval.State.ACTIVE)).distinct().order_by("updated_at")[:200]
    for version in stuck:
        release_later(version, occasion=f"s{int(now.timestamp())}")
        done += 1
    return done
