"""Asking for a copy, and the four-eyes decision on it."""

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import outscale
from accounts.access import require
from accounts.keys import credentials_for
from accounts.models import CloudAccount, Membership
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from accounts.twofactor.enforcement import step_up_fresh
from audit import recorder
from audit.recorder import record
from transfers import errors, events, notifications, rules
from transfers.models import Recipient, Share
from transfers.services import binding, copy_facts, export_cancels, exports, grant_state, grants, methods, preflight
from transfers.services.object_grants import external_method

EXTERNAL_ID_RE = re.compile(r"^\d{12}$")
# An OOS user ID (S3 canonical id: 64 hex digits on OUTSCALE); what `aws s3api list-buckets --query
# Owner.ID` prints for the account.
OOS_USER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
OOS_USER_ID_INVALID = ("The OOS user ID of account {account_id} is not one: 16 to 128 letters, digits, - or _ "
                       "(its owner reads it with `aws s3api list-buckets --query Owner.ID`).")
OOS_USER_ID_OTHER_REGION = ("An OOS user ID only serves an external account in the source's Region ({region}), "
                            "which is granted read on the export; account {account_id} receives a link: leave it "
                            "empty.")


@dataclass(frozen=True)
class ExternalRecipient:
    account_id: str
    region: str
    oos_user_id: str = ""  # its OOS user ID: in the source's Region, it is served by an object ACL


@dataclass(frozen=True)
class StandingDecision:
    """An approval given in advance for this very request (the distribution app's standing
    approvals): the share is created approved, decided by ``signer`` (never the requester: the
    database's four-eyes constraint holds), with ``comment`` as the decision's words, and runs at
    once like any approved share. ``label`` and ``digest`` name what was signed in the trail.
    ``claim(share)`` runs in the share's transaction right after the share is saved; whatever it
    raises undoes the share (the caller's exactly-once claim on what the share is for)."""

    signer: object  # accounts.models.User
    label: str
    digest: str
    comment: str
    claim: Callable[[Share], None] | None = None
    # Recipient accounts (pks) whose team accepted in advance (a subscription): their imports start
    # as soon as they are offered, without anyone answering the offer.
    accept_for: frozenset = frozenset()


def request_digest(share: Share, recipients: list[Recipient]) -> str:
    """A fingerprint of exactly what an approver is shown, bound accounts and bucket included;
    approving needs the same one."""
    return binding.bound_digest(share, recipients)


def _legacy_digest(share: Share) -> str:
    """The digest of a request made before approvals bound accounts (portal ids only)."""
    content = {
        "source": [str(share.source_account.public_id), share.source_image_id],
        "copy": [share.copy_name, share.description],
        "recipients": sorted(
            [r.kind, str(r.target_account.public_id) if r.target_account_id else "", r.external_account_id,
             r.external_region] for r in share.recipients.select_related("target_account")
        ),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _check_recipients(access: TeamAccess, source: CloudAccount, accounts: list[CloudAccount],
                      externals: list[ExternalRecipient]) -> None:
    if not accounts and not externals:
        raise errors.ShareError(errors.NO_RECIPIENT)
    keys = [a.pk for a in accounts] + [(e.account_id, e.region) for e in externals]
    if len(keys) != len(set(keys)):
        raise errors.ShareError(errors.DUPLICATE_RECIPIENT)
    for account in accounts:
        if account.pk == source.pk:
            raise errors.ShareError(errors.SOURCE_AS_RECIPIENT)
        if account.team_id != access.team.pk and not account.accepts_incoming_shares:
            raise errors.ShareError(errors.RECIPIENT_CLOSED.format(label=account.label))
        if not account.is_valid:
            raise errors.ShareError(errors.RECIPIENT_INVALID.format(label=account.label))
    for external in externals:
        if not EXTERNAL_ID_RE.match(external.account_id):
            raise errors.ShareError(errors.EXTERNAL_ID)
        if external.account_id == source.account_id and external.region == source.region:
            raise errors.ShareError(errors.SOURCE_AS_RECIPIENT)
        if external.oos_user_id and not OOS_USER_ID_RE.match(external.oos_user_id):
            raise errors.ShareError(OOS_USER_ID_INVALID.format(account_id=external.account_id))
        if external.oos_user_id and external.region != source.region:
            raise errors.ShareError(OOS_USER_ID_OTHER_REGION.format(account_id=external.account_id,
                                                                    region=source.region))


def _check_name_free(access: TeamAccess, name: str, accounts: list[CloudAccount]) -> None:
    """ImageName is unique per account: refuse now rather than fail at import time.

    Only in the requesting team's own accounts (INS-09): each team's keys serve that team's work
    alone, and opening another team's here would tell the requester which image names exist in
    that team's account, spend its API quota and fill its trail. A name taken there is found when
    that team's import starts (errors.NAME_NOT_OURS), and a retry imports under a new name.
    """
    for account in (a for a in accounts if a.team_id == access.team.pk):
        creds = credentials_for(account, purpose="check copy name")
        if outscale.find_image_by_name(creds=creds, account_id=account.account_id, name=name):
            raise errors.ShareError(errors.NAME_TAKEN.format(name=name, label=account.label))


def share_request(
    *,
    access: TeamAccess,
    source_account: CloudAccount,
    image_id: str,
    accounts: list[CloudAccount],
    externals: list[ExternalRecipient],
    copy_name: str,
    description: str,
    reason: str,
    licence_confirmed: bool,
    launch_permission_only: bool = False,
    standing: StandingDecision | None = None,
) -> Share:
    """``standing``: the request comes approved already (``StandingDecision``); nobody is asked."""
    require(access, Capability.REQUEST_SHARE)
    if source_account.team_id != access.team.pk:
        raise errors.ShareError(errors.ACCOUNT_NOT_VALID.format(label=source_account.label))
    if not source_account.is_valid:
        raise errors.ShareError(errors.ACCOUNT_NOT_VALID.format(label=source_account.label))
    if not licence_confirmed:
        raise errors.ShareError(errors.LICENCE_REQUIRED)
    if any("\x00" in text for text in (copy_name, description, reason)):
        raise errors.ShareError(errors.TEXT_NUL)  # PostgreSQL cannot store it; forms refuse it too
    try:
        outscale.validate_image_name(copy_name)
    except ValueError as exc:
        raise errors.ShareError(str(exc)) from None
    _check_recipients(access, source_account, accounts, externals)
    # The live answer, not what the form was rendered with: the image may be gone by now. Asked of
    # this image only: an account with thousands of images would answer with all of them.
    images = outscale.list_shareable_images(creds=credentials_for(source_account, purpose="list images"),
                                            account_id=source_account.account_id, include_public=True,
                                            image_ids=[image_id])
    image = next((i for i in images if i.image_id == image_id), None)
    if image is None:
        raise errors.ShareError(errors.IMAGE_GONE.format(image_id=image_id, label=source_account.label))
    _check_name_free(access, copy_name, accounts)
    bucket = source_account.export_bucket
    problem, request_ids = binding.bucket_problem(source_account, bucket, purpose="check export bucket")
    if problem:
        # Recorded on its own (share_request holds no transaction here): the refusal stays.
        record(action="share.requested", outcome="denied", actor=access.user, team=access.team,
               target=source_account, cloud_request_ids=list(request_ids),
               details={"reason": "export_bucket_not_owned", "bucket": bucket, "image_id": image.image_id})
        raise errors.ShareError(problem)
    # How each recipient gets its copy (methods.py): a shared image is looked at once, outside the transaction.
    if launch_permission_only:
        methods.check_permission_only(source=source_account, image=image, accounts=accounts)
    visible = methods.shared_with(source=source_account, image=image, accounts=accounts)

    now = timezone.now()
    team = access.team
    # An account is the team's own only once someone besides its registrant confirmed it: until
    # then it counts as another team's, whatever the team's setting (INS-02).
    needs_approval = bool(externals) or any(a.team_id != team.pk or not a.ownership_confirmed for a in accounts) \
        or team.require_approval_for_own_accounts
    # recorder.atomic: export_begin locks the export it reuses after share.requested is recorded.
    with recorder.atomic():
        share = Share(
            team=team, source_account=source_account, source_image_id=image.image_id,
            source_image_name=image.name, source_image_relation=str(image.relation),
            copy_name=copy_name, description=description, reason=reason, licence_confirmed_at=now,
            launch_permission_only=launch_permission_only,
            requested_by=access.user, requested_at=now, approval_required=needs_approval,
            approval_deadline=now + timedelta(days=team.request_expiry_days) if needs_approval else None,
            state=Share.State.REQUESTED if needs_approval else Share.State.APPROVED, export_bucket=bucket,
            disk_format=team.export_disk_format,  # the team's choice now, bound in the digest
            # Without an approver the request is its own approval: the same lifetime, from now.
            approval_expires_at=None if needs_approval else rules.approval_expiry(team, start=now),
        )
        if standing is not None:  # decided in advance: approved now, by its signer, with the usual lifetime
            share.state, share.approval_deadline = Share.State.APPROVED, None
            share.decided_by, share.decided_at, share.decision_comment = standing.signer, now, standing.comment
            share.approval_expires_at = rules.approval_expiry(team, start=now)
        recipients = [
            Recipient(kind=Recipient.Kind.TEAM, team=a.team, target_account=a, image_name=copy_name,
                      bound_account_id=a.account_id, bound_region=a.region) for a in accounts
        ] + [
            Recipient(kind=Recipient.Kind.EXTERNAL, external_account_id=e.account_id, external_region=e.region,
                      external_oos_user_id=e.oos_user_id)
            for e in externals
        ]
        methods.recipients_choose(source=source_account, image=image, recipients=recipients,
                                  permission_only=launch_permission_only, visible=visible)
        if standing is not None:
            for recipient in recipients:
                recipient.accepted_in_advance = recipient.target_account_id in standing.accept_for
        for recipient in recipients:  # an external account of the source's Region that gave its OOS user ID
            chosen = external_method(source_region=source_account.region, recipient=recipient)
            if chosen:
                recipient.method, recipient.method_reason = chosen
        # What the approver is shown of the source, from the ReadImages above; its carried tags are bound.
        share.source_facts = copy_facts.source_facts(image, allowlist=team.copy_tag_allowlist)
        share.digest = request_digest(share, recipients)
        share.save()
        if standing is not None and standing.claim is not None:
            standing.claim(share)  # first, before any other row is locked: a second claimant waits here
        for recipient in recipients:
            recipient.share = share
        Recipient.objects.bulk_create(recipients)
        # A standing approval's share is asked for by nobody at this moment: the system records it.
        requested = {"standing_approval": standing.label} if standing is not None else {}
        record(action="share.requested", actor=None if standing else access.user, team=team, target=share, details={
            "source_account": source_account.label, "image_id": image.image_id, "image_name": image.name,
            "relation": str(image.relation), "copy_name": copy_name, "licence_confirmed": True,
            "approval_required": needs_approval, "recipients": [r.label for r in recipients],
            "methods": [r.method for r in recipients], "launch_permission_only": launch_permission_only,
            "export_bucket": bucket, "source_account_id": source_account.account_id, "disk_format": share.disk_format,
            "bound": [[r.bound_account_id, r.bound_region] for r in recipients if r.kind == Recipient.Kind.TEAM],
            "source_facts": share.source_facts, **requested,
        })
        events.emit("share.requested", [share.pk])
        if standing is not None:
            record(action="share.approved", actor=None, team=team, target=share, details={
                "comment": standing.comment, "standing_approval": standing.label,
                "signed_by": standing.signer.display_name, "digest": standing.digest})
        if not needs_approval or standing is not None:  # approved already: the share runs now
            events.emit("share.approved", [share.pk])
            _deliver(share)
        else:  # what would fail later, found before the approver decides (each team's keys in its own job)
            preflight.preflight_begin(share=share)
    if needs_approval and standing is None:
        notifications.later("approval_needed", [share.pk])
    return share


def _decide(*, access: TeamAccess, share: Share, digest: str, comment: str, approve: bool,
            verified_at: datetime | None = None) -> Share:
    require(access, Capability.APPROVE, target=share)
    if "\x00" in comment:
        raise errors.ShareError(errors.TEXT_NUL)
    action = "share.approved" if approve else "share.rejected"
    # Re-read: the role's origin is the rule, not what the request happened to load.
    refusal = rules.decision_refusal(membership=Membership.objects.get(pk=access.membership.pk), share=share)
    if refusal:
        record(action=action, outcome="denied", actor=access.user, team=access.team, target=share,
               details={"reason": refusal[0]})
        raise errors.ShareError(refusal[1])
    # The service holds the step-up rule, so no page or caller can skip it: the caller says when
    # the session last checked a code, and a missing or old time is refused.
    if access.team.require_two_factor_for_privileged and not step_up_fresh(verified_at):
        record(action=action, outcome="denied", actor=access.user, team=access.team, target=share,
               details={"reason": "step_up_stale" if verified_at else "step_up_missing"})
        raise errors.StepUpRequired(errors.STEP_UP_NEEDED.format(
            team=access.team.name, minutes=max(1, settings.OMIPORTAL_APPROVAL_STEP_UP_SECONDS // 60)))
    if approve:
        _check_still_bound(access=access, share=share)
    now = timezone.now()
    new_state = Share.State.APPROVED if approve else Share.State.REJECTED
    # recorder.atomic: the events go in last, after the export this approval reuses is locked
    # (an export sweep holds that one and then appends: the head first here would deadlock).
    with recorder.atomic():
        moved = Share.objects.filter(
            pk=share.pk, team=access.team, state=Share.State.REQUESTED, digest=digest, approval_deadline__gt=now,
        ).update(state=new_state, decided_by=access.user, decided_at=now, decision_comment=comment, updated_at=now)
        if not moved:
            current = Share.objects.get(pk=share.pk)
            if current.state != Share.State.REQUESTED:
                raise errors.ShareConflict(errors.MOVED_ON.format(state=current.get_state_display().lower()))
            if current.digest != digest:
                raise errors.ShareConflict(errors.STALE_DIGEST)
            when = f"{current.approval_deadline:%Y-%m-%d %H:%M} UTC"
            raise errors.ShareConflict(errors.REQUEST_EXPIRED.format(when=when))
        share.refresh_from_db()
        if approve:
            _bind_approval(share, now)
        record(action="share.approved" if approve else "share.rejected", actor=access.user, team=access.team,
               target=share, details={"comment": comment})
        if approve:
            events.emit("share.approved", [share.pk])
            _deliver(share)
        else:
            share.recipients.update(state=Recipient.State.CANCELLED, updated_at=now)
            events.emit("share.rejected", [share.pk])
    notifications.later("decision_made", [share.pk])
    return share


def _check_still_bound(*, access: TeamAccess, share: Share) -> None:
    """The approver signs the stored digest (what the page showed); the accounts' rows must
    still be what it bound: a re-keyed or moved account, or another bucket, needs a new request."""
    if share.state != Share.State.REQUESTED:
        return  # decided already: the conditional update below says so
    if share.export_bucket:
        unchanged = binding.current_digest(share) == share.digest
    else:  # asked before approvals bound accounts: its digest has portal ids only
        unchanged = _legacy_digest(share) == share.digest
    if unchanged:
        return
    label, what = binding.change_since_request(share)
    # No transaction is open here: the refusal stays in the trail.
    record(action="share.approved", outcome="denied", actor=access.user, team=access.team, target=share,
           details={"reason": "changed_since_request", "account": label, "change": what})
    raise errors.ShareConflict(errors.CHANGED_SINCE_REQUEST.format(label=label, what=what))


def _bind_approval(share: Share, now) -> None:
    """Start the approval's lifetime; a request from before binding binds what the approver saw now."""
    share.approval_expires_at = rules.approval_expiry(share.team, start=now)
    fields = {"approval_expires_at": share.approval_expires_at}
    if not share.export_bucket:
        share.export_bucket = fields["export_bucket"] = share.source_account.export_bucket
        for r in share.recipients.filter(kind=Recipient.Kind.TEAM).select_related("target_account"):
            Recipient.objects.filter(pk=r.pk).update(bound_account_id=r.target_account.account_id,
                                                     bound_region=r.target_account.region)
    Share.objects.filter(pk=share.pk).update(**fields)


def _deliver(share: Share) -> None:
    """The share may run (in the caller's transaction): one export for the recipients it serves, if
    any; launch grants, and offers of direct copies, for the same-Region ones (grants.py)."""
    if methods.needs_export(share.recipients.all()):
        exports.export_begin(share=share)
    grants.grants_begin(share=share)


def share_approve(*, access: TeamAccess, share: Share, digest: str, comment: str = "",
                  verified_at: datetime | None = None) -> Share:
    """``verified_at``: when the deciding session last checked a two-factor code (teams that require it)."""
    return _decide(access=access, share=share, digest=digest, comment=comment, approve=True,
                   verified_at=verified_at)


def share_reject(*, access: TeamAccess, share: Share, digest: str, comment: str = "",
                 verified_at: datetime | None = None) -> Share:
    return _decide(access=access, share=share, digest=digest, comment=comment, approve=False,
                   verified_at=verified_at)


@transaction.atomic
def share_cancel(*, access: TeamAccess, share: Share) -> Share:
    """The requester (or an admin) withdraws a share before its export has finished. The last
    share of an export still in flight takes the export with it (export_cancels.py)."""
    require(access, rules.cancel_needs(access=access, share=share), target=share)
    now = timezone.now()
    export_id = export_cancels.lock_export_of(share)  # the export's row before the share's
    moved = Share.objects.filter(rules.CANCELLABLE, pk=share.pk).update(state=Share.State.CANCELLED, updated_at=now)
    if not moved:
        share.refresh_from_db()
        raise errors.ShareConflict(errors.NOT_CANCELLABLE.format(state=share.get_state_display().lower()))
    # Only those still to come: a same-Region copy may have completed, or be running, already.
    share.recipients.filter(state__in=[Recipient.State.WAITING, Recipient.State.OFFERED]).update(
        state=Recipient.State.CANCELLED, updated_at=now)
    grant_state.grants_release_later(share_ids=[share.pk])
    share.refresh_from_db()
    details = {}
    if export_id is not None:
        details["export_cancelled"] = export_cancels.claim_for_cancel(export_id)
    record(action="share.cancelled", actor=access.user, team=access.team, target=share, details=details)
    return share


def share_expire_stale(*, now=None) -> int:
    """Requests nobody decided on in time expire (run by the reconciler)."""
    now = now or timezone.now()
    expired = 0
    for share in Share.objects.filter(state=Share.State.REQUESTED, approval_deadline__lte=now).select_related("team"):
        with transaction.atomic():
            if Share.objects.filter(pk=share.pk, state=Share.State.REQUESTED).update(
                    state=Share.State.EXPIRED, state_message="Nobody approved the request in time.", updated_at=now):
                share.recipients.update(state=Recipient.State.EXPIRED, updated_at=now)
                record(action="share.expired", actor=None, team=share.team, target=share,
                       details={"reason": "approval_deadline"})
                events.emit("share.expired", [share.pk], occasion="request")
                expired += 1
    return expired
