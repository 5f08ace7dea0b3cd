"""Reads of shares, exports and recipients. Every query starts from the acting team.

A share is visible to its source team and to every team it offers a copy to; anything else is a
404 (its existence is not leaked), recorded as a denied attempt like accounts.selectors does.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Case, Count, F, IntegerField, Prefetch, Q, QuerySet, Value, When, Window
from django.db.models.functions import RowNumber, TruncWeek
from django.http import Http404
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from accounts.selectors import TeamAccess, cloud_account_directory, deny_access
from audit.models import AuditEvent
from audit.recorder import AuditTarget
from transfers.models import Recipient, Share

CHART_WEEKS = 8
DASHBOARD_LIMIT = 8
TIMELINE_LIMIT = 50  # events per share on the audit event page; the rest is one link away
IMAGES_UNAVAILABLE = "The image list of {label} could not be read from OUTSCALE: {reason}"


# --- Shares -----------------------------------------------------------------------------------------


def _shares() -> QuerySet:
    return Share.objects.select_related("team", "source_account", "requested_by", "decided_by", "export")


def _with_recipients(qs: QuerySet) -> QuerySet:
    return qs.prefetch_related(
        Prefetch("recipients", queryset=Recipient.objects.select_related("team", "target_account")))


def share_list_for_team(*, team, state: str = "") -> QuerySet:
    qs = _with_recipients(_shares().filter(team=team))
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("-requested_at")


def _not_found(access: TeamAccess, public_id, kind: str):
    deny_access(user=access.user, team=access.team, reason="not_found_in_team",
          target=AuditTarget(kind, str(public_id), ""))
    return Http404("Not found in this team.")


def share_get_for_user(*, access: TeamAccess, public_id) -> Share:
    """The source team or a recipient team sees the share; everyone else gets a 404."""
    share = _shares().filter(public_id=public_id).filter(
        Q(team=access.team) | Q(recipients__team=access.team)).distinct().first()
    if share is None:
        raise _not_found(access, public_id, "transfers.share")
    return share


def share_get_for_source_team(*, access: TeamAccess, public_id) -> Share:
    """Only the team that asked for the copy acts on the share itself (approve, cancel, re-export, links)."""
    share = _shares().filter(public_id=public_id, team=access.team).first()
    if share is None:
        raise _not_found(access, public_id, "transfers.share")
    return share


def share_recipients_for_user(*, access: TeamAccess, share: Share) -> list[Recipient]:
    """The source team sees every recipient; a recipient team only its own rows."""
    qs = share.recipients.select_related("team", "target_account").order_by("created_at")
    if share.team_id != access.team.pk:
        qs = qs.filter(team=access.team)
    return list(qs)


def recipient_get_for_team(*, access: TeamAccess, public_id) -> Recipient:
    """A recipient the acting team receives (accept, decline, retry)."""
    recipient = Recipient.objects.select_related("team", "target_account", "share__export", "share__team") \
        .filter(public_id=public_id, team=access.team, kind__in=[Recipient.Kind.TEAM, Recipient.Kind.LINK]).first()
    if recipient is None:
        raise _not_found(access, public_id, "transfers.recipient")
    return recipient


def recipient_get_for_share(*, access: TeamAccess, share: Share, public_id) -> Recipient:
    recipient = Recipient.objects.select_related("team", "target_account") \
        .filter(public_id=public_id, share=share).first()
    if recipient is None:
        raise _not_found(access, public_id, "transfers.recipient")
    return recipient


def approvals_for_team(*, team) -> QuerySet:
    """Requests waiting for a decision, oldest first (``share_team_state_requested`` serves it)."""
    return _with_recipients(_shares().filter(team=team, state=Share.State.REQUESTED)).order_by("requested_at", "pk")


INBOX_OFFERED, INBOX_RUNNING, INBOX_PAST = 0, 1, 2
_RUNNING = (Recipient.State.WAITING, Recipient.State.IMPORTING)


def inbox_for_team(*, team) -> QuerySet:
    """What the team receives, as one list to paginate: offers waiting for an answer (oldest first),
    then imports in progress (oldest first), then past ones (last updated first). ``section`` says
    which of the three each row belongs to."""
    section = Case(When(state=Recipient.State.OFFERED, then=Value(INBOX_OFFERED)),
                   When(state__in=_RUNNING, then=Value(INBOX_RUNNING)),
                   default=Value(INBOX_PAST), output_field=IntegerField())
    # Offers and running imports sort by creation; past ones only by their last update.
    created = Case(When(state__in=(Recipient.State.OFFERED, *_RUNNING), then=F("created_at")), default=None)
    return Recipient.objects.filter(team=team, kind__in=[Recipient.Kind.TEAM, Recipient.Kind.LINK]) \
        .select_related("target_account", "share__team", "share__source_account", "share__export") \
        .annotate(section=section, section_created=created) \
        .order_by("section", "section_created", "-updated_at", "-pk")


def inbox_sections(rows) -> dict:
    """One page of ``inbox_for_team`` split into its three sections, in order."""
    sections = {"offered": [], "running": [], "past": []}
    names = {INBOX_OFFERED: "offered", INBOX_RUNNING: "running", INBOX_PAST: "past"}
    for row in rows:
        sections[names[row.section]].append(row)
    return sections


# --- The share form's choices -------------------------------------------------------------------------


def source_accounts_for_team(*, team) -> QuerySet:
    return CloudAccount.objects.filter(team=team, validation_status=CloudAccount.Validation.VALID,
                                       retired_at__isnull=True).select_related("team").order_by("label")


def source_account_get_for_team(*, access: TeamAccess, public_id) -> CloudAccount:
    account = source_accounts_for_team(team=access.team).filter(public_id=public_id).first()
    if account is None:
        raise _not_found(access, public_id, "accounts.cloudaccount")
    return account


def recipient_choices_for_share(*, team, source: CloudAccount) -> list[CloudAccount]:
    """What a member may pick: the team's other validated accounts, then the other teams' directory."""
    own = list(source_accounts_for_team(team=team).exclude(pk=source.pk))
    return own + list(cloud_account_directory(exclude_team=team))


@dataclass
class ImageChoices:
    images: list = field(default_factory=list)
    error: str = ""


def shareable_images_for_account(*, account: CloudAccount) -> ImageChoices:
    """The account's live OMI list (owned, shared with it, public); a cloud error becomes a sentence."""
    try:
        creds = credentials_for(account, purpose="list images")
        images = outscale.list_shareable_images(creds=creds, account_id=account.account_id, include_public=True)
    except outscale.CloudError as exc:
        return ImageChoices(error=IMAGES_UNAVAILABLE.format(label=account.label, reason=exc.user_message))
    order = {"owned": 0, "shared": 1, "public": 2}
    return ImageChoices(images=sorted(images, key=lambda i: (order.get(str(i.relation), 3), i.name.lower())))


# --- Progress and timeline --------------------------------------------------------------------------------


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


def share_progress(*, access: TeamAccess, share: Share) -> dict:
    """States, progress and messages only: never a link, a key or a bucket path."""
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
            for r in share_recipients_for_user(access=access, share=share)
        ],
    }


def share_timeline(*, access: TeamAccess, share: Share) -> QuerySet:
    """The audit events about the share and its export. A recipient team sees the source team's
    events and its own, not those of other recipient teams."""
    about = Q(target_type="transfers.share", target_id=str(share.public_id))
    if share.export_id:
        about |= Q(target_type="transfers.export", target_id=str(share.export.public_id))
    qs = AuditEvent.objects.filter(about)
    if share.team_id != access.team.pk:
        qs = qs.filter(team_id__in=[share.team_id, access.team.pk])
    return qs.order_by("seq")


@dataclass
class Timeline:
    events: list
    more: bool  # older events exist beyond ``events``


def share_timeline_recent(*, access: TeamAccess, share: Share, limit: int | None = None) -> Timeline:
    """The newest ``limit`` events of ``share_timeline``, oldest first, and whether there are more.

    For pages that show a share beside something else (the audit event page): a share retried for
    months keeps a short timeline there, the full trail being one filtered link away.
    """
    limit = limit or TIMELINE_LIMIT
    rows = list(share_timeline(access=access, share=share).order_by("-seq")[: limit + 1])
    return Timeline(events=rows[:limit][::-1], more=len(rows) > limit)


# --- Dashboard --------------------------------------------------------------------------------------------


CHART_SERIES = (
    ("completed", "Completed", "#12805c"),
    ("failed", "Failed", "#b42318"),
    ("other", "Declined, expired or cancelled", "#98a2b3"),
)


def _week_start(moment: datetime) -> datetime:
    local = timezone.localtime(moment)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def copies_per_week(*, team, now: datetime | None = None) -> list[dict]:
    """Copies (recipient imports of the team's shares, and into the team's accounts) that ended in
    each of the last weeks, by outcome."""
    now = now or timezone.now()
    first = _week_start(now) - timedelta(weeks=CHART_WEEKS - 1)
    weeks = [{"start": first + timedelta(weeks=i), "completed": 0, "failed": 0, "other": 0}
             for i in range(CHART_WEEKS)]
    ended = Recipient.objects.filter(state__in=Recipient.FINAL_STATES, updated_at__gte=first)
    # Counted by the database, week by week (in the current time zone, like _week_start): two
    # parts with no row in common (an OR across the join to the share would scan every recipient).
    outgoing = ended.filter(share__team=team)
    incoming = ended.filter(team=team).exclude(share__team=team)
    per_week = [part.annotate(week=TruncWeek("updated_at")).values("week", "state").annotate(n=Count("pk"))
                .values_list("week", "state", "n").order_by() for part in (outgoing, incoming)]
    for week, state, n in per_week[0].union(per_week[1], all=True):
        index = (_week_start(week) - first).days // 7
        if 0 <= index < CHART_WEEKS:
            key = state if state in ("completed", "failed") else "other"
            weeks[index][key] += n
    return weeks


def weekly_chart(weeks: list[dict], *, width: int = 320, height: int = 120) -> dict:
    """Geometry of a stacked bar chart, drawn by the template as inline SVG (no script, no style)."""
    peak = max([sum(w[k] for k, _, _ in CHART_SERIES) for w in weeks] + [1])
    plot = height - 20
    slot = width / len(weeks)
    bars = []
    for i, week in enumerate(weeks):
        y = plot
        segments = []
        for key, label, colour in CHART_SERIES:
            h = round(plot * week[key] / peak, 1)
            if h:
                y -= h
                segments.append({"y": round(y, 1), "height": h, "fill": colour, "label": label, "count": week[key]})
        bars.append({"x": round(i * slot + slot * 0.15, 1), "width": round(slot * 0.7, 1), "segments": segments,
                     "label": week["start"].strftime("%d %b"), "text_x": round(i * slot + slot / 2, 1),
                     "total": sum(week[k] for k, _, _ in CHART_SERIES)})
    return {"width": width, "height": height, "baseline": plot, "label_y": height - 5, "bars": bars,
            "peak": peak, "series": CHART_SERIES, "empty": all(b["total"] == 0 for b in bars)}


def _first_with_total(qs: QuerySet) -> tuple[list, int]:
    """The first ``DASHBOARD_LIMIT`` rows of ``qs`` and how many it holds, in one query."""
    rows = list(qs.annotate(total=Window(Count("pk")))[:DASHBOARD_LIMIT])
    return rows, rows[0].total if rows else 0


def dashboard_for_team(*, access: TeamAccess) -> dict:
    """Each panel reads only what it shows: a few rows per query, counts alongside them."""
    team = access.team
    approvals, approvals_count = [], 0
    if access.can_approve:
        approvals, approvals_count = _first_with_total(
            _shares().filter(team=team, state=Share.State.REQUESTED).order_by("requested_at", "pk"))
    # Offers to answer and imports into the team's accounts, in one query: the first few of each
    # state (both lists are short, so numbering them is cheap) and how many each state holds.
    incoming = Recipient.objects.filter(team=team).filter(
        Q(state=Recipient.State.OFFERED, kind=Recipient.Kind.TEAM)
        | Q(state=Recipient.State.IMPORTING) & ~Q(share__team=team)) \
        .select_related("share__team", "share__export", "target_account") \
        .annotate(place=Window(RowNumber(), partition_by=[F("state")], order_by=[F("created_at"), F("pk")]),
                  in_state=Window(Count("pk"), partition_by=[F("state")])) \
        .filter(place__lte=DASHBOARD_LIMIT).order_by("state", "place")
    offers, importing = [], []
    for r in incoming:
        (offers if r.state == Recipient.State.OFFERED else importing).append(r)
    in_flight = _with_recipients(_shares().filter(team=team, state__in=Share.ACTIVE_STATES)) \
        .order_by("-requested_at", "-pk")
    recent = _shares().filter(team=team, state__in=Share.FINAL_STATES).order_by("-updated_at", "-pk")
    return {
        "approvals": approvals,
        "approvals_count": approvals_count,
        "offers": offers,
        "offers_count": offers[0].in_state if offers else 0,
        "in_flight": list(in_flight[:DASHBOARD_LIMIT]),
        "incoming_imports": importing,
        "recent": list(recent[:DASHBOARD_LIMIT]),
        "chart": weekly_chart(copies_per_week(team=team)),
    }
