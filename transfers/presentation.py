"""What the share pages show that is not a row as stored: a share's live progress, with its
durations in words. Views and the progress poll use it; the reads themselves stay in selectors."""

from datetime import datetime, timedelta

from django.utils import timezone

import outscale
from transfers import selectors
from transfers.models import Recipient, Share
from transfers.services import copy_facts


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))


def duration_text(seconds: int | None) -> str:
    """"2 h 05 min", "4 min 10 s", "12 s": short enough for a table cell (share-progress.js says the same)."""
    if seconds is None:
        return ""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def export_eta_seconds(export, now: datetime) -> int | None:
    """Remaining time, extrapolated from the progress made since the export started."""
    if export is None or export.state not in export.IN_FLIGHT or not export.progress:
        return None
    elapsed = (now - export.created_at).total_seconds()
    return max(0, int(elapsed * (100 - export.progress) / export.progress))


def share_progress(*, share: Share, recipients: list[Recipient]) -> dict:
    """States, progress and messages only: never a link, a key or a bucket path. ``recipients``:
    those the acting team sees (selectors.share_recipients_for_user, share_progress_for_user)."""
    now = timezone.now()
    export = share.export
    deadline = export.manifest_deadline if export else None
    return {
        "state": share.state,
        "state_label": share.get_state_display(),
        "message": share.state_message,
        "final": share.is_final,
        "export": None if export is None else {
            "state": export.state,
            "state_label": export.get_state_display(),
            "progress": export.progress,
            "message": export.state_message,
            "elapsed_seconds": _seconds(now - export.created_at),
            "eta_seconds": export_eta_seconds(export, now),
            "eta_text": duration_text(export_eta_seconds(export, now)),
        },
        "deadline": deadline.isoformat() if deadline else None,
        "deadline_seconds": _seconds(deadline - now) if deadline else None,
        "deadline_text": duration_text(_seconds(deadline - now)) if deadline else "",
        "recipients": [
            {
                "id": str(r.public_id),
                "state": r.state,
                "state_label": r.get_state_display(),
                "message": r.state_message,
                "image_id": r.image_id if r.state == Recipient.State.COMPLETED else "",
                "elapsed_text": duration_text(_seconds((r.completed_at or now) - r.started_at))
                if r.started_at else "",
            }
            for r in recipients
        ],
    }


def decision_panel(share: Share, *, history: list | None = None) -> dict:
    """What an approver weighs, for the panel on the share page and the approvals list
    (templates/transfers/_decision_facts.html): the source's size and licence classes as the request
    read them, the requester's licence confirmation, each recipient's method and why, the tags the
    copies carry, the Description they get, and how long such copies took here lately. ``history``:
    ``selectors.copy_history()``, read once for a whole list."""
    facts = share.source_facts or {}
    history = selectors.copy_history() if history is None else history
    size = facts.get("size_gib") if isinstance(facts.get("size_gib"), int) else None
    recipients = []
    for r in share.recipients.all():
        estimate = selectors.expected_duration(history, method=r.method, size_gib=size)
        recipients.append({
            "label": r.label, "method": r.get_method_display(), "reason": r.method_reason,
            "expected": f"about {duration_text(int(estimate.seconds))}" if estimate.seconds is not None else "",
            "history_count": estimate.count,
        })
    carried = copy_facts.carried_tags(share)
    return {
        "known": bool(facts),
        "size_gib": size,
        "snapshots": facts.get("snapshots"),
        "licences": [(code, outscale.licence_class(code)) for code in facts.get("product_codes", [])],
        "architecture": facts.get("architecture", ""),
        "boot_modes": facts.get("boot_modes", []),
        "root_device": " ".join(filter(None, (facts.get("root_device_type"), facts.get("root_device_name")))),
        "licence_confirmed_by": share.requested_by.display_name,
        "licence_confirmed_at": share.licence_confirmed_at,
        "recipients": recipients,
        "tags": sorted(carried.items()),
        "tags_left": sorted(set(facts.get("tags", {})) - set(carried)),
        "description": copy_facts.copy_description(share),
        "description_cut": copy_facts.description_is_cut(share.description),
        "history_days": selectors.HISTORY_DAYS,
    }
