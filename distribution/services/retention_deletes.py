"""Deleting the copies of a confirmed retention run, each exactly once.

Per account of the run, outside any long transaction:

1. claim: in one transaction, every proposed copy is checked again (pinned, latest, a launch
   permission open on it, a share of it under way: then it is kept, with the reason) and the others
   move proposed -> deleting by a conditional update that also writes the claim's lease
   (``claimed_at``). The partial unique constraint retentionitem_one_delete_per_copy refuses a
   second deleting item of the same copy, whatever the run. A deleting item whose lease ran out (its
   worker died between the claim and the call) or was let go (a throttled call) is taken back the
   same way, by whoever updates its ``claimed_at`` first.
2. look: one ReadImages of the claimed copies. A copy that is not there any more is ``gone`` (never
   deleted twice: an earlier attempt whose answer was lost may have deleted it; image ids are
   unique, so nothing else can be deleted in its place); one the cloud now tags pinned is kept.
3. delete: DeleteImage with the account's own keys, the lease renewed just before the call, then the
   item ends (deleted, gone on "no such image", failed on a refusal) by a conditional update on the
   lease it holds: a worker that lost its lease writes nothing. A throttled call lets the lease go
   and comes back later; an answer lost on the way (the cloud may have deleted it) is looked up at once.

Every end is one audit event with the cloud's RequestIds; the inventory row of a deleted or gone
copy is marked deleted. When no copy is left to do, the run is done.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from audit import recorder
from audit.recorder import record
from distribution.models import InventoryEntry, RetentionItem, RetentionPolicy, RetentionRun
from distribution.selectors import retention as selectors
from distribution.services.retention import enqueue_deletes, retention_propose
from transfers.services import polling

logger = logging.getLogger(__name__)

State = RetentionItem.State
ALREADY_GONE = "The image was no longer in the account: nothing was deleted."
LOST_ANSWER_GONE = "OUTSCALE's answer to DeleteImage was lost; the image is no longer in the account."
PINNED_SINCE = "Kept: the image was tagged omiportal:pinned in the cloud since the proposal."
OTHER_RUN = "Not deleted here: another retention run is deleting this copy."
WAITING = "Waiting for OUTSCALE: {reason}"
SWEEP_BATCH = 200  # rules looked at, and runs taken back, per reconciler tick


def lease_seconds() -> float:
    """How long a claim holds a copy: its two calls at the longest, plus the reconciler's grace."""
    return polling.start_call_seconds(calls=2) + float(settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)


def _free(now) -> Q:
    return Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - timedelta(seconds=lease_seconds()))


def retention_delete(*, run_id) -> None:
    """Delete what the confirmed run still has to delete (see the module's docstring). Safe to run
    twice, or twice at once: each copy is claimed by one run of it only."""
    run = RetentionRun.objects.select_related("policy__team", "policy__family").filter(public_id=run_id).first()
    if run is None or run.state != RetentionRun.State.CONFIRMED:
        return
    account_ids = set(RetentionItem.objects.filter(run=run).filter(
        Q(state=State.PROPOSED) | Q(_free(timezone.now()), state=State.DELETING)).values_list("entry__account_id",
                                                                                             flat=True))
    retry = False
    for account in CloudAccount.objects.filter(pk__in=account_ids).select_related("team").order_by("pk"):
        retry |= _delete_in_account(run, account)
    if retry:
        attempts = RetentionItem.objects.filter(run=run, state=State.DELETING).aggregate(n=Max("attempts"))["n"]
        delay = polling.start_retry_delay(int(attempts or 1))
        with transaction.atomic():
            enqueue_deletes(run, delay=delay, tag=f"-r{int(timezone.now().timestamp())}")
    run_finish(run)


def _claim(run: RetentionRun, account: CloudAccount) -> list[RetentionItem]:
    now = timezone.now()
    claimed: list[RetentionItem] = []
    with recorder.atomic():
        waiting = list(RetentionItem.objects.select_related("entry__account", "entry__version")
                       .filter(run=run, entry__account=account, state=State.PROPOSED))
        held = selectors.holds([item.entry for item in waiting], run=run)
        for item in waiting:
            if item.entry_id in held:
                _end(run, item, State.KEPT, (), held[item.entry_id], claim=None)
                continue
            try:
                with transaction.atomic():  # the constraint may refuse it: only this item's claim undone
                    moved = RetentionItem.objects.filter(pk=item.pk, state=State.PROPOSED).update(
                        state=State.DELETING, claimed_at=now, attempts=F("attempts") + 1)
            except IntegrityError:
                _end(run, item, State.FAILED, (), OTHER_RUN, claim=None)
                continue
            if moved:
                item.claimed_at = now
                claimed.append(item)
        for item in RetentionItem.objects.select_related("entry__account", "entry__version").filter(
                _free(now), run=run, entry__account=account, state=State.DELETING):
            if RetentionItem.objects.filter(pk=item.pk, state=State.DELETING, claimed_at=item.claimed_at).update(
                    claimed_at=now, attempts=F("attempts") + 1):
                item.claimed_at = now
                claimed.append(item)
    return claimed


def _delete_in_account(run: RetentionRun, account: CloudAccount) -> bool:
    """The account's share of the run; True when some copy must be tried again later."""
    mine = _claim(run, account)
    if not mine:
        return False
    try:
        creds = credentials_for(account, purpose="retention: delete copies")
        seen = outscale.read_images(creds=creds, account_id=account.account_id,
                                    image_ids=[item.entry.image_id for item in mine])
    except outscale.CloudError as exc:
        for item in mine:
            _after_error(run, item, exc)
        return any(exc.retryable for _ in mine)
    except Exception:  # noqa: BLE001 - keys that do not open (VaultError): each copy fails, with the reason
        logger.exception("Retention could not open the keys of account %s.", account.pk)
        for item in mine:
            _end(run, item, State.FAILED, (), "The account's keys could not be opened.", claim=item.claimed_at)
        return False
    retry = False
    for item in mine:
        image = seen.get(item.entry.image_id)
        if image is None or image.state == "deleted":
            _end(run, item, State.GONE, seen.request_ids, ALREADY_GONE, claim=item.claimed_at)
        elif any(key == selectors.PINNED_TAG for key, _ in image.facts.tags):
            InventoryEntry.objects.filter(pk=item.entry_id).update(pinned=True)
            _end(run, item, State.KEPT, seen.request_ids, PINNED_SINCE, claim=item.claimed_at)
        else:
            retry |= _delete_one(run, item, creds)
    return retry


def _delete_one(run: RetentionRun, item: RetentionItem, creds) -> bool:
    renewed = timezone.now()
    # The lease starts again right before the call: a long batch does not let the last ones lapse.
    if not RetentionItem.objects.filter(pk=item.pk, state=State.DELETING, claimed_at=item.claimed_at) \
            .update(claimed_at=renewed):
        return False  # taken back by another run after this one's lease ran out: it concludes
    item.claimed_at = renewed
    image_id = item.entry.image_id
    try:
        result = outscale.delete_image(creds=creds, image_id=image_id)
    except outscale.NotFound as exc:
        _end(run, item, State.GONE, exc.request_ids, ALREADY_GONE, claim=renewed)
        return False
    except outscale.RetryLater as exc:
        if not exc.may_have_run:
            return _after_error(run, item, exc)
        try:  # the cloud may have deleted it before the answer was lost: look before trying again
            seen = outscale.read_images(creds=creds, account_id=item.entry.account.account_id, image_ids=[image_id])
        except outscale.CloudError:
            return _after_error(run, item, exc)
        if image_id not in seen or seen[image_id].state == "deleted":
            _end(run, item, State.GONE, exc.request_ids + seen.request_ids, LOST_ANSWER_GONE, claim=renewed)
            return False
        return _after_error(run, item, exc)
    except outscale.CloudError as exc:
        return _after_error(run, item, exc)
    _end(run, item, State.DELETED, result.request_ids, "", claim=renewed)
    return False


def _after_error(run: RetentionRun, item: RetentionItem, exc: outscale.CloudError) -> bool:
    """A retryable error lets the lease go (the item stays deleting, taken back by the next run);
    any other ends the item failed with OUTSCALE's reason."""
    if exc.retryable:
        RetentionItem.objects.filter(pk=item.pk, state=State.DELETING, claimed_at=item.claimed_at).update(
            claimed_at=None, message=WAITING.format(reason=exc.user_message)[:500],
            cloud_request_ids=list(item.cloud_request_ids or []) + list(exc.request_ids))
        return True
    _end(run, item, State.FAILED, exc.request_ids, exc.user_message, claim=item.claimed_at)
    return False


def _end(run: RetentionRun, item: RetentionItem, state: str, request_ids, message: str, *, claim) -> None:
    """Write the item's end, and its event, only if it is still where this run left it."""
    now = timezone.now()
    ids = [rid for rid in list(item.cloud_request_ids or []) + list(request_ids) if rid]
    with recorder.atomic():
        mine = Q(state=State.PROPOSED) if claim is None else Q(state=State.DELETING, claimed_at=claim)
        if not RetentionItem.objects.filter(mine, pk=item.pk).update(
                state=state, message=message[:500], cloud_request_ids=ids, claimed_at=None,
                deleted_at=now if state in (State.DELETED, State.GONE) else None):
            return
        if state in (State.DELETED, State.GONE):
            InventoryEntry.objects.filter(pk=item.entry_id).update(
                cloud_state=InventoryEntry.CloudState.DELETED, is_latest=False, checked_at=now)
        entry = item.entry
        details = {"run": str(run.public_id), "family": run.policy.family.name,
                   "version": entry.version.number if entry.version_id else None, "image_id": entry.image_id,
                   "account_id": entry.account.account_id, "region": entry.account.region, "outcome": state}
        if message:
            details["message"] = message
        action = "retention.copy_kept" if state == State.KEPT else "retention.copy_deleted"
        record(action=action, actor=None, team=run.policy.team, target=entry,
               outcome="failed" if state == State.FAILED else "success", details=details, cloud_request_ids=ids)


def run_finish(run: RetentionRun) -> bool:
    """Close the run once none of its copies is left to do (one event with the counts)."""
    if RetentionItem.objects.filter(run=run, state__in=[State.PROPOSED, State.DELETING]).exists():
        return False
    with recorder.atomic():
        if not RetentionRun.objects.filter(pk=run.pk, state=RetentionRun.State.CONFIRMED).update(
                state=RetentionRun.State.DONE, finished_at=timezone.now()):
            return False
        counts = {state: 0 for state in (State.DELETED, State.GONE, State.KEPT, State.FAILED)}
        for state in RetentionItem.objects.filter(run=run).values_list("state", flat=True):
            counts[state] = counts.get(state, 0) + 1
        run.refresh_from_db()
        record(action="retention.completed", actor=None, team=run.policy.team, target=run,
               details={"family": run.policy.family.name, **counts})
    return True


def retention_sweep(*, now) -> int:
    """The reconciler's tick (registered in distribution/apps.py): propose for every rule with
    something to delete (a rule whose last run was cancelled waits for a new copy to propose), take
    back runs whose job was lost or whose copies' leases ran out, and close finished runs."""
    return _propose_due(now) + _resume(now)


def _propose_due(now) -> int:
    open_runs = RetentionRun.objects.filter(state__in=[RetentionRun.State.PROPOSED, RetentionRun.State.CONFIRMED])
    due = list(RetentionPolicy.objects.filter(Q(keep_last__isnull=False) | Q(delete_after_end_of_life=True))
               .exclude(pk__in=open_runs.values("policy_id")).order_by("pk").values_list("pk", flat=True))
    if len(due) > SWEEP_BATCH:  # a different slice each tick: every rule gets its turn
        tick = int(now.timestamp() // max(1.0, float(settings.OMIPORTAL_RECONCILE_EVERY_SECONDS)))
        start = tick * SWEEP_BATCH % len(due)
        due = (due[start:] + due[:start])[:SWEEP_BATCH]
    proposed = 0
    for policy in RetentionPolicy.objects.filter(pk__in=due).select_related("team", "family").order_by("pk"):
        last = RetentionRun.objects.filter(policy=policy).order_by("-proposed_at", "-pk").first()
        # A run someone cancelled (not one the rule's change cancelled) is not proposed again by the
        # sweep until another copy may go; "Propose now" still can.
        if last is not None and last.state == RetentionRun.State.CANCELLED and last.finished_at \
                and last.finished_at > policy.changed_at:
            refused = set(last.items.values_list("entry_id", flat=True))
            fresh = [c for c in selectors.retention_candidates(policy=policy) if not c.held]
            if {c.entry.pk for c in fresh} <= refused:
                continue
        if retention_propose(policy=policy) is not None:
            proposed += 1
    return proposed


def _resume(now) -> int:
    overdue = now - timedelta(seconds=float(settings.OMIPORTAL_RECONCILE_GRACE_SECONDS))
    lapsed = RetentionItem.objects.filter(_free(now), state=State.DELETING).values("run_id")
    unclaimed = RetentionItem.objects.filter(state=State.PROPOSED, run__confirmed_at__lt=overdue).values("run_id")
    resumed = 0
    runs = RetentionRun.objects.filter(state=RetentionRun.State.CONFIRMED).filter(
        Q(pk__in=lapsed) | Q(pk__in=unclaimed) | ~Q(items__state__in=[State.PROPOSED, State.DELETING]))
    for run in runs.select_related("policy__team", "policy__family").distinct()[:SWEEP_BATCH]:
        if run_finish(run):
            continue
        with transaction.atomic():
            enqueue_deletes(run, tag=f"-r{int(now.timestamp())}")
        logger.info("Retention run %s taken back by the reconciler.", run.public_id)
        resumed += 1
    return resumed
