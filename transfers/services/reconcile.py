"""The safety net: whatever Redis lost, the database still knows, and this puts it back.

Runs periodically (every worker's maintenance tick, see omiportal/worker.py) and
is safe to run any number of times, anywhere.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q
from django.utils import timezone

from accounts.access import require
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from transfers import errors, events, rules, scheduling
from transfers.models import Export, Recipient, Share
from transfers.services import exports, grant_releases, object_grants, object_revokes, share_state
from transfers.services.cleanup import cleanup_later, still_needed
from transfers.services.requests import share_expire_stale

logger = logging.getLogger(__name__)


def reconcile(*, now=None) -> dict:
    now = now or timezone.now()
    grace = timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    overdue = now - grace
    # Late is not lost while the queues are backed up. A queue is first in, first out: a job
    # enqueued after the oldest one still waiting may be waiting too. A start's job is enqueued
    # when its row's next look is set a grace period ahead (a fresh row, a put-off's deadline,
    # this reconciler's own re-enqueue below), a look's job at its next look; so a step is taken
    # for lost only when its job went in a grace period or more before the oldest waiting one
    # (the margin covers the transaction between the row's write and the enqueue on commit).
    # Before, ten thousand approvals queued behind each other came back from every tick as ten
    # thousand more jobs. An empty queue (a flushed Redis) holds nothing back. A wrong guess costs
    # a duplicate job (every step is safe twice) or a later re-enqueue, never a lost step.
    # Starts go to either queue (an import's to `poll` when a hand-off leaves it to a job of its
    # own); looks go to `poll` only, which a backlog of starts on `default` does not hold up.
    since = scheduling.waiting_since(queues=scheduling.STEP_QUEUES)
    lost_start = overdue if since is None else min(overdue, since)
    # A clean-up is queued when the export's last share ends: one that ended a grace period or
    # more before the oldest waiting job had its clean-up taken from the queue, if it was queued.
    settled = overdue if since is None else min(overdue, since - grace)
    since_poll = scheduling.waiting_since(queues=["poll"])
    lost_look = overdue if since_poll is None else min(overdue, since_poll - grace)
    counts = {"expired_requests": share_expire_stale(now=now), "expired_links": _expire_links(now),
              "object_grants": object_grants.object_grants_due(now=now),
              "object_revokes": object_revokes.object_revokes_due(now=now)}

    with transaction.atomic():
        starting = (Q(state=Export.State.STARTING) | Q(state=Export.State.COPYING, copy_image_id="")) \
            & Q(cleanup_claimed_at__isnull=True)
        stalled = Export.objects.filter(state__in=Export.IN_FLIGHT).filter(
            (starting & Q(next_poll_at__lt=lost_start)) | (~starting & Q(next_poll_at__lt=lost_look))) \
            .annotate(start=ExpressionWrapper(starting, output_field=BooleanField())).select_related("account")
        counts["exports"] = 0
        for export in stalled:
            start = export.start
            # Only as read: a start that claimed the row meanwhile wrote its lease (starts are never
            # taken from a run still inside its cloud calls: their lease keeps them off this list).
            # A start's next look goes a grace period after its job, as every start's does.
            if not Export.objects.filter(pk=export.pk, state=export.state, next_poll_at=export.next_poll_at) \
                    .update(next_poll_at=now + grace if start else now):
                continue
            counts["exports"] += 1
            if export.cleanup_claimed_at is not None and export.state != Export.State.RUNNING:
                # Its last share was withdrawn: what is left is the cancellation (export_cancels.py).
                scheduling.enqueue("transfers.jobs.export_cancel_job", str(export.public_id),
                                   job_id=f"export-cancel-{export.public_id}-r{int(now.timestamp())}")
            elif start:
                scheduling.enqueue("transfers.jobs.export_start_job", str(export.public_id),
                                   job_id=f"export-start-{export.public_id}-r{int(now.timestamp())}")
            else:
                scheduling.schedule_sweep("export", export.account.public_id, now, replace=True)
        counts["imports"] = 0
        for recipient in Recipient.objects.filter(
                Q(image_id="", next_poll_at__lt=lost_start) | (~Q(image_id="") & Q(next_poll_at__lt=lost_look)),
                state=Recipient.State.IMPORTING).select_related("target_account"):
            if not Recipient.objects.filter(pk=recipient.pk, state=recipient.state, image_id=recipient.image_id,
                                            next_poll_at=recipient.next_poll_at).update(
                    next_poll_at=now if recipient.image_id else now + grace):
                continue  # moved on since it was read (a start's claim, a sweep)
            counts["imports"] += 1
            if not recipient.image_id:
                scheduling.enqueue("transfers.jobs.import_start_job", str(recipient.public_id),
                                   job_id=f"import-start-{recipient.public_id}-r{int(now.timestamp())}")
            else:
                scheduling.schedule_sweep("import", recipient.target_account.public_id, now, replace=True)
    # Only those nothing still reads, or whose claimed clean-up has not finished, found in one
    # statement: at 10,000 transfers, checking every completed export in turn took most of a
    # worker's time at every tick while their imports ran.
    # Unclaimed ones whose clean-up may still wait behind a backlog are left to it (`settled`); a
    # claim is made by the clean-up's own run, so one left unfinished has no job waiting.
    # The clean-up's own run checks again, under the export's lock (cleanup._claim).
    done = ~still_needed(now) & ~Q(Exists(Share.objects.filter(export=OuterRef("pk"), updated_at__gte=settled)))
    for public_id in Export.objects.filter(
            Q(cleanup_claimed_at__isnull=False) | done, state=Export.State.COMPLETED,
            cleaned_at__isnull=True, account__team__cleanup_exports=True).values_list("public_id", flat=True):
        cleanup_later(public_id)
    # Copy-first images whose deletion at completion was lost (a killed worker, a flushed Redis,
    # a throttled DeleteImage), and those of failed exports.
    for public_id in Export.objects.filter(state__in=[Export.State.COMPLETED, Export.State.FAILED],
                                           copy_cleaned_at__isnull=True, updated_at__lt=overdue) \
            .exclude(copy_image_id="").values_list("public_id", flat=True):
        with transaction.atomic():
            scheduling.enqueue("transfers.jobs.export_cleanup_job", str(public_id),
                               job_id=f"export-copy-delete-{public_id}-r{int(now.timestamp())}")
    # Launch grants: an add or a removal whose run died, a grant left open after its copies ended.
    counts["grants"] = grant_releases.grants_reconcile(now=now, overdue=overdue, lost=lost_start)
    counts["registered_sweeps"] = events.sweep(now=now)  # the apps above (webhooks: links expiring, lost deliveries)
    if any(counts.values()):
        logger.info("Reconciled: %s", counts)
    return counts


def _expire_links(now) -> int:
    """Shares whose manifest deadline passed before some recipients imported."""
    expired = 0
    for share in Share.objects.filter(state__in=[Share.State.READY, Share.State.EXPORTING],
                                      export__manifest_deadline__lte=now).select_related("team", "export"):
        with transaction.atomic():
            # Only those the export serves: a same-Region copy has no link to outlive.
            n = share.recipients.filter(state__in=[Recipient.State.OFFERED, Recipient.State.WAITING],
                                        method__in=Recipient.EXPORT_METHODS).update(
                state=Recipient.State.EXPIRED, state_message="The link expired before the import started.",
                updated_at=now)
            if not share.recipients.exclude(state__in=[Recipient.State.EXPIRED, Recipient.State.DECLINED,
                                                       Recipient.State.CANCELLED]).exists():
                Share.objects.filter(pk=share.pk).update(
                    state=Share.State.EXPIRED, state_message="The manifest's 7-day deadline passed; export again.",
                    updated_at=now)
                record(action="share.expired", actor=None, team=share.team, target=share,
                       details={"reason": "manifest_deadline", "recipients_expired": n})
                events.emit("share.expired", [share.pk], occasion=str(share.export.public_id))
            else:
                share_state.share_refresh(share_id=share.pk)
            expired += 1
    return expired


def share_reexport(*, access: TeamAccess, share: Share) -> Share:
    """One click from the source team: a fresh export for an expired or failed share."""
    require(access, Capability.REQUEST_SHARE, target=share)
    now = timezone.now()
    ends = rules.approval_lapsed(share, now)
    if ends is not None:
        # Outside any transaction: the refusal stays in the trail.
        record(action="share.reexport_requested", outcome="denied", actor=access.user, team=access.team,
               target=share, details={"reason": "approval_lapsed", "approval_expires_at": ends.isoformat()})
        raise errors.ShareError(errors.APPROVAL_LAPSED.format(when=f"{ends:%Y-%m-%d %H:%M} UTC"))
    with recorder.atomic():  # export_begin locks the export it reuses after the event is recorded
        if not Share.objects.filter(rules.REEXPORTABLE, pk=share.pk, team=access.team).update(
                state=Share.State.APPROVED, updated_at=now):
            share.refresh_from_db()
            raise errors.ShareConflict(errors.NOT_REEXPORTABLE.format(state=share.get_state_display().lower()))
        share.refresh_from_db()
        share.recipients.filter(state__in=[Recipient.State.EXPIRED, Recipient.State.CANCELLED]).update(
            state=Recipient.State.WAITING, state_message="", updated_at=now)
        record(action="share.reexport_requested", actor=access.user, team=access.team, target=share)
        exports.export_begin(share=share)
    return share
