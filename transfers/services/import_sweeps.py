"""A recipient's life, 3 of 4: the look. One sweep per account reads every import in flight
there with one ReadImages call: the rows due for a look are claimed, riders come along in the
same call, and each row either waits (its next look backs off), completes or fails.

Before: import_starts.py, which noted the import's image and booked its first look. Next:
import_ends.py, where an import completes (tagged many in one call, then recorded together) or fails. The words
are defined in transfers/services/__init__.py.
"""

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for, opened_once
from accounts.models import CloudAccount
from audit.context import job_context
from transfers import scheduling
from transfers.models import Recipient
from transfers.services import bounded, copy_facts, copy_looks, polling
from transfers.services.import_ends import import_failed, imports_complete, imports_tag

logger = logging.getLogger(__name__)


WATCHED = (Recipient.State.IMPORTING,)
WATCHABLE = Q(image_id__gt="")
PROMPT = Q(method__in=Recipient.COPY_METHODS)


# Sweeps a thread with none left takes off the queue at a time (a few round trips to Redis each).
TAKE_AT_ONCE = 4


def import_sweeps_due(*, job_id: str, account_id) -> None:
    """The sweep of job ``job_id`` and, beside it, the import sweeps of other accounts waiting in
    the poll queue behind it, up to OMIPORTAL_SWEEP_CONCURRENCY at a time
    (scheduling.take_waiting_sweeps): each in a thread, as its own job would run it. A thread that
    is done takes the next ones waiting, for OMIPORTAL_SWEEP_BUDGET_SECONDS: taken 32 at a time,
    a worker's sweeps waited for the slowest of each 32, then gave the late queues a turn
    (omiportal/worker.py), a third of its time in a release into 1,000 accounts."""
    others = scheduling.take_waiting_sweeps("import", limit=int(settings.OMIPORTAL_SWEEP_CONCURRENCY) - 1)
    sweeps = [(job_id, account_id), *others]

    def one(sweep):
        sweep_job_id, sweep_account_id = sweep
        # Their events wait to be chained rather than for the audit chain head: each sweep's
        # transactions would queue behind the others' on that one row (audit/recorder.py).
        with job_context(job_id=sweep_job_id, park=True), scheduling.standing_for(sweep_job_id), \
                polling.in_line():
            scheduling.sweep_begins("import", sweep_account_id)
            import_sweep(account_id=sweep_account_id)

    polling.run_each(one, sweeps, what="sweep imports", threads=len(sweeps),
                     more=lambda: scheduling.take_waiting_sweeps("import", limit=TAKE_AT_ONCE),
                     more_for=float(settings.OMIPORTAL_SWEEP_BUDGET_SECONDS))


def import_sweep(*, account_id) -> None:
    """One ReadImages call for every in-flight import into one account."""
    account = CloudAccount.objects.select_related("team").filter(public_id=account_id).first()
    if account is None:
        return
    # Same-Region copies are looked at where their plan says (copy_looks.py): never put off.
    if polling.gathered(Recipient, account, "import", WATCHED, WATCHABLE, prompt=PROMPT):
        return  # more looks fall due soon: one call later sees them all
    try:
        rows = polling.claim(Recipient, account=account, states=WATCHED, extra=WATCHABLE, now=timezone.now())
        if rows:
            riders = polling.riders(Recipient, account=account, states=WATCHED, extra=WATCHABLE, taken=rows)
            # An error before any row could be looked at (the keys, the read) counts against each.
            with opened_once(), bounded.rows_errors(bounded.IMPORT_LOOK, rows):
                _observe(account, rows, riders)
    finally:
        # Whatever happened here, the account's next look is booked: looks asked for while this
        # sweep waited booked none of their own (sweep_bookings.py).
        polling.schedule_next(Recipient, account, "import", WATCHED, WATCHABLE)


def _copy_sizes(rows: list[Recipient]) -> dict:
    """The source's size (GiB) of each copy among ``rows``, in one query: where to look next."""
    copies = [r.pk for r in rows if r.method in Recipient.COPY_METHODS and r.share_id]
    if not copies:
        return {}
    return dict(Recipient.objects.filter(pk__in=copies).values_list("pk", "share__source_facts__size_gib"))


def _next_look(recipient: Recipient, sizes: dict, now) -> tuple[float, float | None]:
    """(interval, first look after the create or None) for a row still pending: an import backs
    off; a copy follows where similar copies ended (copy_looks.py)."""
    if recipient.pk not in sizes or recipient.started_at is None:
        return scheduling.next_interval(recipient.poll_interval), None
    plan = copy_looks.plan_for(sizes[recipient.pk])
    return copy_looks.next_look(plan, elapsed=(now - recipient.started_at).total_seconds(),
                                previous=recipient.poll_interval)


def _observe(account: CloudAccount, rows: list[Recipient], riders: list[Recipient]) -> None:
    try:
        creds = credentials_for(account, purpose="watch imports")
        images = outscale.read_images(creds=creds, account_id=account.account_id,
                                      image_ids=[r.image_id for r in (*rows, *riders)])
    except outscale.CloudError as exc:
        if not exc.retryable:
            for recipient in rows:
                import_failed(recipient, exc.user_message, exc.request_ids)
        else:
            polling.postpone(rows, exc.user_message)
        return
    # Riders that are still importing keep their own pace; the ones that ended join the rows.
    ended = {r.pk for r in riders if polling.image_ended(images.get(r.image_id))}
    rows = rows + polling.claim_riders(Recipient, riders, ended)
    available, pending = [], []
    for recipient in rows:
        image = images.get(recipient.image_id)
        if image is None or image.state in ("failed", "deleted"):
            reason = (image.state_message if image else "") or "OUTSCALE could not import the image."
            with bounded.row_errors(bounded.IMPORT_LOOK, recipient):  # one bad row does not stop the others
                import_failed(recipient, reason, images.request_ids)
        elif image.state == "available":
            available.append(recipient)
        else:
            pending.append(recipient)
    sizes, now = _copy_sizes(pending), timezone.now()
    waiting = defaultdict(list)  # (next interval, first look or None) -> pks
    for recipient in pending:
        waiting[_next_look(recipient, sizes, now)].append(recipient.pk)
    for (interval, first), pks in waiting.items():  # imports started together back off together: one UPDATE
        # A copy looked at before its plan's first look (riding with another row) keeps that look.
        at = now + timedelta(seconds=interval) if first is None else F("started_at") + timedelta(seconds=first)
        Recipient.objects.filter(pk__in=pks, state=Recipient.State.IMPORTING).update(
            poll_interval=interval, next_poll_at=at, state_message="", updated_at=now)
    if not available:
        return
    # The completions' OMIs are tagged with their provenance, one CreateTags for all the copies
    # of one source (import_ends.provenance_tags); then one transaction records them all. A sweep
    # that dies in between leaves them IMPORTING: the next one tags them again (the same tags:
    # CreateTags sets them, a repeat changes nothing) and completes them, each once (_complete's
    # conditional update).
    by_pk = Recipient.objects.select_related("share__source_account", "share__team", "team") \
        .in_bulk([r.pk for r in available])
    for recipient in by_pk.values():  # how each copy differs from its source, recorded with its completion
        recipient.warnings = copy_facts.copy_warnings(recipient.share, images.get(recipient.image_id))
    tagged: list[tuple[Recipient, dict, list]] = []
    imports_tag(list(by_pk.values()), account, creds, tagged, images=images)
    try:
        imports_complete(tagged, images.request_ids)
    except Exception as exc:  # noqa: BLE001 - the others must not wait on one bad row: see below
        # The whole batch rolled back. Complete the rows one at a time, so that an error is
        # counted against the row that raises it (bounded.py) and the others complete.
        logger.warning("Completing %d imports together raised %s; completing them one at a time.", len(tagged),
                       type(exc).__name__)
        for one in tagged:
            with bounded.row_errors(bounded.IMPORT_LOOK, one[0]):
                imports_complete([one], images.request_ids)
