"""A recipient's life, 2 of 4: the start. CreateImage with the manifest link, for one recipient
(a job) or for the hundreds an export just made possible (the hand-off, from the export sweep that
saw it complete). Each start is claimed (its attempt counted and a lease written) before any cloud
call, and an attempt after the first looks its image name up before creating.

Before: import_offers.py, where an offer is accepted (or a failed import retried) and the recipient
becomes IMPORTING. Next: import_sweeps.py, the looks that follow the new image until it is
available; a create the cloud refuses ends at once, in import_ends.py. The words are defined in
transfers/services/__init__.py.
"""

import logging
import time
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import outscale
from accounts import keys
from accounts.keys import credentials_for, open_pasted_link, opened_once
from accounts.models import CloudAccount
from audit import recorder
from audit.recorder import record
from transfers import errors, scheduling
from transfers.link_checks import MSG_UNSIGNED_REFUSED
from transfers.models import Recipient
from transfers.services import binding, bounded, copy_facts, copy_looks, copy_watch, grant_state, polling
from transfers.services.import_ends import import_failed, share_target
from transfers.services.laps import Laps

# What the keys are opened for, as credential.used events say.
SIGN_PURPOSE, START_PURPOSE = "sign manifest link", "start import"


def _file_location(recipient: Recipient) -> str:
    """The manifest URL for this import, made now: pre-signed with the source account's keys
    (never past the manifest's own deadline), or the pasted link opened from the vault."""
    if recipient.share_id:
        export = recipient.share.export
        creds = credentials_for(export.account, purpose=SIGN_PURPOSE)
        link = outscale.presign_manifest(creds=creds, bucket=export.bucket, key=export.manifest_key,
                                         not_after=export.manifest_deadline)
        return link.url
    return open_pasted_link(recipient)


logger = logging.getLogger(__name__)

# The cloud calls one import start can make (polling.start_call_seconds): a lookup before a
# retried create, the create, and a lookup after a duplicate-name answer.
IMPORT_START_CALLS = 3

_STARTING = ("team", "target_account__team", "share__export__account__team")


def import_start(*, recipient_id, watched: bool = False) -> None:
    """CreateImage with FileLocation. Safe to run twice.

    Each attempt is counted before the cloud is called; every attempt after the first looks the
    deterministic image name up before creating (the answer to an earlier one may have been lost).
    ``watched``: a copy whose end is near is handed to this process's watcher once started
    (copy_watch.py), which looks at it around that end.
    """
    recipient = Recipient.objects.select_related(*_STARTING).filter(public_id=recipient_id).first()
    # A copy by launch permission waits for its grant (which queues this start once in place).
    started = recipient and not grant_state.copy_waits_for_grant(recipient) and _start(recipient)
    if started:
        with transaction.atomic():
            _started(*started, watched=watched)
        if watched:
            copy_watch.watch(recipient_ids=[recipient_id])  # an import, or a copy whose end is far: nothing


def _start(recipient: Recipient, *, claimed: bool = False) -> tuple[Recipient, str, list] | None:
    """Count the attempt (unless ``_claim`` did), then call the cloud: (recipient, image id,
    request ids) once it has an image, None if it is not this run's to start or the cloud said
    no (handled here)."""
    if not claimed and not _claim([recipient]):
        return None  # another run of this step got here first
    if not claimed and not binding.imports_allowed([recipient], states=[Recipient.State.IMPORTING]):
        return None  # its account changed since the approval: refused, nothing asked of the cloud
    tried = recipient.start_tries - 1
    account = recipient.target_account
    description = copy_facts.copy_description(recipient.share) if recipient.share_id \
        else "Imported by OMI Portal from a link"
    subject = image_subject(recipient)
    with outscale.record_request_ids() as request_ids:
        try:
            creds = credentials_for(account, purpose=START_PURPOSE)

            def own_image():
                return outscale.find_own_image(creds=creds, account_id=account.account_id,
                                               name=recipient.image_name, subject=subject)

            image = tried and own_image()
            if not image:
                try:
                    image = _create(creds, recipient, description=description, subject=subject)
                except outscale.Conflict as exc:
                    # The name is used: by this import's own earlier create (its answer was lost,
                    # or a run whose lease ran out is still inside the call), or by someone else.
                    image = own_image()
                    if image is None:  # gone again meanwhile: try once more later
                        raise outscale.RetryLater(exc.user_message, kind=outscale.RetryLater.BUSY,
                                                  may_have_run=True, request_ids=exc.request_ids) from None
        except outscale.CloudError as exc:
            if isinstance(exc, outscale.NameTaken):
                # Not ours (made by hand in the account, say): never adopted, nothing touched.
                import_failed(recipient, errors.NAME_NOT_OURS.format(name=recipient.image_name), exc.request_ids)
            elif exc.retryable:
                # start_tries was counted when this attempt began
                polling.put_off_start(
                    recipient, exc, tries=recipient.start_tries, fail=import_failed, claimed=_claimed(recipient),
                    job="transfers.jobs.import_start_job",
                    job_id=f"import-start-{recipient.public_id}-{recipient.attempt}-{recipient.start_tries}")
            else:
                message = exc.user_message
                if not recipient.share_id and recipient.method == Recipient.Method.OBJECT_ACL:  # a pasted path
                    message = MSG_UNSIGNED_REFUSED.format(reason=message.rstrip("."), account=account.account_id)
                import_failed(recipient, message, exc.request_ids)
            return None
    return recipient, image.image_id, list(request_ids)


def copies_start(*, recipient_ids, watched: bool = False) -> None:
    """Start these copies by launch permission now, in the job that has just granted it (grants.py):
    each exactly as its start job would (``import_start`` under ``bounded.run_step``: claimed
    first, looked up when retried, an error counted against it), side by side. One that is not
    started here (a job that died first) is IMPORTING and never tried: the reconciler starts it."""
    def start(recipient_id):
        try:
            bounded.run_step(bounded.IMPORT_START, recipient_id,
                             lambda: import_start(recipient_id=recipient_id, watched=watched))
        except bounded.StepError as exc:  # counted against its row; the reconciler puts the start back
            logger.warning("%s", exc)

    polling.run_each(start, list(recipient_ids), what="start copy")


def _create(creds, recipient: Recipient, *, description: str, subject: str):
    """The create itself: a same-Region copy of the source image (by launch permission, or of an
    image the account can already see: transfers/services/methods.py), or an import of the manifest."""
    # The source image's id goes beside the mark: the copy names its source without a tag of its
    # own (provenance tags stay equal across sources, so one CreateTags covers many copies).
    source = recipient.share.source_image_id if recipient.share_id else ""
    if recipient.share_id and recipient.method in Recipient.COPY_METHODS:
        return outscale.copy_image(creds=creds, source_image_id=source, name=recipient.image_name,
                                   description=description, subject=subject, source=source)
    return outscale.import_image(creds=creds, file_location=_file_location(recipient), name=recipient.image_name,
                                 description=description, subject=subject, source=source)


def image_subject(recipient: Recipient) -> str:
    """What the portal's mark on this import's image stands for: this recipient, this attempt
    (a retry imports under another name, with another mark)."""
    return f"recipient:{recipient.public_id}:{recipient.attempt}"


def _claimed(recipient: Recipient) -> Q:
    """The row as this run claimed it: still importing, no image yet, no attempt counted since."""
    return Q(state=Recipient.State.IMPORTING, image_id="", attempt=recipient.attempt,
             start_tries=recipient.start_tries)


def _claim(recipients) -> list[Recipient]:
    """Count an attempt for each recipient still waiting for its image, before any cloud call:
    the ones a concurrent run counted first drop out. One UPDATE per number of earlier tries
    (a hand-off's rows have none), so a hand-off's threads start on the cloud at once."""
    waiting: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in recipients:
        if recipient.state == Recipient.State.IMPORTING and not recipient.image_id:
            waiting[recipient.start_tries].append(recipient)
    claimed = []
    for tried, group in waiting.items():
        with transaction.atomic():
            now = timezone.now()
            # Not a row another run holds (polling.start_free): its lease has not run out.
            ids = set(Recipient.objects.select_for_update().filter(
                polling.start_free(now, tried=tried), pk__in=[r.pk for r in group], state=Recipient.State.IMPORTING,
                image_id="", start_tries=tried).values_list("pk", flat=True))
            Recipient.objects.filter(pk__in=ids).update(
                start_tries=tried + 1, next_poll_at=polling.start_lease_until(now, calls=IMPORT_START_CALLS))
        for recipient in group:
            if recipient.pk in ids:
                recipient.start_tries = tried + 1
                claimed.append(recipient)
    return sorted(claimed, key=lambda r: r.pk)


def _unclaim(recipients: list[Recipient]) -> None:
    """Give back the attempts counted for starts the budget left undone: they never reached the
    cloud, so the `import_handoff` job that takes them over need not look their names up."""
    by_tries: dict[int, list[int]] = defaultdict(list)
    for recipient in recipients:
        by_tries[recipient.start_tries].append(recipient.pk)
    back = timezone.now() + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)  # as imports_begin
    for tries, pks in by_tries.items():
        Recipient.objects.filter(pk__in=pks, state=Recipient.State.IMPORTING, image_id="", start_tries=tries) \
            .update(start_tries=tries - 1, next_poll_at=back)


def _started(recipient: Recipient, image_id: str, request_ids: list, *, watched: bool = False) -> None:
    """Note the import's image and book its first look (in the caller's transaction): a copy's
    where similar copies ended (copy_looks.py), from its create, which is when it started; an
    import's (or a copy's without such a history) a sweep_min later.

    A ``watched`` copy whose first look is near (copy_looks.WATCH_AHEAD) is looked at by the watcher
    of the process that made it (copy_watch.py): rq's sweep is booked only at the end of the watch,
    as a fallback for a process that dies meanwhile, so that it never looks before the watcher does
    (rq moves a job up to a second early)."""
    now = timezone.now()
    grid = first = interval = scheduling.sweep_min()
    booked = 0.0
    changes = {}
    if recipient.method in Recipient.COPY_METHODS:
        changes["started_at"] = now  # what its duration counts from, for the next copies' looks
        plan = copy_looks.plan_for_recipient(recipient)
        if plan is not None:
            # A copy seen at its first look counts back a step from it (copy_looks.py).
            grid, first, interval = plan.step, plan.first, min(plan.first, plan.step)
            if watched and first <= copy_looks.WATCH_AHEAD:
                booked = copy_looks.WATCH_SPAN
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.IMPORTING, image_id="").update(
            image_id=image_id, link_sealed="", poll_interval=interval,
            next_poll_at=now + timedelta(seconds=first), updated_at=now, **changes):
        return
    account = recipient.target_account
    record(action="import.started", actor=None, team=recipient.team, target=share_target(recipient),
           cloud_request_ids=request_ids,
           details={"recipient": str(recipient.public_id), "image_id": image_id,
                    "image_name": recipient.image_name, "account": account.label})
    scheduling.schedule_sweep("import", account.public_id, now + timedelta(seconds=first + booked), interval=grid)


def import_start_many(*, recipient_ids, source_account: CloudAccount, laps: Laps | None = None,
                      halve: bool = True) -> None:
    """The hand-off: start the imports an export of ``source_account`` just made possible, now.

    One queued job per import would leave a burst of hundreds waiting on a couple of workers
    while the manifest link ages. Each start is still ``_start`` (counted first, looked up when
    retried, safe twice), side by side; the rows are read and claimed in one query each, and
    what the cloud answered is written in one transaction at the end. The sweep starts what it
    can within OMIPORTAL_SWEEP_BUDGET_SECONDS and leaves the rest to `import_handoff` jobs, so
    other sweeps are not held up. A start that dies before its image is noted is put back by the
    reconciler: its row is IMPORTING without an image, counted as tried, so it looks the name up
    first.

    With ``halve`` (a sweep's hand-off), a burst of more than ``SHARE_FROM`` threads' worth is
    halved: the sweep claims the first half, queues an `import_handoff` job for the rest (another
    worker starts it meanwhile), starts its half, then claims whatever of the rest the job has not
    claimed yet, so a busy second worker never delays it. A release to hundreds of accounts is
    bounded by how many creates one process has in flight, not by any account's pace, and the
    other workers sat idle. Either way a run claims at most ``TAKE_PER_THREAD`` starts per thread
    at a time, and one that leaves some unclaimed queues a job for them before it starts its own,
    so a backlog of thousands is taken by every worker a chunk at a time. ``laps``: the sweep's
    timing of its parts (laps.py).
    """
    laps = laps or Laps()
    rest = list(recipient_ids)
    deadline = time.monotonic() + settings.OMIPORTAL_SWEEP_BUDGET_SECONDS
    threads = max(1, int(settings.OMIPORTAL_SWEEP_CONCURRENCY))
    take = TAKE_PER_THREAD * threads
    size = min(take, (len(rest) + 1) // 2) if halve and len(rest) > SHARE_FROM * threads else take
    queued = False
    while rest:
        chunk, rest = rest[:size], rest[size:]
        size = take
        recipients = _claim_for_start(chunk)
        if rest and not queued:
            handoff_later(source_account)  # the rest, for another worker, from now (and from the other end)
            queued = True
        laps.lap("import_claim")
        left = _start_claimed(recipients, source_account, laps, budget=max(0.0, deadline - time.monotonic()))
        if left or (rest and time.monotonic() >= deadline):
            # The budget is spent: the rest (given back, or never claimed) goes to a job of its own.
            handoff_later(source_account)
            return


# A burst is shared once it has more than this many starts per thread of the sweep.
SHARE_FROM = 2

# The most one claim takes, per thread of the sweep: a claim, its keys opened ahead and the give-back
# of what the budget leaves cost what was taken, so a backlog of 10,000 imports is taken a few
# hundred at a time (each `import_handoff` job claimed, opened the keys of and gave back the whole
# backlog to start the few hundred its budget allowed).
TAKE_PER_THREAD = 16

# An export sweep completing many exports hands the imports offered so far to another worker
# (`handoff_later`) once they are this many, and goes on with the others (exports._observe).
HANDOFF_EARLY = 512


def _claim_for_start(recipient_ids) -> list[Recipient]:
    """Read and claim these imports; the ones whose accounts changed since the approval are
    refused here, in one query, before any thread starts."""
    recipients = _claim(Recipient.objects.select_related(*_STARTING).filter(public_id__in=recipient_ids)
                        .order_by("pk"))
    return binding.imports_allowed(recipients, states=[Recipient.State.IMPORTING])


def _start_claimed(recipients: list[Recipient], source_account: CloudAccount, laps: Laps, *,
                   budget: float) -> list:
    """Start these claimed imports side by side within ``budget``; write what the cloud answered;
    give back and return the ones the budget left undone."""
    # Every account's keys opened before the threads start, their uses recorded in one append:
    # a release to hundreds of accounts otherwise queued its threads on the audit chain's lock.
    keys.open_ahead([(source_account, SIGN_PURPOSE)] + [(r.target_account, START_PURPOSE) for r in recipients])
    started: list[tuple[Recipient, str, list]] = []

    def start(recipient):
        started.append(_start(recipient, claimed=True))
        laps.first("first_start_done")

    left = polling.run_each(start, recipients, what="start import", budget=budget)
    laps.lap("starts")
    with recorder.atomic():
        for result in started:
            if result:
                _started(*result)
    laps.lap("written")
    if left:
        _unclaim(left)
    return left


def handoff_later(source_account: CloudAccount) -> None:
    # The job's id names the moment, so a hand-off that is running can queue its own successor.
    # On the sweeps' queue, and ahead of them: a release to 1,000 accounts has thousands of their
    # sweeps waiting there (each comes back at its own time anyway), and its creates waited behind
    # them all (4,016 of 10,000 created five minutes after the exports ended).
    scheduling.enqueue("transfers.jobs.import_handoff_job", str(source_account.public_id), queue="poll",
                       job_id=f"import-handoff-{source_account.public_id}-{time.time_ns()}", at_front=True)


def import_handoff(*, account_id) -> None:
    """Start the imports still waiting for the hand-off from the exports of one source account:
    auto-accepted recipients that are IMPORTING and have never been tried (the database says
    which), within the sweep budget again; whatever is left gets the next job."""
    account = CloudAccount.objects.filter(public_id=account_id).first()
    if account is None:
        return
    # From the other end than the sweep's hand-off, which may come back for what is left of its half.
    waiting = Recipient.objects.filter(share__export__account=account, state=Recipient.State.IMPORTING,
                                       method__in=Recipient.EXPORT_METHODS, image_id="", start_tries=0) \
        .order_by("-pk").values_list("public_id", flat=True)
    ids = list(waiting)
    if ids:
        with opened_once():
            import_start_many(recipient_ids=ids, source_account=account, halve=False)
