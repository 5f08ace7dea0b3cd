"""What the export and import sweeps share: claiming due rows, scheduling the next look,
postponing after a throttled call, and spacing the retries of a create."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from accounts.models import CloudAccount
from transfers import scheduling
from transfers.models import Export

MAX_START_ATTEMPTS = 8
WAITING_PREFIX = "Waiting for OUTSCALE: "


def start_retry_delay(tries: int) -> float:
    """Seconds before the ``tries``-th new attempt at a create that OUTSCALE put off."""
    return min(scheduling.sweep_max(), scheduling.sweep_min() * 2 ** tries)


def start_deadline(delay: float):
    """When the reconciler should consider a put-off create lost and enqueue it again."""
    return timezone.now() + timedelta(seconds=delay + settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)


def put_off_start(row, exc, *, tries: int, fail, job: str, job_id: str) -> None:
    """OUTSCALE put a create off (throttled, unavailable): try again later, or give up after
    MAX_START_ATTEMPTS. ``tries`` counts attempts made so far; ``fail(row, message, request_ids)``
    ends the transfer."""
    if tries >= MAX_START_ATTEMPTS:
        fail(row, f"OUTSCALE stayed unavailable: {exc.user_message}", exc.request_ids)
        return
    delay = start_retry_delay(tries)
    with transaction.atomic():
        type(row).objects.filter(pk=row.pk).update(
            state_message=f"{WAITING_PREFIX}{exc.user_message}"[:500], next_poll_at=start_deadline(delay))
        scheduling.enqueue(job, str(row.public_id), job_id=job_id, delay=delay)


def claim(model, *, account: CloudAccount, states, extra: Q, now) -> list:
    """Take the due rows of one account for this sweep. A second sweep running at the same
    time finds nothing due and makes no cloud call."""
    lease = now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    due = model.objects.filter(extra, state__in=states, next_poll_at__lte=now)
    field = "account" if model is Export else "target_account"
    due = due.filter(**{field: account})
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
        model.objects.filter(pk__in=ids).update(next_poll_at=lease)
    return list(model.objects.filter(pk__in=ids))


def schedule_next(model, account: CloudAccount, kind: str, states, extra: Q) -> None:
    field = "account" if model is Export else "target_account"
    nxt = model.objects.filter(extra, state__in=states, **{field: account}).aggregate(n=Min("next_poll_at"))["n"]
    if nxt is not None:
        with transaction.atomic():
            scheduling.schedule_sweep(kind, account.public_id, max(nxt, timezone.now()))


def postpone(rows, message: str) -> None:
    for row in rows:
        interval = min(scheduling.sweep_max(), max(row.poll_interval, scheduling.sweep_min()) * 2)
        type(row).objects.filter(pk=row.pk).update(
            poll_interval=interval, next_poll_at=timezone.now() + timedelta(seconds=interval),
            state_message=f"{WAITING_PREFIX}{message}"[:500])


