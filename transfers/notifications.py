"""Emails about shares. Sent by a job after commit (`later`), so neither a web request nor a
sweep waits on the mail server; a mail failure never undoes a transfer."""

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable

from django.core.mail import send_mass_mail

from accounts.models import Membership, Role
from transfers import rules, scheduling
from transfers.models import Recipient, Share

logger = logging.getLogger(__name__)


def later(kind: str, object_ids: Iterable[int]) -> None:
    """Send the ``kind`` email about each of these shares (or, for ``import_ended``, recipients)
    from one job, once the current transaction commits. A sweep that completes hundreds of
    imports queues one job, not hundreds: queueing and running a job costs more than its email."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification {kind!r}")
    ids = sorted({int(pk) for pk in object_ids})
    if ids:
        scheduling.enqueue("transfers.jobs.notify_job", kind, ids, job_id=f"notify-{kind}-{uuid.uuid4().hex}",
                           queue=scheduling.BACKGROUND)


def send(kind: str, object_ids: Iterable[int]) -> None:
    """Send the ``kind`` emails about these objects: a few queries for the whole batch, one
    connection to the mail server. Objects gone since are skipped."""
    messages = KINDS[kind](sorted(object_ids))
    if not messages:
        return
    try:
        send_mass_mail([(f"[OMI Portal] {subject}", body, None, [to]) for subject, body, to in messages],
                       fail_silently=False)
    except Exception:  # noqa: BLE001 - mail trouble must not break the workflow; it is logged
        logger.exception("Could not send %d '%s' email(s)", len(messages), kind)


Message = tuple[str, str, str]  # subject, body, one address


def _emails(team_ids, roles) -> dict[int, list[str]]:
    """Active members with one of ``roles``, by team: one query for any number of teams."""
    by_team: dict[int, list[str]] = defaultdict(list)
    for team_id, email in Membership.objects.filter(team_id__in=set(team_ids), role__in=roles, user__is_active=True) \
            .values_list("team_id", "user__email"):
        by_team[team_id].append(email)
    return by_team


def _to_each(subject: str, body: str, recipients: Iterable[str]) -> list[Message]:
    return [(subject, body, to) for to in sorted(set(recipients))]


def _shares(ids) -> list[Share]:
    return list(Share.objects.select_related("source_account", "requested_by").filter(pk__in=ids).order_by("pk"))


def _describe(share: Share) -> str:
    source = f"{share.source_account.label} ({share.source_account.region})"
    return (f"Image: {share.source_image_name} ({share.source_image_id}) from {source}"
            f"\nCopy name: {share.copy_name}\nRequested by: {share.requested_by.email}\n")


def approval_needed(share_ids) -> list[Message]:
    """To the approvers who may decide: not the requester, nor anyone whose role the requester
    gave or who got it after the request (they would only meet a refusal)."""
    shares = _shares(share_ids)
    approvers: dict[int, list[Membership]] = defaultdict(list)
    for membership in Membership.objects.filter(team_id__in={s.team_id for s in shares},
                                                role__in=[Role.APPROVER, Role.ADMIN], user__is_active=True) \
            .select_related("user"):
        approvers[membership.team_id].append(membership)
    return [m for share in shares for m in _to_each(
        f"Approval needed: {share.copy_name}", _describe(share) + f"Reason: {share.reason}\n",
        [a.user.email for a in approvers[share.team_id]
         if rules.decision_refusal(membership=a, share=share) is None])]


def decision_made(share_ids) -> list[Message]:
    messages = []
    for share in _shares(share_ids):
        verdict = "approved" if share.state != Share.State.REJECTED else "rejected"
        messages += _to_each(f"Your share was {verdict}: {share.copy_name}",
                             _describe(share) + f"Comment: {share.decision_comment or '-'}\n",
                             [share.requested_by.email])
    return messages


def share_ready(share_ids) -> list[Message]:
    shares = _shares(share_ids)
    teams: dict[int, set[int]] = defaultdict(set)
    for share_id, team_id in Recipient.objects.filter(share__in=shares, kind=Recipient.Kind.TEAM) \
            .values_list("share_id", "team_id"):
        teams[share_id].add(team_id)
    members = _emails({t for ts in teams.values() for t in ts}, [Role.MEMBER, Role.APPROVER, Role.ADMIN])
    return [m for share in shares for m in _to_each(
        f"An image is ready for your team: {share.copy_name}",
        _describe(share) + "Accept it from your team's inbox in OMI Portal.\n",
        [e for team_id in teams[share.pk] for e in members[team_id]])]


def share_failed(share_ids) -> list[Message]:
    return [m for share in _shares(share_ids) for m in _to_each(
        f"Share failed: {share.copy_name}", _describe(share) + f"Reason: {share.state_message}\n",
        [share.requested_by.email])]


def import_ended(recipient_ids) -> list[Message]:
    messages = []
    for recipient in Recipient.objects.select_related(
            "share__source_account", "share__requested_by", "target_account", "decided_by") \
            .filter(pk__in=recipient_ids).order_by("pk"):
        outcome = "completed" if recipient.state == Recipient.State.COMPLETED else "failed"
        body = (f"Import into {recipient.target_account.label}: {outcome}.\nImage id: {recipient.image_id or '-'}\n"
                f"{recipient.state_message}\n")
        to = [recipient.decided_by.email] if recipient.decided_by_id else []
        if recipient.share_id:
            to.append(recipient.share.requested_by.email)
            body = _describe(recipient.share) + body
        messages += _to_each(f"Import {outcome}: {recipient.image_name}", body, to)
    return messages


KINDS = {"approval_needed": approval_needed, "decision_made": decision_made, "share_ready": share_ready,
         "share_failed": share_failed, "import_ended": import_ended}
