"""A same-Region copy looked at by the job that made it, around its expected end.

rq's scheduler moves a delayed job once a second, and keeps its time in whole seconds: a sweep
booked for a copy's expected end runs up to a second before or after it, so a copy of a few
seconds was seen up to a second after it ended. When a copy's first look (copy_looks.py) is at
most WATCH_AHEAD seconds after its create, the job that created it (the grant job, or the start
job of a direct copy) waits for that look itself and makes it: the account's ordinary sweep
(import_sweeps.import_sweep: claimed, leased, each end once), at the planned time to the tenth of
a second, then every ``fine`` step (at least WATCH_STEP_FLOOR) for WATCH_SPAN seconds.

What it holds, and for how long:

- No database transaction and no lock while it waits (plain sleeps between looks; each look is a
  sweep with its own short transactions), and no row: the copies stay as _started booked them.
- Its worker only while nobody else needs it: between sleeps of CHECK_SECONDS it reads the
  queues' lengths, and as soon as a job has waited through one check (every worker is busy) it
  books the looks through rq as usual and puts the rest of the watch back on the queue, behind
  that job (``copy_watch_job``, once: a resumed watch that must give its worker away again
  leaves the looks to rq), so a burst is never held up by more than CHECK_SECONDS per watch and
  waiting worker, and the watch goes on once the queue is through.
- At most WATCH_AHEAD + WATCH_SPAN seconds in all (8 s), far below rq's job timeout.

A worker that dies while watching loses nothing: rq's sweep was booked at the end of the watch
(import_starts._started), and the reconciler comes after that. A watch that stops (its span
over, its copies ended, given up) books each account's next look through rq, as a sweep does.
"""

import logging
import time
from datetime import timedelta

from django.utils import timezone
from redis.exceptions import RedisError

from accounts.models import CloudAccount
from transfers import scheduling
from transfers.models import Recipient
from transfers.services import copy_looks, import_sweeps, polling

logger = logging.getLogger(__name__)

CHECK_SECONDS = 0.1  # how often a waiting job asks whether another job waits for its worker
QUEUES = ("poll", "default")  # the queues the portal's workers take jobs from


def watch(*, recipient_ids, resumed: bool = False) -> None:
    """Look at these copies (public ids; just started by this job) around their expected end.
    ``resumed``: the rest of a watch that gave its worker away once; it does not queue itself again."""
    try:
        _watch(list(recipient_ids), resumed)
    except Exception:  # noqa: BLE001 - the looks then come from rq's sweeps, booked as a fallback
        logger.exception("Could not watch %d copies; rq's sweep looks at them instead.", len(recipient_ids))


def _watch(recipient_ids: list, resumed: bool) -> None:
    rows = list(Recipient.objects.filter(public_id__in=recipient_ids, state=Recipient.State.IMPORTING,
                                         image_id__gt="", method__in=Recipient.COPY_METHODS,
                                         next_poll_at__isnull=False, started_at__isnull=False)
                .values_list("pk", "target_account_id", "started_at", "next_poll_at"))
    if not rows:
        return
    now = timezone.now()
    plans = {pk: copy_looks.plan_for_recipient(r) for pk, r in Recipient.objects.select_related("share").in_bulk(
        [row[0] for row in rows]).items()}
    # Only copies whose first look is near and planned; each until its span after that look is over.
    until = {pk: started + timedelta(seconds=plans[pk].first + copy_looks.WATCH_SPAN - 1)
             for pk, _, started, at in rows
             if plans.get(pk) and plans[pk].first <= copy_looks.WATCH_AHEAD
             and at <= now + timedelta(seconds=copy_looks.WATCH_AHEAD)}
    if not until:
        return
    accounts = {account for pk, account, _, _ in rows if pk in until}
    due = {pk: at for pk, _, _, at in rows if pk in until}
    first = {pk: started + timedelta(seconds=plans[pk].first) for pk, _, started, _ in rows if pk in until}
    account_of = {pk: account for pk, account, _, _ in rows}
    try:
        with copy_looks.watched():
            left = _looks(due, until, first, account_of, plans)
    finally:
        _book(accounts)
    if left and not resumed:
        # Every worker was busy: the looks are booked through rq (above), and the rest of the
        # watch waits behind the jobs that were waiting, once (under a long queue it would come
        # after its copies' looks anyway).
        scheduling.enqueue("transfers.jobs.copy_watch_job", [str(i) for i in left], queue="default",
                           job_id=f"copy-watch-{left[0]}-{time.time_ns()}", result_ttl=0)


def _looks(due: dict, until: dict, first: dict, account_of: dict, plans: dict) -> list:
    """Look at each copy when due, until it ends or its span is over; the copies still to watch
    (public ids) if the worker is needed elsewhere first, else []."""
    while due:
        pk = min(due, key=due.get)
        at = due[pk]
        if at > until[pk]:
            del due[pk]
            continue
        if not _wait_until(at):
            return list(Recipient.objects.filter(pk__in=list(due)).values_list("public_id", flat=True))
        for account in sorted({account_of[p] for p, when in due.items() if when <= at + timedelta(seconds=0.05)}):
            import_sweeps.import_sweep(account_id=CloudAccount.objects.values_list("public_id", flat=True)
                                       .get(pk=account))
        now = timezone.now()
        pending = dict(Recipient.objects.filter(pk__in=list(due), state=Recipient.State.IMPORTING)
                       .values_list("pk", "next_poll_at"))
        for p in list(due):
            if p not in pending or pending[p] is None:
                del due[p]  # ended (seen by this look or another), or taken off its looks
            elif due[p] <= at + timedelta(seconds=0.05):
                # Its next look as the sweep booked it (the fine step, or its first look if this one
                # came early), but never later than a fine step from now or its first look: another
                # sweep may have booked it on rq's coarser step meanwhile.
                step = timedelta(seconds=plans[p].fine or plans[p].step)
                due[p] = min(pending[p], max(now + step, first[p]))
    return []


def _wait_until(at) -> bool:
    """Sleep until ``at``; False as soon as a job has waited in a queue through one check."""
    waited = False
    while True:
        left = (at - timezone.now()).total_seconds()
        if left <= 0:
            return True
        try:
            queued = sum(scheduling.get_queue(name).count for name in QUEUES)
        except RedisError:
            return False  # cannot tell: give the worker back

        if queued and waited:
            return False
        waited = bool(queued)
        time.sleep(min(CHECK_SECONDS, left))


def _book(account_pks) -> None:
    """Each account's next look through rq, as a sweep books it (the earliest row's)."""
    for account in CloudAccount.objects.filter(pk__in=list(account_pks)):
        polling.schedule_next(Recipient, account, "import", import_sweeps.WATCHED, import_sweeps.WATCHABLE)
