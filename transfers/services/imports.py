"""The recipient side: accept or decline, import with the recipient's keys, watch it."""

import time
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess, require
from omiportal import outscale
from omiportal.audit import recorder
from omiportal.audit.recorder import record
from omiportal.outscale.account_credentials import credentials_for, open_pasted_link, opened_once
from transfers import errors, scheduling
from transfers.models import Recipient, Share
from transfers.services import polling
from transfers.services.share_state import share_refresh, shares_refresh


def _share_target(recipient: Recipient):
    return recipient.share if recipient.share_id else recipient


def _image_name(recipient: Recipient) -> str:
    base = recipient.share.copy_name if recipient.share_id else recipient.image_name
    if recipient.attempt <= 1:
        return base
    suffix = f" (retry {recipient.attempt})"
    return base[: 128 - len(suffix)] + suffix


def import_begin(*, recipient: Recipient, actor, auto: bool = False, enqueue: bool = True) -> None:
    """OFFERED (or FAILED, for a retry) → IMPORTING, in the caller's transaction; the job follows,
    unless the caller starts the import itself after commit (``enqueue=False``, the hand-off)."""
    now = timezone.now()
    attempt = recipient.attempt + 1
    recipient.attempt = attempt
    values = {"state": Recipient.State.IMPORTING, "attempt": attempt, "image_name": _image_name(recipient),
              "image_id": "", "state_message": "", "started_at": now, "completed_at": None, "poll_interval": 0,
              "start_tries": 0, "updated_at": now,
              "next_poll_at": now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS),
              **({"decided_by": actor, "decided_at": now} if attempt == 1 else {})}
    if not Recipient.objects.filter(pk=recipient.pk, state__in=[Recipient.State.OFFERED, Recipient.State.FAILED]) \
            .update(**values):
        recipient.refresh_from_db()
        raise errors.ShareConflict(errors.NOT_OFFERED.format(state=recipient.get_state_display().lower()))
    for name, value in values.items():  # what the row now holds, without reading it (and its relations) again
        setattr(recipient, name, value)
    if recipient.share_id:
        # A retry re-opens a share that failed because its only imports failed.
        Share.objects.filter(pk=recipient.share_id, state__in=[Share.State.READY, Share.State.FAILED],
                             export__state="completed").update(state=Share.State.IMPORTING, updated_at=now)
    action = "import.retried" if attempt > 1 else ("import.auto_accepted" if auto else "import.accepted")
    record(action=action, actor=actor, team=recipient.team, target=_share_target(recipient),
           details={"recipient": str(recipient.public_id), "account": recipient.target_account.label,
                    "image_name": recipient.image_name, "attempt": attempt})
    if enqueue:
        scheduling.enqueue("transfers.jobs.import_start_job", str(recipient.public_id),
                           job_id=f"import-start-{recipient.public_id}-{attempt}")


def _recipient_access(access: TeamAccess, recipient: Recipient) -> None:
    require(access, Capability.ACCEPT_SHARE, target=_share_target(recipient))


@transaction.atomic
def recipient_accept(*, access: TeamAccess, recipient: Recipient) -> Recipient:
    _recipient_access(access, recipient)
    import_begin(recipient=recipient, actor=access.user)
    return recipient


@transaction.atomic
def recipient_retry(*, access: TeamAccess, recipient: Recipient) -> Recipient:
    _recipient_access(access, recipient)
    if recipient.state != Recipient.State.FAILED:
        raise errors.ShareConflict(errors.NOT_RETRYABLE.format(state=recipient.get_state_display().lower()))
    export = recipient.share.export if recipient.share_id else None
    deadline = export.manifest_deadline if export is not None else recipient.link_expires_at
    if deadline is None or deadline <= timezone.now() or (export is not None and export.cleaned_at) or \
            (export is None and not recipient.link_sealed):
        # Past the deadline, or the files (or the pasted link) are gone: only a new export helps.
        when = f"{deadline:%Y-%m-%d %H:%M} UTC" if deadline else "an unknown date"
        raise errors.ShareError(errors.LINK_EXPIRED.format(when=when))
    import_begin(recipient=recipient, actor=access.user)
    return recipient


@transaction.atomic
def recipient_decline(*, access: TeamAccess, recipient: Recipient, reason: str) -> Recipient:
    _recipient_access(access, recipient)
    if "\x00" in reason:
        raise errors.ShareError(errors.TEXT_NUL)
    now = timezone.now()
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.OFFERED).update(
            state=Recipient.State.DECLINED, decline_reason=reason[:500], decided_by=access.user, decided_at=now,
            updated_at=now):
        recipient.refresh_from_db()
        raise errors.ShareConflict(errors.NOT_OFFERED.format(state=recipient.get_state_display().lower()))
    recipient.refresh_from_db()
    record(action="import.declined", actor=access.user, team=access.team, target=_share_target(recipient),
           details={"recipient": str(recipient.public_id), "reason": reason})
    share_refresh(share_id=recipient.share_id)
    return recipient


def _fail(recipient: Recipient, message: str, request_ids=()) -> None:
    now = timezone.now()
    with transaction.atomic():
        if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.IMPORTING).update(
                state=Recipient.State.FAILED, state_message=message[:500], next_poll_at=None, link_sealed="",
                completed_at=now, updated_at=now):
            return
        record(action="import.failed", outcome="failed", actor=None, team=recipient.team,
               target=_share_target(recipient), cloud_request_ids=list(request_ids),
               details={"recipient": str(recipient.public_id), "reason": message})
        share_refresh(share_id=recipient.share_id)
        from transfers import notifications

        notifications.later("import_ended", [recipient.pk])


def _file_location(recipient: Recipient) -> str:
    """The manifest URL for this import, made now: pre-signed with the source account's keys
    (never past the manifest's own deadline), or the pasted link opened from the vault."""
    if recipient.share_id:
        export = recipient.share.export
        creds = credentials_for(export.account, purpose="sign manifest link")
        link = outscale.presign_manifest(creds=creds, bucket=export.bucket, key=export.manifest_key,
                                         not_after=export.manifest_deadline)
        return link.url
    return open_pasted_link(recipient)


_STARTING = ("team", "target_account__team", "share__export__account__team")


def import_start(*, recipient_id) -> None:
    """CreateImage with FileLocation. Safe to run twice.

    Each attempt is counted before the cloud is called; every attempt after the first looks the
    deterministic image name up before creating (the answer to an earlier one may have been lost).
    """
    recipient = Recipient.objects.select_related(*_STARTING).filter(public_id=recipient_id).first()
    started = recipient and _start(recipient)
    if started:
        with transaction.atomic():
            _started(*started)


def _start(recipient: Recipient) -> tuple[Recipient, str, list] | None:
    """Count the attempt, then call the cloud: (recipient, image id, request ids) once it has
    an image, None if it is not this run's to start or the cloud said no (handled here)."""
    if recipient.state != Recipient.State.IMPORTING or recipient.image_id:
        return None
    tried = recipient.start_tries
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.IMPORTING, image_id="",
                                    start_tries=tried).update(start_tries=tried + 1):
        return None  # another run of this step got here first
    recipient.start_tries = tried + 1
    account = recipient.target_account
    description = (f"Copied by OMI Portal from {recipient.share.source_image_id}, share {recipient.share.public_id}"
                   if recipient.share_id else "Imported by OMI Portal from a link")
    with outscale.record_request_ids() as request_ids:
        try:
            creds = credentials_for(account, purpose="start import")
            found = tried and outscale.find_image_by_name(creds=creds, account_id=account.account_id,
                                                          name=recipient.image_name)
            image = found or outscale.import_image(creds=creds, file_location=_file_location(recipient),
                                      name=recipient.image_name, description=description)
        except outscale.CloudError as exc:
            if exc.retryable:
                # start_tries was counted when this attempt began
                polling.put_off_start(
                    recipient, exc, tries=recipient.start_tries, fail=_fail, job="transfers.jobs.import_start_job",
                    job_id=f"import-start-{recipient.public_id}-{recipient.attempt}-{recipient.start_tries}")
            else:
                _fail(recipient, exc.user_message, exc.request_ids)
            return None
    return recipient, image.image_id, list(request_ids)


def _started(recipient: Recipient, image_id: str, request_ids: list) -> None:
    """Note the import's image and book its first look (in the caller's transaction)."""
    now = timezone.now()
    interval = scheduling.sweep_min()
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.IMPORTING, image_id="").update(
            image_id=image_id, link_sealed="", poll_interval=interval,
            next_poll_at=now + timedelta(seconds=interval), updated_at=now):
        return
    account = recipient.target_account
    record(action="import.started", actor=None, team=recipient.team, target=_share_target(recipient),
           cloud_request_ids=request_ids,
           details={"recipient": str(recipient.public_id), "image_id": image_id,
                    "image_name": recipient.image_name, "account": account.label})
    scheduling.schedule_sweep("import", account.public_id, now + timedelta(seconds=interval))


def import_start_many(*, recipient_ids, source_account: CloudAccount) -> None:
    """The hand-off: start the imports an export of ``source_account`` just made possible, now.

    One queued job per import would leave a burst of hundreds waiting on a couple of workers
    while the manifest link ages. Each start is still ``_start`` (counted first, looked up when
    retried, safe twice), side by side; the rows are read in one query, and what the cloud
    answered is written in one transaction at the end. The sweep starts what it can within
    OMIPORTAL_SWEEP_BUDGET_SECONDS and leaves the rest to `import_handoff` jobs, so other sweeps
    are not held up. A start that dies before its image is noted is put back by the reconciler:
    its row is IMPORTING without an image, counted as tried, so it looks the name up first.
    """
    recipients = list(Recipient.objects.select_related(*_STARTING).filter(public_id__in=recipient_ids)
                      .order_by("pk"))
    started: list[tuple[Recipient, str, list]] = []
    left = polling.run_each(lambda recipient: started.append(_start(recipient)), recipients,
                            what="start import", budget=settings.OMIPORTAL_SWEEP_BUDGET_SECONDS)
    with recorder.batched():
        for result in started:
            if result:
                _started(*result)
    if left:
        _handoff_later(source_account)


def _handoff_later(source_account: CloudAccount) -> None:
    # The job's id names the moment, so a hand-off that is running can queue its own successor.
    # On the sweeps' queue: under load, `default` waits behind every sweep, and these cannot wait.
    scheduling.enqueue("transfers.jobs.import_handoff_job", str(source_account.public_id), queue="poll",
                       job_id=f"import-handoff-{source_account.public_id}-{time.time_ns()}")


def import_handoff(*, account_id) -> None:
    """Start the imports still waiting for the hand-off from the exports of one source account:
    auto-accepted recipients that are IMPORTING and have never been tried (the database says
    which), within the sweep budget again; whatever is left gets the next job."""
    account = CloudAccount.objects.filter(public_id=account_id).first()
    if account is None:
        return
    waiting = Recipient.objects.filter(share__export__account=account, state=Recipient.State.IMPORTING,
                                       image_id="", start_tries=0).order_by("pk").values_list("public_id", flat=True)
    ids = list(waiting)
    if ids:
        with opened_once():
            import_start_many(recipient_ids=ids, source_account=account)


WATCHED = (Recipient.State.IMPORTING,)
WATCHABLE = Q(image_id__gt="")


def import_sweep(*, account_id) -> None:
    """One ReadImages call for every in-flight import into one account."""
    account = CloudAccount.objects.select_related("team").filter(public_id=account_id).first()
    if account is None:
        return
    rows = polling.claim(Recipient, account=account, states=WATCHED, extra=WATCHABLE, now=timezone.now())
    if rows:
        with opened_once():
            _observe(account, rows)
    polling.schedule_next(Recipient, account, "import", WATCHED, WATCHABLE)


def _observe(account: CloudAccount, rows: list[Recipient]) -> None:
    try:
        creds = credentials_for(account, purpose="watch imports")
        images = outscale.read_images(creds=creds, account_id=account.account_id, image_ids=[r.image_id for r in rows])
    except outscale.CloudError as exc:
        if not exc.retryable:
            for recipient in rows:
                _fail(recipient, exc.user_message, exc.request_ids)
        else:
            polling.postpone(rows, exc.user_message)
        return
    available, waiting = [], defaultdict(list)  # waiting: next interval -> pks
    for recipient in rows:
        image = images.get(recipient.image_id)
        if image is None or image.state in ("failed", "deleted"):
            reason = (image.state_message if image else "") or "OUTSCALE could not import the image."
            _fail(recipient, reason, images.request_ids)
        elif image.state == "available":
            available.append(recipient)
        else:
            waiting[scheduling.next_interval(recipient.poll_interval)].append(recipient.pk)
    now = timezone.now()
    for interval, pks in waiting.items():  # imports started together back off together: one UPDATE
        Recipient.objects.filter(pk__in=pks, state=Recipient.State.IMPORTING).update(
            poll_interval=interval, next_poll_at=now + timedelta(seconds=interval), state_message="", updated_at=now)
    if not available:
        return
    # Each completion tags its OMI (one call each), side by side like the starts; then one
    # transaction records them all. A sweep that dies in between leaves them IMPORTING: the next
    # one tags them again (the same tags) and completes them.
    by_pk = Recipient.objects.select_related("share__source_account", "team").in_bulk([r.pk for r in available])
    tagged: list[tuple[Recipient, dict, list]] = []
    polling.run_each(lambda recipient: _tag(recipient, creds, tagged), list(by_pk.values()), what="tag import")
    with recorder.batched():
        done = [recipient for recipient, tags, request_ids in tagged
                if _complete(recipient, tags, [*images.request_ids, *request_ids])]
        shares_refresh(share_ids={recipient.share_id for recipient in done if recipient.share_id})
        from transfers import notifications

        notifications.later("import_ended", [recipient.pk for recipient in done])


def _tag(recipient: Recipient, creds, tagged: list) -> None:
    """Tag the new OMI with where it came from, and add it to ``tagged`` (unless the cloud asks
    us to come back later)."""
    tags = {"omiportal:recipient": str(recipient.public_id)}
    if recipient.share_id:
        share = recipient.share
        tags.update({"omiportal:share": str(share.public_id),
                     "omiportal:source-account": share.source_account.account_id,
                     "omiportal:source-image": share.source_image_id})
    with outscale.record_request_ids() as request_ids:
        try:
            outscale.tag_resources(creds=creds, resource_ids=[recipient.image_id], tags=tags)
        except outscale.CloudError as exc:
            if exc.retryable:
                polling.postpone([recipient], exc.user_message)
                return
            # The copy exists and works; a missing tag is worth a note, not a failure.
            tags = {"note": f"tagging failed: {exc.user_message}"}
    tagged.append((recipient, tags, list(request_ids)))  # list.append is atomic: threads share it


def _complete(recipient: Recipient, tags: dict, request_ids: list) -> bool:
    """IMPORTING → COMPLETED, in the caller's transaction (which then refreshes the shares);
    False if it was no longer importing."""
    now = timezone.now()
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.IMPORTING).update(
            state=Recipient.State.COMPLETED, completed_at=now, next_poll_at=None, state_message="", updated_at=now):
        return False
    record(action="import.completed", actor=None, team=recipient.team, target=_share_target(recipient),
           cloud_request_ids=request_ids,
           details={"recipient": str(recipient.public_id), "image_id": recipient.image_id, "tags": tags})
    return True
