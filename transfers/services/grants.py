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
no harm, and a removal that finds the permission (or the image) gone has succeeded. Removals,
the source team's revoke and the reconciler's part are in grant_releases.py.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for, opened_once
from audit import recorder
from audit.recorder import record
from transfers import events, notifications, rules
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import bounded, grant_state, import_offers, import_starts, locks, polling
from transfers.services.import_ends import import_failed
from transfers.services.share_state import shares_refresh

# One UpdateImage per run (polling.start_call_seconds sizes the lease from it).
GRANT_CALLS = 1

PERMISSION_GRANTED = "Launch permission on {image_id} granted: the account can launch it. No copy is made."
GRANT_FAILED = "The source account could not grant launch permission: {reason}"

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


def claim(queryset, **changes) -> list[LaunchGrant]:
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


def grantee_ids(rows) -> list[str]:
    return sorted(g.grantee_account_id for g in rows)


# --- Granting --------------------------------------------------------------------------------------


def grants_add(*, share_id) -> None:
    """Grant every grantee of the share still waiting for its grant: one UpdateImage. Safe twice.

    Other shares' grants never tried yet (a burst of approvals) ride along: those of the same
    source image, whatever their number, in the same UpdateImage (Additions is a set: one call
    grants an image to every account that waits for it), and those of other images side by side,
    a thread per image, as many images as the account's pace serves in a second
    (OMIPORTAL_OUTSCALE_CALLS_PER_SECOND; more would hold this job on the pace while another
    worker could take them). Each share's own job, when its turn comes, finds its rows claimed and
    makes no call, instead of waiting behind the others' calls in the queue. Once its copies are
    started, each is handed to this process's watcher, which looks at it around its expected end
    (copy_watch.py)."""
    share = Share.objects.filter(public_id=share_id).first()
    if share is None:
        return
    rows = claim(LaunchGrant.objects.filter(share=share, state=S.GRANTING))
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
        rows += claim(untried.filter(same))
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
    with locks.launch_permission_locks(rows[0].image_id, grantee_ids(rows)):
        return _add_locked(group)


def _add_locked(group: list[tuple[Share, list[LaunchGrant]]]) -> list:
    """UpdateImage Additions for claimed rows of one image (one or more shares); the copies to start
    now that they are granted. Each share records its own outcome, with the call's RequestIds."""
    rows = [g for _, grants in group for g in grants]
    with outscale.record_request_ids() as request_ids:
        try:
            creds = credentials_for(group[0][0].source_account, purpose="grant launch permission")
            outscale.grant_launch(creds=creds, image_id=rows[0].image_id, account_ids=sorted(set(grantee_ids(rows))))
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
        grantees = grantee_ids(g for g in rows if g.pk in ids)
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
        grantees = grantee_ids(g for g in rows if g.pk in ids)
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
