"""What a webhook says: ids, states, new image ids, teams and times. Never a key, a link, a bucket
path or anything a person typed (reasons and comments stay in the portal).

Every body reads ``{"type", "timestamp", "data"}`` (the Standard Webhooks shape). Each team is told
what its own pages show: the source team sees every recipient of its share, a recipient team only
its own recipients.
"""

import json
from collections import defaultdict
from datetime import datetime

from transfers.events import RECIPIENT_EVENTS
from transfers.models import Recipient, Share

# Which teams hear of an event: the source team of every share event, the recipient teams of those
# that reach them (a share offered to them, expired, or its link about to expire).
TO_RECIPIENT_TEAMS = ("share.ready", "share.expired", "link.expiring")


def _when(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _team(team) -> dict | None:
    return {"id": str(team.public_id), "name": team.name} if team is not None else None


def _recipient(r: Recipient) -> dict:
    return {
        "id": str(r.public_id), "kind": r.kind, "team": _team(r.team),
        "account": str(r.target_account.public_id) if r.target_account_id else None,
        "account_id": r.target_account.account_id if r.target_account_id else r.external_account_id,
        "region": r.region if (r.target_account_id or r.external_region) else "",
        "method": r.method, "state": r.state, "state_label": r.get_state_display(),
        "state_message": r.state_message, "image_name": r.image_name, "image_id": r.image_id or None,
        "attempt": r.attempt, "completed_at": _when(r.completed_at),
    }


def _share(share: Share, recipients: list[Recipient]) -> dict:
    return {
        "id": str(share.public_id), "state": share.state, "state_label": share.get_state_display(),
        "team": _team(share.team),
        "source_account": {"id": str(share.source_account.public_id), "account_id": share.source_account.account_id,
                           "region": share.source_account.region},
        "image_id": share.source_image_id, "image_name": share.source_image_name, "copy_name": share.copy_name,
        "approval_required": share.approval_required, "requested_at": _when(share.requested_at),
        "decided_at": _when(share.decided_at), "updated_at": _when(share.updated_at),
        "manifest_valid_until": _when(share.export.manifest_deadline) if share.export_id else None,
        "recipients": [_recipient(r) for r in recipients],
    }


def subjects(kind: str, ids: list[int]) -> dict[int, dict]:
    """For each object of the event: its public id, the teams to tell and each team's data."""
    if kind in RECIPIENT_EVENTS:
        return _recipient_subjects(ids)
    shares = Share.objects.select_related("team", "source_account", "export").filter(pk__in=ids)
    by_share: dict[int, list[Recipient]] = defaultdict(list)
    for r in Recipient.objects.select_related("team", "target_account").filter(share__in=ids).order_by("pk"):
        by_share[r.share_id].append(r)
    out = {}
    for share in shares:
        recipients = by_share[share.pk]
        views = {share.team_id: {"share": _share(share, recipients)}}
        if kind in TO_RECIPIENT_TEAMS:
            for team_id in {r.team_id for r in recipients if r.team_id and r.team_id != share.team_id}:
                views[team_id] = {"share": _share(share, [r for r in recipients if r.team_id == team_id])}
        out[share.pk] = {"public_id": share.public_id, "views": views, "share": share}
    return out


def _recipient_subjects(ids: list[int]) -> dict[int, dict]:
    out = {}
    for r in Recipient.objects.select_related("team", "target_account", "share__team", "share__source_account",
                                              "share__export").filter(pk__in=ids):
        data = {"recipient": _recipient(r), "share": None}
        views = {}
        if r.share_id:
            share = r.share
            data["share"] = {"id": str(share.public_id), "state": share.state, "team": _team(share.team),
                             "image_id": share.source_image_id, "copy_name": share.copy_name}
            views[share.team_id] = data
        if r.team_id:
            views[r.team_id] = data
        out[r.pk] = {"public_id": r.public_id, "views": views, "recipient": r}
    return out


def body(*, kind: str, timestamp: datetime, data: dict) -> str:
    """The exact bytes sent (as text): compact, keys in a fixed order, so every attempt is the same."""
    return json.dumps({"type": kind, "timestamp": _when(timestamp), "data": data}, separators=(",", ":"),
                      sort_keys=True)
