"""The source side: copy-first when needed, export, watch it, hand the result to the shares.
The start itself (the copy or the export task) is in export_starts.py."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for, opened_once
from accounts.models import CloudAccount
from audit import recorder
from audit.recorder import record
from transfers import scheduling
from transfers.models import Export, Share
from transfers.services import bounded, import_starts, locks, polling
from transfers.services.export_completes import export_complete, read_manifests, shares_ready
from transfers.services.export_ends import export_failed, export_target
from transfers.services.laps import Laps

logger = logging.getLogger(__name__)

def export_begin(*, share: Share) -> None:
    """Give an approved share an export: a reusable one, or a new one. Runs in the caller's transaction."""
    now = timezone.now()
    margin = timedelta(hours=settings.OMIPORTAL_EXPORT_REUSE_MIN_HOURS)
    # The bucket the approval bound, not the account's current one (older shares bound none).
    bucket = share.export_bucket or share.source_account.export_bucket
    # Never one a clean-up or a cancellation has claimed (its objects may be going, its task being
    # cancelled). The row lock held until the caller commits orders this against those claims
    # (cleanup._claim, export_cancels.claim_for_cancel), which lock the row too. Only one written in
    # the disk format this share asked for. Two approvals of one image at once would each find no
    # export to lock and make one each: the lock below makes the second wait for the first's.
    locks.export_reuse_lock(share.source_account_id, share.source_image_id, bucket)
    export = (
        Export.objects.select_for_update()
        .filter(account=share.source_account, source_image_id=share.source_image_id, bucket=bucket,
                cleanup_claimed_at__isnull=True)
        .filter(Exists(Share.objects.filter(export=OuterRef("pk"), disk_format__in=same_format(share))))
        .filter(Q(state__in=Export.IN_FLIGHT)
                | Q(state=Export.State.COMPLETED, manifest_deadline__gt=now + margin, cleaned_at__isnull=True))
        .order_by("-created_at").first()
    )
    reused = export is not None
    if export is None:
        needs_copy = share.source_image_relation != "owned"
        export = Export(account=share.source_account, source_image_id=share.source_image_id,
                        state=Export.State.COPYING if needs_copy else Export.State.STARTING,
                        bucket=bucket,
                        next_poll_at=now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS))
        export.prefix = f"omiportal/{export.public_id}/"
        export.save()
        scheduling.enqueue("transfers.jobs.export_start_job", str(export.public_id),
                           job_id=f"export-start-{export.public_id}-0")
    Share.objects.filter(pk=share.pk).update(export=export, state=Share.State.EXPORTING, updated_at=now)
    share.export, share.state = export, Share.State.EXPORTING
    record(action="export.reused" if reused else "export.requested", actor=None, team=share.team, target=share,
           details={"export": str(export.public_id), "image_id": share.source_image_id,
                    "copy_first": export.state == Export.State.COPYING and not reused,
                    "disk_format": share.disk_format or DEFAULT_DISK_FORMAT})
    if export.state == Export.State.COMPLETED:
        shares_ready(shares=[share], export=export)


DEFAULT_DISK_FORMAT = "qcow2"  # what every export was written in before teams chose


def same_format(share: Share) -> tuple[str, ...]:
    """The Share.disk_format values that mean the same disk format as ``share``'s ("" is the default)."""
    chosen = share.disk_format or DEFAULT_DISK_FORMAT
    return (chosen, "") if chosen == DEFAULT_DISK_FORMAT else (chosen,)


def export_disk_format(export: Export) -> str:
    """The disk format an export is written in: that of the shares it serves (export_begin gives
    an export only to shares of one format)."""
    chosen = Share.objects.filter(export=export).exclude(disk_format="").values_list("disk_format", flat=True).first()
    return chosen or DEFAULT_DISK_FORMAT


WATCHED = (Export.State.COPYING, Export.State.RUNNING)
WATCHABLE = Q(copy_image_id__gt="") | Q(task_id__gt="")


def export_sweep(*, account_id) -> None:
    """One look at every in-flight export and copy of one account: at most two cloud calls."""
    account = CloudAccount.objects.select_related("team").filter(public_id=account_id).first()
    if account is None:
        return
    if polling.gathered(Export, account, "export", WATCHED, WATCHABLE):
        return  # more looks fall due soon: one call later sees them all
    now = timezone.now()
    laps = Laps()
    rows = polling.claim(Export, account=account, states=WATCHED, extra=WATCHABLE, now=now)
    handoff: list = []
    progress: list[tuple[Export, int, str]] = []
    with opened_once():
        try:
            if rows:
                riders = polling.riders(Export, account=account, states=WATCHED, extra=WATCHABLE, taken=rows)
                laps.lap("claim")
                # An error before any row could be looked at (the keys, the read) counts against each.
                with bounded.rows_errors(bounded.EXPORT_LOOK, rows):
                    _observe(account, rows, riders, handoff, progress, laps)
            if handoff:
                import_starts.import_start_many(recipient_ids=handoff, source_account=account, laps=laps)
                laps.log(account_label=account.label, imports=len(handoff))
        finally:
            # The exports still running are written after the hand-off: a look that saw a few
            # ends among hundreds of running exports starts their imports without waiting for a
            # progress write each (their leases from the claim hold them until then).
            for export, percent, message in progress:
                with bounded.row_errors(bounded.EXPORT_LOOK, export):
                    _progress(export, progress=percent, message=message, now=now)
            polling.schedule_next(Export, account, "export", WATCHED, WATCHABLE)


def _task_ended(task) -> bool:
    return task is None or task.state in ("completed", "failed", "cancelled")


def _observe(account: CloudAccount, rows: list[Export], riders: list[Export], handoff: list,
             progress: list, laps: Laps) -> None:
    """Look once (the due rows, and the riders that fit in the same calls), act on each due row
    and each rider that ended; ``handoff`` collects the imports to start after commit,
    ``progress`` the running exports' news to write after them, ``laps`` the time of each part."""
    for export in (*rows, *riders):
        export.account = account  # theirs (the claim's filter), its team read already: no query each
    running = [e for e in rows if e.state == Export.State.RUNNING]
    copying = [e for e in rows if e.state == Export.State.COPYING]
    # A rider only rides a call that is made anyway: never a second call for riders alone.
    ride_tasks = [e for e in riders if e.state == Export.State.RUNNING] if running else []
    ride_copies = [e for e in riders if e.state == Export.State.COPYING] if copying else []
    try:
        creds = credentials_for(account, purpose="watch exports")
        tasks = outscale.read_export_tasks(creds=creds, task_ids=[e.task_id for e in (*running, *ride_tasks)])
        images = outscale.read_images(creds=creds, account_id=account.account_id,
                                      image_ids=[e.copy_image_id for e in (*copying, *ride_copies)])
    except outscale.CloudError as exc:
        if not exc.retryable:
            for export in rows:
                export_failed(export, exc.user_message, exc.request_ids)
            return
        polling.postpone(rows, exc.user_message)
        return
    laps.lap("look")
    ended = {e.pk for e in ride_tasks if _task_ended(tasks.get(e.task_id))}
    ended |= {e.pk for e in ride_copies if polling.image_ended(images.get(e.copy_image_id))}
    for export in polling.claim_riders(Export, [*ride_tasks, *ride_copies], ended):
        (running if export.state == Export.State.RUNNING else copying).append(export)
    # The manifests of the exports that ended, read side by side before any is completed: the
    # last one's imports do not wait for every read before it (export_completes.py).
    manifests = read_manifests(creds=creds, ended=[
        (e, tasks[e.task_id]) for e in running if e.task_id in tasks and tasks[e.task_id].state == "completed"])
    laps.lap("manifests")
    # What one look saw end is written in one transaction: one commit and one append to the audit
    # trail for every export it completed, where each paid its own (about 23 ms an export, 0.21 s
    # at p50 for a look's nine, in bench_transfers at 1,000). The imports start after it commits.
    # But a transaction that has offered a hand-off's worth of imports commits there, and queues
    # a job for them: another worker starts them while this one completes the rest (a release of
    # 10,000 imports from ten exports waited 14 s for all ten before its first create).
    left = list(running)
    while left:
        with recorder.atomic():
            offered = len(handoff)
            while left and len(handoff) - offered < import_starts.HANDOFF_EARLY:
                _end(left.pop(0), tasks, manifests, handoff, progress)
            if left:
                import_starts.handoff_later(account)  # on commit
    for export in copying:
        with bounded.row_errors(bounded.EXPORT_LOOK, export):
            image = images.get(export.copy_image_id)
            if image is not None and image.state == "available":
                with transaction.atomic():
                    Export.objects.filter(pk=export.pk, state=Export.State.COPYING).update(
                        state=Export.State.STARTING, attempts=0, updated_at=timezone.now(),
                        next_poll_at=timezone.now()
                        + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS))
                    record(action="export.copy_completed", actor=None, team=account.team,
                           target=export_target(export), cloud_request_ids=list(images.request_ids),
                           details={"copy_image_id": export.copy_image_id})
                    scheduling.enqueue("transfers.jobs.export_start_job", str(export.public_id),
                                       job_id=f"export-start-{export.public_id}-copied")
            elif image is None or image.state in ("failed", "deleted"):
                reason = ((image.state_message if image else "")
                          or "OUTSCALE could not copy the image into the account.")
                export_failed(export, reason, images.request_ids)
            else:
                progress.append((export, 0, ""))
    laps.lap("completions")


def _end(export: Export, tasks, manifests: dict, handoff: list, progress: list) -> None:
    """Complete or fail one running export the look saw end, or note its progress."""
    # An error on one row (a bug, a refused audit write) counts against that row alone, its
    # writes undone with its savepoint, and the account's other exports go on (bounded.py).
    with bounded.row_errors(bounded.EXPORT_LOOK, export), transaction.atomic():
        task = tasks.get(export.task_id)
        if task is None:
            export_failed(export, "OUTSCALE no longer knows this export task.", tasks.request_ids)
        elif task.state == "completed":
            export_complete(export=export, manifest=manifests.get(export.pk), handoff=handoff)
        elif task.state in ("failed", "cancelled"):
            export_failed(export, task.comment or f"The export was {task.state}.", tasks.request_ids)
        else:
            progress.append((export, task.progress, task.comment))


def _progress(export: Export, *, progress: int, message: str, now) -> None:
    # Progress moves on every look at a long export; only its end needs noticing promptly, so
    # the pace keeps backing off (a look per sweep_max at most) whatever the percentage does.
    # But when the pace the export kept since the last look (updated_at is when that look
    # wrote) says it ends before the next one, the next look goes where it should end: the
    # end is noticed within a sweep_min instead of a sweep_max, for no more calls. ``now``: when
    # the look was made.
    interval = scheduling.next_interval(export.poll_interval)
    delay = interval
    left = scheduling.seconds_to_finish(export.progress, progress, (now - export.updated_at).total_seconds())
    if left is not None:
        delay = min(interval, max(scheduling.sweep_min(), left))
    Export.objects.filter(pk=export.pk, state=export.state).update(
        progress=progress, state_message=message[:500], poll_interval=interval,
        next_poll_at=now + timedelta(seconds=delay), updated_at=now)
