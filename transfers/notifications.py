"""Emails about shares. Sent by a job after commit (`later`), so neither a web request nor a
sweep waits on the mail server; a mail failure never undoes a transfer."""

import logging
import uuid
from collections.abc import Iterable

from django.core.mail import send_mass_mail

from accounts.models import Membership, Role
from transfers.models import Recipient, Share

logger = logging.getLogger(__name__)


def later(kind: str, object_ids: Iterable[int]) -> None:
    """Send the ``kind`` email about each of these shares (or, for ``import_ended``, recipients)
    from one job, once the current transaction commits. A sweep that completes hundreds of
    imports queues one job, not hundreds: queueing and running a job costs more than its email."""
    from transfers import scheduling

    if kind not in KINDS:
        raise ValueError(f"unknown notification {kind!r}")
    ids = sorted({int(pk) for pk in object_ids})
    if ids:
        scheduling.enqueue("transfers.jobs.notify_job", kind, ids, job_id=f"notify-{kind}-{uuid.uuid4().hex}")


def send(kind: str, object_ids: Iterable[int]) -> None:
    for object_id in object_ids:
        try:
            KINDS[kind](object_id)
        except Exception:  # noqa: BLE001 - one email's trouble must not cost the others theirs; it is logged
            logger.exception("Could not prepare the %s email for #%s", kind, object_id)


def _emails(team_id, roles) -> list[str]:
    return list(Membership.objects.filter(team_id=team_id, role__in=roles, user__is_active=True)
                .values_list("user__email", flat=True))


def _send(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted(set(recipients))
    if not recipients:
        return
    try:
        send_mass_mail([(f"[OMI Portal] {subject}", body, None, [to]) for to in recipients], fail_silently=False)
    except Exception:  # noqa: BLE001 - mail trouble must not break the workflow; it is logged
        logger.exception("Could not send '%s'", subject)


def _describe(share: Share) -> str:
    source = f"{share.source_account.label} ({share.source_account.region})"
    return (f"Image: {share.source_image_name} ({share.source_image_id}) from {source}"
            f"\nCopy name: {share.copy_name}\nRequested by: {share.requested_by.email}\n")


def approval_needed(share_id) -> None:
    share = Share.objects.select_related("source_account", "requested_by").get(pk=share_id)
    approvers = [e for e in _emails(share.team_id, [Role.APPROVER, Role.ADMIN]) if e != share.requested_by.email]
    _send(f"Approval needed: {share.copy_name}", _describe(share) + f"Reason: {share.reason}\n", approvers)


def decision_made(share_id) -> None:
    share = Share.objects.select_related("source_account", "requested_by").get(pk=share_id)
    verdict = "approved" if share.state != Share.State.REJECTED else "rejected"
    _send(f"Your share was {verdict}: {share.copy_name}",
          _describe(share) + f"Comment: {share.decision_comment or '-'}\n", [share.requested_by.email])


def share_ready(share_id) -> None:
    share = Share.objects.select_related("source_account", "requested_by").get(pk=share_id)
    teams = share.recipients.filter(kind=Recipient.Kind.TEAM).values_list("team_id", flat=True)
    to = [e for team_id in set(teams) for e in _emails(team_id, [Role.MEMBER, Role.APPROVER, Role.ADMIN])]
    _send(f"An image is ready for your team: {share.copy_name}",
          _describe(share) + "Accept it from your team's inbox in OMI Portal.\n", to)


def share_failed(share_id) -> None:
    share = Share.objects.select_related("source_account", "requested_by").get(pk=share_id)
    _send(f"Share failed: {share.copy_name}", _describe(share) + f"Reason: {share.state_message}\n",
          [share.requested_by.email])


def import_ended(recipient_id) -> None:
    recipient = Recipient.objects.select_related("share__source_account", "share__requested_by",
                                                 "target_account", "decided_by").get(pk=recipient_id)
    outcome = "completed" if recipient.state == Recipient.State.COMPLETED else "failed"
    body = (f"Import into {recipient.target_account.label}: {outcome}.\nImage id: {recipient.image_id or '-'}\n"
            f"{recipient.state_message}\n")
    to = [recipient.decided_by.email] if recipient.decided_by_id else []
    if recipient.share_id:
        to.append(recipient.share.requested_by.email)
        body = _describe(recipient.share) + body
    _send(f"Import {outcome}: {recipient.image_name}", body, to)





KINDS = {"approval_needed": approval_needed, "decision_made": decision_made, "share_ready": share_ready,
         "share_failed": share_failed, "import_ended": import_ended}
