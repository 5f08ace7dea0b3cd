"""Taking a launch permission back (grants.py makes it): as soon as the copies a grant served have
ended, one UpdateImage (Removals) for the share's grants; the source team's revoke of a kept grant
or of one whose copy has not started; and what the reconciler puts back.

Exactly once, as the add: a removal is claimed (grants.claim: the attempt counted and a lease
written), moves GRANTED → REVOKING → REVOKED and ends with one audit event carrying the RequestIds;
a removal that finds the permission (or the image) gone has succeeded. The reconciler
(grants_reconcile) puts back an add or a removal whose run died, and removes any grant left open
after its recipients ended.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, Q
from django.utils import timezone

import outscale
from accounts.access import require
from accounts.keys import credentials_for
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from transfers import errors, rules
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import bounded, grant_state, locks, polling
from transfers.services.grants import claim, grantee_ids
from transfers.services.share_state import shares_refresh

# A removal the cloud refused for good (keys, a changed owner) is tried again this much later.
REMOVE_RETRY = timedelta(hours=1)

REVOKED_BY_SOURCE = "The source team removed the launch permission before the copy started."
KEPT_FOR_OTHERS = "Released: another share still needs this launch permission; it goes with the last one."

S, R = LaunchGrant.State, Recipient.State


# --- Removing ----------------------------------------------------------------------------------------


def grants_release(*, share_id) -> None:
    """Remove the share's grants no open recipient needs any more, in one UpdateImage, and take over
    a removal whose run died. Two runs at once: one claims, the other makes no call."""
    share = Share.objects.select_related("team", "source_account").filter(public_id=share_id).first()
    if share is None:
        return
    due = Q(pk__in=grant_state.releasable().filter(share=share).values("pk")) | Q(state=S.REVOKING)
    rows = claim(LaunchGrant.objects.filter(due, share=share), state=S.REVOKING)
    if rows:
        _remove(share, rows)


def _remove(share: Share, rows: list[LaunchGrant]) -> bool:
    """UpdateImage Removals for claimed rows; True once they are REVOKED.

    Under the (image, account) locks: an account another share's grant still holds (GRANTED) keeps
    the permission, and only this share's row ends (``grant.released``); the permission goes with
    the last grant that needs it. An addition waiting on the lock comes after the removal, so it is
    never undone by it."""
    with locks.launch_permission_locks(rows[0].image_id, grantee_ids(rows)):
        held = set(LaunchGrant.objects.filter(image_id=rows[0].image_id, grantee_account_id__in=grantee_ids(rows),
                                              state=S.GRANTED).exclude(pk__in=[g.pk for g in rows])
                   .values_list("grantee_account_id", flat=True))
        kept = [g for g in rows if g.grantee_account_id in held]
        if kept:
            _released(share, kept)
        rest = [g for g in rows if g.grantee_account_id not in held]
        return _remove_locked(share, rest) if rest else True


def _released(share: Share, rows: list[LaunchGrant]) -> None:
    """This share is done with the permission, another share's grant still needs it: no call."""
    now = timezone.now()
    with recorder.atomic():
        done = [g for g in rows if LaunchGrant.objects.filter(pk=g.pk, state=S.REVOKING, next_poll_at=g.next_poll_at)
                .update(state=S.REVOKED, revoked_at=now, next_poll_at=None, updated_at=now,
                        state_message=KEPT_FOR_OTHERS)]
        if done:
            record(action="grant.released", actor=None, team=share.team, target=share,
                   details={"image_id": share.source_image_id, "grantee_account_ids": grantee_ids(done)})


def _remove_locked(share: Share, rows: list[LaunchGrant]) -> bool:
    with bounded.rows_errors(GRANT_REMOVE, rows):
        gone = False
        with outscale.record_request_ids() as request_ids:
            try:
                creds = credentials_for(share.source_account, purpose="remove launch permission")
                outscale.revoke_launch(creds=creds, image_id=rows[0].image_id, account_ids=grantee_ids(rows))
            except outscale.NotFound:
                gone = True  # the image is gone, and every permission on it
            except outscale.CloudError as exc:
                _put_back(share, rows, exc.user_message, exc.request_ids, retryable=exc.retryable)
                return False
        _removed(share, rows, list(request_ids), gone)
        return True
    return False


def _put_back(share: Share, rows: list[LaunchGrant], message: str, request_ids=(), *, retryable: bool) -> None:
    """The removal did not happen: the grants stay GRANTED, to be removed later (throttled: soon,
    with a job; refused: REMOVE_RETRY later, by the reconciler, and the trail says why)."""
    now = timezone.now()
    if retryable:  # as a put-off create: free for the job that comes after ``delay``, the reconciler after that
        delay = polling.start_retry_delay(max(g.attempts for g in rows))
        next_poll_at, text = polling.start_deadline(delay), f"{polling.WAITING_PREFIX}{message}"
    else:  # beyond the start horizon: held until then, from every job and the reconciler
        delay, next_poll_at, text = 0, now + REMOVE_RETRY, message
    with recorder.atomic():
        moved = [g for g in rows if LaunchGrant.objects.filter(pk=g.pk, state=S.REVOKING, next_poll_at=g.next_poll_at)
                 .update(state=S.GRANTED, next_poll_at=next_poll_at, state_message=text[:500], updated_at=now)]
        if not moved:
            return
        if retryable:
            grant_state.release_later(share.public_id, delay=delay)
        else:
            record(action="grant.remove_failed", outcome="failed", actor=None, team=share.team, target=share,
                   cloud_request_ids=list(request_ids),
                   details={"image_id": share.source_image_id, "grantee_account_ids": grantee_ids(moved),
                            "reason": message})


def _removed(share: Share, rows: list[LaunchGrant], request_ids: list, gone: bool) -> None:
    now = timezone.now()
    with recorder.atomic():
        done = [g for g in rows if LaunchGrant.objects.filter(pk=g.pk, state=S.REVOKING, next_poll_at=g.next_poll_at)
                .update(state=S.REVOKED, revoked_at=now, next_poll_at=None, state_message="", updated_at=now)]
        if not done:
            return  # taken over by a run whose removal came back first: it recorded it
        by_person = defaultdict(list)
        for grant in done:
            by_person[grant.revoked_by_id].append(grant)
        people = get_user_model().objects.in_bulk([pk for pk in by_person if pk])
        for person_id, grants in by_person.items():
            record(action="grant.removed", actor=people.get(person_id), team=share.team, target=share,
                   cloud_request_ids=request_ids,
                   details={"image_id": share.source_image_id, "grantee_account_ids": grantee_ids(grants),
                            "image_gone": gone})
        # A copy started over while its grant was going (a retry) needs it again.
        grant_state.grants_reopen(recipients=list(Recipient.objects.filter(
            share=share, bound_account_id__in=grantee_ids(done), method=Recipient.Method.LAUNCH_PERMISSION,
            state=R.IMPORTING, image_id="").select_related("share")))


def _remove_gave_up(grant: LaunchGrant, message: str) -> None:
    _put_back(grant.share, [grant], message, retryable=False)


GRANT_REMOVE = bounded.Step("grant removal", LaunchGrant, Q(state=S.REVOKING), ("share__team", "share__source_account"),
                            _remove_gave_up, claims="attempts")


# --- A person revokes (the team's open grants page) -----------------------------------------------


def grant_revoke(*, access: TeamAccess, grant: LaunchGrant) -> LaunchGrant:
    """The source team takes a launch permission back now: a kept one ("launch permission only"),
    or one whose copy has not started (that offer is cancelled). One UpdateImage Removals."""
    share = grant.share
    require(access, Capability.REQUEST_SHARE, target=share)
    refusal = rules.grant_revoke_refusal(access=access, grant=grant)
    if refusal:
        record(action="grant.revoke_requested", outcome="denied", actor=access.user, team=access.team, target=share,
               details={"grantee_account_id": grant.grantee_account_id, "reason": refusal})
        raise errors.ShareError(refusal)
    now = timezone.now()
    served = Recipient.objects.filter(share=share, bound_account_id=grant.grantee_account_id,
                                      method__in=Recipient.GRANT_METHODS)
    with recorder.atomic():
        # Not while a copy by it runs (accepted since the page was drawn): that one ends first.
        if not LaunchGrant.objects.filter(pk=grant.pk, state=S.GRANTED).exclude(
                Exists(served.filter(state=R.IMPORTING))).update(
                keep=False, revoked_by=access.user, next_poll_at=None, updated_at=now):
            grant.refresh_from_db()
            raise errors.ShareConflict(rules.grant_revoke_refusal(access=access, grant=grant)
                                       or errors.GRANT_NOT_OPEN.format(state=grant.get_state_display().lower()))
        cancelled = served.filter(state__in=[R.WAITING, R.OFFERED]).update(
            state=R.CANCELLED, state_message=REVOKED_BY_SOURCE, updated_at=now)
        record(action="grant.revoke_requested", actor=access.user, team=access.team, target=share,
               details={"grantee_account_id": grant.grantee_account_id, "image_id": grant.image_id,
                        "offers_cancelled": cancelled})
        shares_refresh(share_ids=[share.pk])
    rows = claim(LaunchGrant.objects.filter(pk=grant.pk, state=S.GRANTED), state=S.REVOKING)
    if rows:
        _remove(share, rows)
    grant.refresh_from_db()
    return grant


# --- The reconciler's part -------------------------------------------------------------------------

OFFER_EXPIRED = "Nobody accepted the copy before the approval ended ({when}); its launch permission is removed."


def offers_expire(*, now) -> int:
    """A same-Region copy nobody accepted within the approval's lifetime (Share.approval_expires_at)
    expires: it has no link to outlive, but its grant must not stay open for ever. Its share
    follows, and the grant goes (shares_refresh). Kept grants ("launch permission only") stay."""
    stale = Recipient.objects.filter(method__in=Recipient.COPY_METHODS, state=R.OFFERED,
                                     share__approval_expires_at__lte=now)
    expired = 0
    for share in Share.objects.filter(pk__in=stale.values("share_id")).select_related("team").order_by("pk"):
        with recorder.atomic():
            ids = list(Recipient.objects.select_for_update().filter(
                share=share, method__in=Recipient.COPY_METHODS, state=R.OFFERED).values_list("pk", flat=True))
            if not ids:
                continue
            when = f"{share.approval_expires_at:%Y-%m-%d %H:%M} UTC"
            Recipient.objects.filter(pk__in=ids).update(state=R.EXPIRED, state_message=OFFER_EXPIRED.format(when=when),
                                                        next_poll_at=None, updated_at=now)
            record(action="import.expired", actor=None, team=share.team, target=share,
                   details={"recipients": [str(pk) for pk in Recipient.objects.filter(pk__in=ids)
                                           .values_list("public_id", flat=True)],
                            "approval_expires_at": share.approval_expires_at.isoformat()})
            shares_refresh(share_ids=[share.pk])
            expired += len(ids)
    return expired


def grants_reconcile(*, now, overdue, lost) -> int:
    """What a killed worker or a flushed Redis left: an add or a removal whose run died (its lease a
    grace period late) or whose job was lost, a grant left open after its recipients ended (a crash
    between the grant and the copy, or after the copy), a retried copy whose grant is gone; and the
    same-Region offers nobody accepted in time (offers_expire). An add or a release whose job may
    still wait in a backed-up queue is taken for lost only before ``lost`` (at most ``overdue``:
    reconcile.py)."""
    expired = offers_expire(now=now)
    adds = set(LaunchGrant.objects.filter(state=S.GRANTING, next_poll_at__lt=lost)
               .values_list("share__public_id", flat=True))
    removals = set(LaunchGrant.objects.filter(state=S.REVOKING, next_poll_at__lt=overdue)
                   .values_list("share__public_id", flat=True))
    removals |= set(grant_state.releasable().filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lt=lost))
                    .values_list("share__public_id", flat=True))
    with transaction.atomic():
        # As a start's re-enqueue: its next look a grace ahead, so the next ticks leave it to its job.
        LaunchGrant.objects.filter(state=S.GRANTING, next_poll_at__lt=lost, share__public_id__in=adds) \
            .update(next_poll_at=now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS))
        for share_id in sorted(adds, key=str):
            grant_state.add_later(share_id, tag=f"r{int(now.timestamp())}")
        for share_id in sorted(removals, key=str):
            grant_state.release_later(share_id)
        reopened = grant_state.grants_reopen(recipients=list(
            grant_state.waiting_for_grant().filter(next_poll_at__lt=overdue).select_related("share")))
    return expired + len(adds) + len(removals) + reopened
