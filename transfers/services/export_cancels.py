"""Withdrawing the last share of an export still in flight cancels the export.

share_cancel claims the export in its own transaction (``claim_for_cancel``): a conditional update
of cleanup_claimed_at, under the export row's lock, only while the export is in flight and no other
share uses it. One cancellation wins the claim, so the export is cancelled once; from then on no
share reuses it (export_begin skips claimed exports) and no start creates anything for it
(export_start skips them too). The cloud is called in ``export_cancel_job``, outside any
transaction:

- a running export task is cancelled (DeleteExportTask). OUTSCALE cancels only a task that has not
  got far: a refusal leaves it to run to its end, offered to nobody, and the trail says so;
- a copy-first image still being made: the export ends, and the copy is deleted like any failed
  export's (cleanup.export_copy_delete);
- nothing created yet: the export ends without a call, once no start is inside its create (a
  start that may have created something is looked up first, by its deterministic name).

Each end is one ``export.cancelled`` event with the cloud's RequestIds.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from audit.recorder import record
from transfers import errors, scheduling
from transfers.models import Export, Share
from transfers.services import bounded, polling
from transfers.services.export_ends import export_failed, export_target

# The cloud calls one cancel run can make (polling.start_call_seconds): a lookup of what an earlier
# start made, DeleteExportTask, a read of the task after a refusal.
CANCEL_CALLS = 3

EXPORT_CANCEL = bounded.Step("export cancel", Export, Q(state__in=Export.IN_FLIGHT, cleanup_claimed_at__isnull=False),
                             ("account__team",), lambda export, message: export_failed(export, message),
                             claims="attempts")


def lock_export_of(share: Share) -> int | None:
    """Lock the share's export row, if it has one, before the share's own row is changed: the
    order the export sweep takes them in (the export, then its shares), so a withdrawal and the
    sweep that sees the export end never wait for each other. Returns the export's pk."""
    export_id = Share.objects.filter(pk=share.pk).values_list("export_id", flat=True).first()
    if export_id is not None:
        list(Export.objects.select_for_update().filter(pk=export_id).values_list("pk", flat=True))
    return export_id


def claim_for_cancel(export_id: int) -> bool:
    """In the caller's transaction, after its share was withdrawn (and the export's row locked,
    ``lock_export_of``): claim the export for cancellation if it is still in flight and no other
    share needs it, and queue the cancellation. True when this call took the claim."""
    if Share.objects.filter(export_id=export_id).exclude(state__in=Share.FINAL_STATES).exists():
        return False  # another share still waits for it
    claimed = Export.objects.filter(pk=export_id, state__in=Export.IN_FLIGHT, cleanup_claimed_at__isnull=True) \
        .update(cleanup_claimed_at=timezone.now())
    if claimed:
        public_id = Export.objects.filter(pk=export_id).values_list("public_id", flat=True).first()
        scheduling.enqueue("transfers.jobs.export_cancel_job", str(public_id), job_id=f"export-cancel-{public_id}")
    return bool(claimed)


def export_cancel(*, export_id) -> None:
    """Cancel a claimed export in the cloud and end it (see the module's docstring). Safe to run twice."""
    export = Export.objects.select_related("account__team").filter(public_id=export_id).first()
    if export is None or export.state not in Export.IN_FLIGHT or export.cleanup_claimed_at is None:
        return
    if export.state == Export.State.RUNNING:
        _cancel_task(export)
    elif export.state == Export.State.COPYING and export.copy_image_id:
        if _end(export, errors.EXPORT_CANCELLED_UNSTARTED, (), "copy_abandoned",
                Q(state=Export.State.COPYING, copy_image_id=export.copy_image_id)):
            _delete_copy(export)
        else:
            _come_back(export)  # the copy completed meanwhile: the next run finds it STARTING
    else:
        _cancel_unstarted(export)


def _cancel_task(export: Export) -> None:
    now = timezone.now()
    held = polling.lease_until(now)
    # Taken from the sweeps while the call runs, as a sweep takes it; not while a sweep holds it.
    free = Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now + timedelta(seconds=scheduling.sweep_max()))
    if not Export.objects.filter(free, pk=export.pk, state=Export.State.RUNNING, task_id=export.task_id,
                                 next_poll_at=export.next_poll_at).update(next_poll_at=held):
        _come_back(export)
        return
    reason = ""
    with outscale.record_request_ids() as request_ids:
        creds = credentials_for(export.account, purpose="cancel export")
        try:
            outscale.cancel_export(creds=creds, task_id=export.task_id)
            outcome = "cancelled"
        except outscale.NotFound:
            outcome = "gone"  # OUTSCALE no longer knows the task
        except outscale.CloudError as exc:
            if exc.retryable and not _past_cancelling(exc):
                Export.objects.filter(pk=export.pk, state=Export.State.RUNNING, next_poll_at=held).update(
                    next_poll_at=now + timedelta(seconds=scheduling.sweep_min()))
                _come_back(export)
                return
            outcome = "refused"
            reason = "the task had already left OUTSCALE's queue" if _past_cancelling(exc) else exc.user_message
            # A run before this one may have cancelled it already (its answer lost): look.
            task = outscale.read_export_tasks(creds=creds, task_ids=[export.task_id]).get(export.task_id)
            if task is not None and task.state == "cancelled":
                outcome, reason = "cancelled", ""
    running = Q(state=Export.State.RUNNING, next_poll_at=held)
    if outcome != "refused":
        _end(export, errors.EXPORT_CANCELLED, request_ids, outcome, running)
        return
    # The task goes on: the sweep follows it to its end, and no share is waiting to be offered it.
    with transaction.atomic():
        message = errors.EXPORT_CANCEL_REFUSED.format(reason=reason.rstrip("."))
        if Export.objects.filter(running, pk=export.pk).update(next_poll_at=timezone.now(),
                                                               state_message=message[:500]):
            record(action="export.cancelled", outcome="failed", actor=None, team=export.account.team,
                   target=export_target(export), cloud_request_ids=list(request_ids),
                   details={"task_id": export.task_id, "outcome": outcome, "reason": reason})
            scheduling.schedule_sweep("export", export.account.public_id, timezone.now())


def _past_cancelling(exc: outscale.CloudError) -> bool:
    """A wrong-state answer (6xxx): for a task that is no longer queued it will not change, so
    asking again is no use, where the layer counts it among the waits."""
    return (exc.code or "").isdigit() and 6000 <= int(exc.code) < 7000


def _cancel_unstarted(export: Export) -> None:
    now = timezone.now()
    tried = export.attempts
    # Taken from any start as a start takes it (the same conditional UPDATE): never while a start
    # is inside its create, whose lease keeps this off until it ran out.
    if not Export.objects.filter(polling.start_free(now, tried=tried), pk=export.pk, state=export.state,
                                 attempts=tried, task_id="", copy_image_id=export.copy_image_id).update(
            attempts=tried + 1, next_poll_at=polling.start_lease_until(now, calls=CANCEL_CALLS)):
        _come_back(export)
        return
    claimed = Q(state=export.state, attempts=tried + 1, task_id="", copy_image_id=export.copy_image_id)
    if not tried:
        _end(export, errors.EXPORT_CANCELLED_UNSTARTED, (), "unstarted", claimed)
        return
    # An earlier start may have created something before its answer was lost: look its name up.
    with outscale.record_request_ids() as request_ids:
        creds = credentials_for(export.account, purpose="cancel export")
        if export.state == Export.State.STARTING:
            task = outscale.find_export_task(creds=creds, bucket=export.bucket, prefix=export.prefix)
            found = {"task_id": task.task_id} if task is not None else {}
        else:
            image = outscale.find_own_image(creds=creds, account_id=export.account.account_id,
                                            name=f"omiportal-copy-{export.public_id}",
                                            subject=f"export-copy:{export.public_id}")
            found = {"copy_image_id": image.image_id} if image is not None else {}
    if not found:
        _end(export, errors.EXPORT_CANCELLED_UNSTARTED, request_ids, "unstarted", claimed)
    elif "task_id" in found:
        # Adopted as the start would have, then cancelled like any running task.
        if Export.objects.filter(claimed, pk=export.pk).update(**found, state=Export.State.RUNNING,
                                                               next_poll_at=timezone.now()):
            export.refresh_from_db()
            _cancel_task(export)
    elif _end(export, errors.EXPORT_CANCELLED_UNSTARTED, request_ids, "copy_abandoned", claimed, **found):
        export.copy_image_id = found["copy_image_id"]
        _delete_copy(export)


def _end(export: Export, message: str, request_ids, outcome: str, claimed: Q, **fields) -> bool:
    """End the export as cancelled, if it is still as this run claimed it, with its one event."""
    now = timezone.now()
    with transaction.atomic():
        if not Export.objects.filter(claimed, pk=export.pk).update(
                **fields, state=Export.State.FAILED, state_message=message[:500], next_poll_at=None, updated_at=now):
            return False
        record(action="export.cancelled", actor=None, team=export.account.team, target=export_target(export),
               cloud_request_ids=list(request_ids),
               details={"task_id": export.task_id, "outcome": outcome, "bucket": export.bucket})
    return True


def _delete_copy(export: Export) -> None:
    with transaction.atomic():
        scheduling.enqueue("transfers.jobs.export_cleanup_job", str(export.public_id),
                           job_id=f"export-copy-delete-{export.public_id}")


def _come_back(export: Export) -> None:
    """Try again once the run that holds the export (a start inside its create, a sweep) let it go;
    the reconciler queues it too if this is lost."""
    now = timezone.now()
    with transaction.atomic():
        scheduling.enqueue("transfers.jobs.export_cancel_job", str(export.public_id),
                           job_id=f"export-cancel-{export.public_id}-{int(now.timestamp())}",
                           delay=scheduling.sweep_max())
