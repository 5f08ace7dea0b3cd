"""The source side's start: the copy (for a shared or public OMI) or the export task, claimed
before any cloud call.

Before: exports.export_begin, where an approved share gets a new export (and its start job).
Next: exports.export_sweep, the looks that follow the task until its manifest is written.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from audit.recorder import record
from transfers import errors, scheduling
from transfers.models import Export
from transfers.services import binding, polling
from transfers.services.export_ends import export_failed, export_target
from transfers.services.exports import export_disk_format


class _BucketRefused(Exception):
    """The export's bucket is not the source account's own: nothing is started."""


def export_start(*, export_id) -> None:
    """Create the copy (for a shared or public OMI) or the export task. Safe to run twice.

    Each attempt is counted in the database before the cloud is called. Only the first attempt
    can be sure nothing exists yet; any later one (after a lost answer, a killed worker or a
    re-enqueued job) first looks up the deterministic copy name or export prefix.
    """
    export = Export.objects.select_related("account__team").filter(public_id=export_id).first()
    if export is None or export.state not in (Export.State.COPYING, Export.State.STARTING):
        return
    if export.state == Export.State.COPYING and export.copy_image_id:
        return  # the sweep watches the copy
    tried = export.attempts
    now = timezone.now()
    # The attempt is counted and the step leased in one conditional UPDATE: no other run (the
    # reconciler's, a retry's, a second worker's) starts it again while this one may still be
    # inside its cloud calls (polling.start_free).
    # A cancelled export (export_cancels.py, cleanup_claimed_at) starts nothing more.
    if not Export.objects.filter(polling.start_free(now, tried=tried), pk=export.pk, state=export.state,
                                 attempts=tried, cleanup_claimed_at__isnull=True).update(
            attempts=tried + 1, next_poll_at=polling.start_lease_until(now, calls=EXPORT_START_CALLS, starts=1)):
        return  # another run of this step got here first, or holds it
    export.attempts = tried + 1
    account = export.account
    problem = ""
    with outscale.record_request_ids() as request_ids:
        try:
            # Again right before the cloud does anything: the bucket may have changed hands since
            # the request (deleted, then created by another account).
            problem, _ = binding.bucket_problem(account, export.bucket, purpose="check export bucket")
            if problem:
                raise _BucketRefused()
            creds = credentials_for(account, purpose="start export")
            if export.state == Export.State.COPYING:
                name = f"omiportal-copy-{export.public_id}"
                image = tried and _own_copy(creds, account, export, name)
                if not image:
                    try:
                        image = outscale.copy_image(
                            creds=creds, source_image_id=export.source_image_id, name=name,
                            description="Copy made by OMI Portal to export it", subject=_copy_subject(export))
                    except outscale.Conflict as exc:
                        # Our own earlier create (a lost answer, a run whose lease ran out), or not ours.
                        image = _own_copy(creds, account, export, name)
                        if image is None:  # gone again meanwhile: try once more later
                            raise outscale.RetryLater(exc.user_message, kind=outscale.RetryLater.BUSY,
                                                      may_have_run=True, request_ids=exc.request_ids) from None
                changes = {"copy_image_id": image.image_id}
                action = "export.copy_started"
            else:
                found = tried and outscale.find_export_task(creds=creds, bucket=export.bucket, prefix=export.prefix)
                task = found or outscale.start_export(
                    creds=creds, image_id=export.exported_image_id, bucket=export.bucket, prefix=export.prefix,
                    disk_format=export_disk_format(export))
                changes = {"task_id": task.task_id, "state": Export.State.RUNNING, "progress": task.progress}
                action = "export.started"
        except _BucketRefused:
            export_failed(export, errors.EXPORT_BUCKET_REFUSED.format(reason=problem), request_ids, outcome="denied")
            return
        except outscale.CloudError as exc:
            if isinstance(exc, outscale.NameTaken):
                # Someone made an image under the copy's name: never adopted, nothing touched.
                export_failed(export, errors.NAME_NOT_OURS.format(name=f"omiportal-copy-{export.public_id}"),
                      exc.request_ids)
            elif exc.retryable:
                # attempts was counted when this attempt began
                polling.put_off_start(export, exc, tries=export.attempts, fail=export_failed,
                                      claimed=Q(state=export.state, attempts=export.attempts,
                                                **({"copy_image_id": ""} if export.state == Export.State.COPYING
                                                   else {"task_id": ""})),
                                      job="transfers.jobs.export_start_job",
                                      # The phase is in the id: a copy-first export counts its
                                      # attempts again from 0 once the copy is made, and rq keeps
                                      # a finished job's id a while (JOB_RESULT_TTL); the copy's
                                      # retry "-1" would swallow the export task's retry "-1".
                                      job_id=f"export-start-{export.public_id}-{export.state}-{export.attempts}")
            else:
                export_failed(export, exc.user_message, exc.request_ids)
            return
    now = timezone.now()
    with transaction.atomic():
        interval = scheduling.sweep_min()
        # The lease is replaced by the first look; a run whose lease ran out finds it done.
        if not Export.objects.filter(pk=export.pk, state=export.state, copy_image_id=export.copy_image_id,
                                     task_id="").update(
                **changes, state_message="", next_poll_at=now + timedelta(seconds=interval),
                poll_interval=interval, updated_at=now):
            return
        record(action=action, actor=None, team=account.team, target=export_target(export),
               cloud_request_ids=list(request_ids), details={k: str(v) for k, v in changes.items()})
        scheduling.schedule_sweep("export", account.public_id, now + timedelta(seconds=interval))


# The cloud calls one export start can make (polling.start_call_seconds): the bucket check
# (ListBuckets, HeadBucket), a lookup before a retried create, the create, a lookup after a
# duplicate-name answer. One of them, the CreateImageExportTask, is paced as a start (its lease
# counts the pace's patience: `starts=1` where the lease is written).
EXPORT_START_CALLS = 5


def _copy_subject(export: Export) -> str:
    """What the portal's mark on a copy-first image stands for: this export."""
    return f"export-copy:{export.public_id}"


def _own_copy(creds, account: CloudAccount, export: Export, name: str):
    return outscale.find_own_image(creds=creds, account_id=account.account_id, name=name,
                                   subject=_copy_subject(export))
