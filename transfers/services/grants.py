"""The same-Region fast path: grant → copy → revoke (methods.py says which recipients take it).

Once the share may run (its approval, or a request needing none), the source account grants launch
permission on the source image to every same-Region grantee of the share in one UpdateImage
(PermissionsToLaunch.Additions), one LaunchGrant row per share and grantee; their recipients are
then offered (auto-accepted as ever), and each copy is an import start whose create is
CreateImage{SourceImageId, SourceRegionName} with the recipient's keys (import_starts.py), looked at
and ended as imports are. As soon as the copies a grant served have ended (available or failed,
declined, cancelled) one UpdateImage (Removals) takes it back. A "launch permission only" grant
(keep) serves no copy and stays until the source team revokes it (grant_revoke).

Exactly once, as the creates: each call is claimed first (a conditional UPDATE that counts the
attempt and writes a lease, polling.start_lease_until), the add moves GRANTING → GRANTED and the
removal GRANTED → REVOKING (its claim) → REVOKED, each end with one audit event carrying the
RequestIds. Both calls are set operations, so a repeat after a lost answer or a killed worker does
no harm, and a removal that finds the permission (or the image) gone has succeeded. The reconciler
(grants_reconcile) puts back an add or a removal whose run died, and removes any grant left open
after its recipients ended.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, F, Q
from django.utils import timezone

import outscale
from accounts.access import require
from accounts.keys import credentials_for, opened_once
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from transfers import errors, events, notifications, rules
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import bounded, grant_state, import_offers, import_starts, locks, polling
from transfers.services.import_ends import import_failed
from transfers.services.share_state import shares_refresh

# One UpdateImage per run (polling.start_call_seconds sizes the lease from it).
GRANT_CALLS = 1
# A removal the cloud refused for good (keys, a changed owner) is tried again this much later.
REMOVE_RETRY = timedelta(hours=1)

PERMISSION_GRANTED = "Launch permission on {image_id} granted: the account can launch it. No copy is made."
GRANT_FAILED = "The source account could not grant launch permission: {reason}"
REVOKED_BY_SOURCE = "The source team removed the launch permission before the copy started."
KEPT_FOR_OTHERS = "Released: another share still needs this launch permission; it goes with the last one."

S, R = LaunchGrant.State, Recipient.State


# --- Beginning: grants to make, direct copies to offer --------------------------------------------


def grants_begin(*, share: Share) -> None:
    """In the caller's transaction, once the share may run: one grant row per same-Region grantee
    (one job grants them all), and the recipients that copy directly offered at once."""
    now = timezone.now()
    waiting = list(share.recipients.filter(state=R.WAITING).select_related("team", "target_account"))
    grantees = sorted({r.bound_account_id for r in waiting if r.method in Recipient.GRANT_METHODS})
    if grantees:
        LaunchGrant.objects.bulk_create([
            LaunchGrant(share=share, account_id=share.source_account_id, image_id=share.source_image_id,
                        grantee_account_id=grantee, keep=share.launch_permission_only,
                        next_poll_at=now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS))
            for grantee in grantees], ignore_conflicts=True)
        grant_state.add_later(share.public_id)
    direct = [r for r in waiting if r.method == Recipient.Method.DIRECT]
    if direct:
        _offer(share, direct, method=Recipient.Method.DIRECT)


def _ready_without_export(share: Share, now) -> None:
    # A share that waits for no export is ready now; one whose export runs stays exporting until
    # the export ends (export_completes.shares_ready), its fast recipients going on meanwhile.
    Share.objects.filter(pk=share.pk, state=Share.State.APPROVED).update(state=Share.State.READY, state_message="",
                                                                         updated_at=now)


def _offer(share: Share, recipients: list[Recipient], *, method: str, enqueue: bool = True) -> None:
    """Offer these copies (in the caller's transaction) and accept for the teams that auto-accept
    (their starts queued, unless the caller starts them itself after commit: ``enqueue=False``)."""
    now = timezone.now()
    ids = [r.pk for r in recipients]
    Recipient.objects.filter(pk__in=ids, state=R.WAITING).update(state=R.OFFERED, updated_at=now)
    _ready_without_export(share, now)
    record(action="share.offered", actor=None, team=share.team, target=share,
           details={"method": method, "recipients": [r.label for r in recipients]})
    auto = Recipient.objects.filter(rules.STARTS_WITHOUT_ANSWER, pk__in=ids, state=R.OFFERED,
                                    kind=Recipient.Kind.TEAM).select_related("team", "target_account", "share")
    import_offers.imports_begin(recipients=list(auto.order_by("pk")), actor=None, auto=True, enqueue=enqueue)
    events.emit("share.ready", [share.pk], occasion=method)
    notifications.later("share_ready", [share.pk])


# --- Claims ------------------------------------------------------------------------------------


def _claim(queryset, **changes) -> list[LaunchGrant]:
    """Take these grant rows for one run before any cloud call: the attempt counted and a lease
    written in one UPDATE, only where no other run holds them (polling.start_free: never tried,
    put off, or a lease that ran out). A second run at the same time gets none, and makes no call."""
    now = timezone.now()
    lease = polling.start_lease_until(now, calls=GRANT_CALLS)
    with transaction.atomic():
        rows = list(queryset.select_for_update(skip_locked=True).filter(
            Q(attempts=0) | polling.start_free(now, tried=1)).order_by("pk"))
        LaunchGrant.objects.filter(pk__in=[g.pk for g in rows]).update(
            attempts=F("attempts") + 1, next_poll_at=lease, updated_at=now, **changes)
    for grant in rows:
        grant.attempts, grant.next_poll_at = grant.attempts + 1, lease
        for field, value in changes.items():
            setattr(grant, field, value)
    return rows


def _grantees(rows) -> list[str]:
    return sorted(g.grantee_account_id for g in rows)


# --- Granting --------------------------------------------------------------------------------------


def grants_add(*, share_id) -> None:
    """Grant every grantee of the share still waiting for its grant: one UpdateImage. Safe twice.

    Other shares' grants never tried yet (a burst of approvals) ride along: those of the same
    source image, whatever their number, in the same UpdateImage (Additions is a set: one call
    grants an image to every account that waits for it), and those of other images side by side,
    a thread per image, as many images as the account pace lets one process call at once
    (OMIPORTAL_OUTSCALE_CALLS_PER_SECOND; more would wait on the pace in this process while another
    worker's pace stood idle). Each share's own job, when its turn comes, finds its rows claimed and
    makes no call, instead of waiting behind the others' calls in the queue. Once its copies are
    started, each is handed to this process's watcher, which looks at it around its expected end
    (copy_watch.py)."""
    share = Share.objects.filter(public_id=share_id).first()
    if share is None:
        return
    rows = _claim(LaunchGrant.objects.filter(share=share, state=S.GRANTING))
    untried = LaunchGrant.objects.filter(state=S.GRANTING, attempts=0).exclude(share=share)
    images = list(dict.fromkeys((g.account_id, g.image_id) for g in rows))
    room = max(0, int(settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND) - max(1, len(images)))
    for pair in untried.order_by("share_id").values_list("account_id", "image_id"):
        if pair not in images:
            if not room:
                continue
            room -= 1
            images.append(pair)
    if images:
        same = Q()
        for account_id, image_id in images:
            same |= Q(account_id=account_id, image_id=image_id)
        rows += _claim(untried.filter(same))
    by_image = defaultdict(lambda: defaultdict(list))
    for grant in rows:
        by_image[(grant.account_id, grant.image_id)][grant.share_id].append(grant)
    shares = Share.objects.select_related("team", "source_account").in_bulk(
        list({grant.share_id for grant in rows}))
    with opened_once():  # each account's keys opened (and recorded) once for the job, as in a sweep
        # A thread per image: each waits on its UpdateImage, then on its copies' CreateImage.
        polling.run_each(lambda pair: _add_and_copy(
            [(shares[share_id], grants) for share_id, grants in sorted(by_image[pair].items())]),
            [pair for pair in images if pair in by_image], what="grant launch permission", threads=len(by_image))


def _add_and_copy(group: list[tuple[Share, list[LaunchGrant]]]) -> None:
    """Grant one image to the grantees of every share in ``group`` (one UpdateImage), then start the
    copies that were waiting for it."""
    copies = []
    # An error that is not OUTSCALE's answer counts against each row (bounded.py).
    with bounded.rows_errors(GRANT_ADD, [g for _, rows in group for g in rows]):
        copies = _add(group)
    if copies:
        # Straight on to the copies the grant was waiting for, in this job, once the grant is
        # recorded and its locks let go: no job between grant and copy. A job that dies here
        # leaves them IMPORTING and never tried, for the reconciler to start after its grace.
        import_starts.copies_start(recipient_ids=copies, watched=True)


def _add(group: list[tuple[Share, list[LaunchGrant]]]) -> list:
    # OUTSCALE keeps one permission per image and account, the portal one grant per share and account:
    # additions and removals for the same pair take turns (held until the outcome is recorded).
    rows = [g for _, grants in group for g in grants]
    with locks.launch_permission_locks(rows[0].image_id, _grantees(rows)):
        return _add_locked(group)


def _add_locked(group: list[tuple[Share, list[LaunchGrant]]]) -> list:
    """UpdateImage Additions for claimed rows of one image (one or more shares); the copies to start
    now that they are granted. Each share records its own outcome, with the call's RequestIds."""
    rows = [g for _, grants in group for g in grants]
    with outscale.record_request_ids() as request_ids:
        try:
            creds = credentials_for(group[0][0].source_account, purpose="grant launch permission")
            outscale.grant_launch(creds=creds, image_id=rows[0].image_id, account_ids=sorted(set(_grantees(rows))))
        except outscale.CloudError as exc:
            for share, grants in group:
                if exc.retryable:
                    _put_off_add(share, grants, exc)
                else:
                    _add_failed(share, grants, exc.user_message, exc.request_ids)
            return []
    copies = []
    for share, grants in group:
        copies += _added(share, grants, list(request_ids))
    return copies


def _put_off_add(share: Share, rows: list[LaunchGrant], exc) -> None:
    tries = max(g.attempts for g in rows)
    if tries >= polling.MAX_START_ATTEMPTS:
        _add_failed(share, rows, f"OUTSCALE stayed unavailable: {exc.user_message}", exc.request_ids)
        return
    delay = polling.start_retry_delay(tries)
    now = timezone.now()
    with transaction.atomic():
        moved = 0
        for grant in rows:  # only as this run claimed it: a run taken over changes nothing
            moved += LaunchGrant.objects.filter(pk=grant.pk, state=S.GRANTING, next_poll_at=grant.next_poll_at).update(
                next_poll_at=polling.start_deadline(delay), updated_at=now,
                state_message=f"{polling.WAITING_PREFIX}{exc.user_message}"[:500])
        if moved:
            grant_state.add_later(share.public_id, delay=delay, tag=str(tries))


def _add_failed(share: Share, rows: list[LaunchGrant], message: str, request_ids=()) -> None:
    """The cloud refused the grant: the grants fail, and the copies waiting for them with them."""
    now = timezone.now()
    with recorder.atomic():
        ids = list(LaunchGrant.objects.select_for_update().filter(pk__in=[g.pk for g in rows], state=S.GRANTING)
                   .values_list("pk", flat=True))
        if not ids:
            return
        LaunchGrant.objects.filter(pk__in=ids).update(state=S.FAILED, state_message=message[:500], next_poll_at=None,
                                                      updated_at=now)
        grantees = _grantees(g for g in rows if g.pk in ids)
        record(action="grant.failed", outcome="failed", actor=None, team=share.team, target=share,
               cloud_request_ids=list(request_ids),
               details={"image_id": share.source_image_id, "grantee_account_ids": grantees, "reason": message})
        _ready_without_export(share, now)  # so that the share follows its failed recipients
        for recipient in Recipient.objects.filter(
                share=share, bound_account_id__in=grantees, method__in=Recipient.GRANT_METHODS,
                state__in=[R.WAITING, R.IMPORTING], image_id="").select_related("team", "share"):
            import_failed(recipient, GRANT_FAILED.format(reason=message), request_ids, states=(R.WAITING, R.IMPORTING))


def _added(share: Share, rows: list[LaunchGrant], request_ids: list) -> list:
    now = timezone.now()
    with recorder.atomic():
        ids = set(LaunchGrant.objects.select_for_update().filter(pk__in=[g.pk for g in rows], state=S.GRANTING)
                  .values_list("pk", flat=True))
        if not ids:
            return []  # another run, whose lease had not run out after all, recorded it
        LaunchGrant.objects.filter(pk__in=ids).update(state=S.GRANTED, granted_at=now, next_poll_at=None,
                                                      state_message="", updated_at=now)
        grantees = _grantees(g for g in rows if g.pk in ids)
        record(action="grant.added", actor=None, team=share.team, target=share, cloud_request_ids=request_ids,
               details={"image_id": share.source_image_id, "grantee_account_ids": grantees,
                        "kept": share.launch_permission_only})
        return _granted(share, grantees, now)


def _granted(share: Share, grantees: list[str], now) -> list:
    """The grant is in place: permission-only recipients have what they asked for; the copies are
    offered. Returns the copies to start now (public ids): the ones accepted at once, and any
    started over (a retry) whose grant was made again; the caller starts them after commit."""
    waiting = list(Recipient.objects.filter(share=share, state=R.WAITING, method__in=Recipient.GRANT_METHODS,
                                            bound_account_id__in=grantees).select_related("team", "target_account"))
    only = [r.pk for r in waiting if r.method == Recipient.Method.PERMISSION_ONLY]
    if only:
        Recipient.objects.filter(pk__in=only, state=R.WAITING).update(
            state=R.COMPLETED, completed_at=now, updated_at=now,
            state_message=PERMISSION_GRANTED.format(image_id=share.source_image_id))
        _ready_without_export(share, now)
    copies = [r for r in waiting if r.method == Recipient.Method.LAUNCH_PERMISSION]
    if copies:
        _offer(share, copies, method=Recipient.Method.LAUNCH_PERMISSION, enqueue=False)
    shares_refresh(share_ids=[share.pk])
    return list(Recipient.objects.filter(share=share, state=R.IMPORTING, image_id="",
                                         method=Recipient.Method.LAUNCH_PERMISSION, bound_account_id__in=grantees)
                .order_by("pk").values_list("public_id", flat=True))


def _fail_add_row(grant: LaunchGrant, message: str) -> None:
    _add_failed(grant.share, [grant], message)


GRANT_ADD = bounded.Step("grant add", LaunchGrant, Q(state=S.GRANTING), ("share__team", "share__source_account"),
                         _fail_add_row, claims="attempts")


# --- Removing ----------------------------------------------------------------------------------------


def grants_release(*, share_id) -> None:
    """Remove the share's grants no open recipient needs any more, in one UpdateImage, and take over
    a removal whose run died. Two runs at once: one claims, the other makes no call."""
    share = Share.objects.select_related("team", "source_account").filter(public_id=share_id).first()
    if share is None:
        return
    due = Q(pk__in=grant_state.releasable().filter(share=share).values("pk")) | Q(state=S.REVOKING)
    rows = _claim(LaunchGrant.objects.filter(due, share=share), state=S.REVOKING)
    if rows:
        _remove(share, rows)


def _remove(share: Share, rows: list[LaunchGrant]) -> bool:
    """UpdateImage Removals for claimed rows; True once they are REVOKED.

    Under the (image, account) locks: an account another share's grant still holds (GRANTED) keeps
    the permission, and only this share's row ends (``grant.released``); the permission goes with
    the last grant that needs it. An addition waiting on the lock comes after the removal, so it is
    never undone by it."""
    with locks.launch_permission_locks(rows[0].image_id, _grantees(rows)):
        held = set(LaunchGrant.objects.filter(image_id=rows[0].image_id, grantee_account_id__in=_grantees(rows),
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
                   details={"image_id": share.source_image_id, "grantee_account_ids": _grantees(done)})


def _remove_locked(share: Share, rows: list[LaunchGrant]) -> bool:
    with bounded.rows_errors(GRANT_REMOVE, rows):
        gone = False
        with outscale.record_request_ids() as request_ids:
            try:
                creds = credentials_for(share.source_account, purpose="remove launch permission")
                outscale.revoke_launch(creds=creds, image_id=rows[0].image_id, account_ids=_grantees(rows))
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
                   details={"image_id": share.source_image_id, "grantee_account_ids": _grantees(moved),
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
                   details={"image_id": share.source_image_id, "grantee_account_ids": _grantees(grants),
                            "image_gone": gone})
        # A copy started over while its grant was going (a retry) needs it again.
        grant_state.grants_reopen(recipients=list(Recipient.objects.filter(
            share=share, bound_account_id__in=_grantees(done), method=Recipient.Method.LAUNCH_PERMISSION,
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
    rows = _claim(LaunchGrant.objects.filter(pk=grant.pk, state=S.GRANTED), state=S.REVOKING)
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
