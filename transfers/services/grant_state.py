"""Which launch grants are still needed, and the next step queued on them: below the services that
end recipients (share_state, import_offers) and start copies (import_starts), which call here; the
cloud calls are in grants.py and grant_releases.py.

A grant serves the recipients of its share whose bound OUTSCALE account is its grantee and whose
method needs one (Recipient.GRANT_METHODS). It is needed while any of them is open (waiting,
offered, copying), or for ever when it is kept ("launch permission only") until someone revokes it.
"""

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from transfers import scheduling
from transfers.models import LaunchGrant, Recipient


def _served_by(grant_ref) -> QuerySet:
    return Recipient.objects.filter(share=grant_ref("share"), bound_account_id=grant_ref("grantee_account_id"),
                                    method__in=Recipient.GRANT_METHODS)


def releasable() -> QuerySet:
    """Granted, not kept, and no recipient it serves still open: to be removed now."""
    still_open = _served_by(OuterRef).filter(state__in=Recipient.OPEN_STATES)
    return LaunchGrant.objects.filter(state=LaunchGrant.State.GRANTED, keep=False).exclude(Exists(still_open))


def release_later(share_public_id, *, delay: float = 0) -> None:
    """Queue the removal of a share's grants nothing needs any more, once the transaction commits.
    Each job has its own id: one already running may have read the recipients before this end."""
    scheduling.enqueue("transfers.jobs.grant_release_job", str(share_public_id), delay=delay,
                       job_id=f"grant-release-{share_public_id}-{time.time_ns()}", result_ttl=0)
    # The grants it is for note when its job should have run (as a start's next look does): the
    # reconciler takes a release for lost a grace after that, and only once the oldest job still
    # waiting went in after it (reconcile.py). Unmarked, every tick queued each grant's release
    # again while the first waited in a backed-up queue: 4,203 release jobs for 327 shares in the
    # two-host fault run. The mark stays within a start's horizon: the release's claim takes it.
    mark = timezone.now() + timedelta(seconds=delay + settings.OMIPORTAL_RECONCILE_GRACE_SECONDS)
    LaunchGrant.objects.filter(share__public_id=share_public_id, state=LaunchGrant.State.GRANTED, keep=False) \
        .update(next_poll_at=Greatest(Coalesce(F("next_poll_at"), mark), mark))


def grants_release_later(*, share_ids) -> None:
    """After recipients of these shares ended (in the caller's transaction): queue the removal of
    the grants that served them. One query for any number of shares."""
    ids = {share_id for share_id in share_ids if share_id is not None}
    if not ids:
        return
    for public_id in releasable().filter(share__in=ids).values_list("share__public_id", flat=True).distinct():
        release_later(public_id)


def copy_waits_for_grant(recipient: Recipient) -> bool:
    """A copy by launch permission starts only once its grant is in place (a retried copy whose
    grant was removed when it failed waits for the new one, which queues the start)."""
    if recipient.method != Recipient.Method.LAUNCH_PERMISSION or not recipient.share_id:
        return False
    return not LaunchGrant.objects.filter(share_id=recipient.share_id, grantee_account_id=recipient.bound_account_id,
                                          state=LaunchGrant.State.GRANTED).exists()


def grants_reopen(*, recipients: list[Recipient]) -> int:
    """Grant again to the copies by launch permission that start over (a person's retry) whose grant
    was removed or could not be made (in the caller's transaction): the grant's one row goes back
    to GRANTING by a conditional update and its job is queued. Returns how many reopened."""
    reopened = 0
    now = timezone.now()
    for recipient in recipients:
        if recipient.method != Recipient.Method.LAUNCH_PERMISSION or not recipient.share_id:
            continue
        moved = LaunchGrant.objects.filter(
            share_id=recipient.share_id, grantee_account_id=recipient.bound_account_id,
            state__in=[LaunchGrant.State.REVOKED, LaunchGrant.State.FAILED],
        ).update(state=LaunchGrant.State.GRANTING, attempts=0, step_errors=0, state_message="", revoked_at=None,
                 revoked_by=None, granted_at=None, updated_at=now,
                 next_poll_at=now + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS))
        if moved:
            add_later(recipient.share.public_id, tag=f"reopened-{time.time_ns()}")
        reopened += moved
    return reopened


def add_later(share_public_id, *, delay: float = 0, tag: str = "0") -> None:
    scheduling.enqueue("transfers.jobs.grant_add_job", str(share_public_id), delay=delay,
                       job_id=f"grant-add-{share_public_id}-{tag}")


def waiting_for_grant() -> QuerySet:
    """Copies by launch permission started over (IMPORTING, no image yet) whose grant is neither
    in place nor being made: the reconciler reopens it (a retry that met the removal halfway)."""
    in_place = LaunchGrant.objects.filter(
        share=OuterRef("share"), grantee_account_id=OuterRef("bound_account_id"),
        state__in=[LaunchGrant.State.GRANTING, LaunchGrant.State.GRANTED])
    return Recipient.objects.filter(Q(method=Recipient.Method.LAUNCH_PERMISSION), state=Recipient.State.IMPORTING,
                                    image_id="").exclude(Exists(in_place))
