"""Reads of the audit trail for the review pages and exports. Every query starts from a scope.

A team's trail is its own events (``team_id``); the site-wide trail is every event. Pages walk the
table newest first by ``seq`` with keyset cursors (``before``/``after``), never OFFSET or COUNT(*),
so a page costs the same on the millionth event as on the first.

What each filter costs (see ``AuditFilters``):

- team, action (exact), outcome, target type/id: equality on indexed columns (``audit_team_seq``,
  ``audit_action_seq``, ``audit_target``, ``audit_target_id_seq``), walked in ``seq`` order;
- action prefix (``share.``): ``LIKE 'share.%'``, served on PostgreSQL by ``audit_action_prefix``
  (``varchar_pattern_ops``) or by walking the primary key until a page is full;
- date range: ``occurred_at`` bounds (``audit_occurred_at``);
- actor and free text are "contains" searches no index serves, so they are **bounded**: one page
  request examines at most ``SCAN_WINDOW`` consecutive ``seq`` values below (or above) the cursor.
  When the window holds fewer matches than a page, the page says which events were searched and
  its "Older" link continues from the bottom of the window: nothing is skipped, and no request
  scans more than the window.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.http import Http404

from accounts.access import NotInTeam
from accounts.models import Team, User
from accounts.selectors import TeamAccess
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import AuditTarget
from transfers import selectors as transfer_selectors
from transfers.models import Share

PAGE_SIZE = 50
SCAN_WINDOW = 200_000
RELATED_SHARES_LIMIT = 3


@dataclass(frozen=True)
class AuditFilters:
    """What a reviewer asked for; every field optional. Built by ``forms.AuditFilterForm``."""

    team: Team | None = None  # site-wide pages only
    actor: str = ""  # contains, in the actor's email or name
    action: str = ""  # exact, or a prefix when it ends with "."
    outcome: str = ""
    target_type: str = ""
    target_id: str = ""
    date_from: date | None = None  # UTC days, both ends included
    date_to: date | None = None
    q: str = ""  # contains, in the target label, the actor's name or the action

    @property
    def bounded(self) -> bool:
        """Whether a "contains" search makes this a window-bounded scan."""
        return bool(self.actor or self.q)

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query-string values (for links and the audit.read event)."""
        values = {
            "team": str(self.team.public_id) if self.team else "",
            "actor": self.actor, "action": self.action, "outcome": self.outcome,
            "target_type": self.target_type, "target_id": self.target_id,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
            "q": self.q,
        }
        return {key: value for key, value in values.items() if value}


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _filtered(qs: QuerySet, filters: AuditFilters) -> QuerySet:
    if filters.team is not None:
        qs = qs.filter(team_id=filters.team.pk)
    if filters.actor:
        # Users are few: their ids come from the user table; actor_name also finds deleted users.
        users = User.objects.filter(Q(email__icontains=filters.actor) | Q(full_name__icontains=filters.actor))
        qs = qs.filter(Q(actor_id__in=users.values("pk")) | Q(actor_name__icontains=filters.actor))
    if filters.action:
        if filters.action.endswith("."):
            qs = qs.filter(action__startswith=filters.action)
        else:
            qs = qs.filter(action=filters.action)
    if filters.outcome:
        qs = qs.filter(outcome=filters.outcome)
    if filters.target_type:
        qs = qs.filter(target_type=filters.target_type)
    if filters.target_id:
        qs = qs.filter(target_id=filters.target_id)
    if filters.date_from:
        qs = qs.filter(occurred_at__gte=_day_start(filters.date_from))
    if filters.date_to and filters.date_to < date.max:  # the last day there is ends nothing
        qs = qs.filter(occurred_at__lt=_day_start(filters.date_to + timedelta(days=1)))
    if filters.q:
        qs = qs.filter(Q(target_label__icontains=filters.q) | Q(actor_name__icontains=filters.q)
                       | Q(action__icontains=filters.q))
    return qs


def event_list_for_team(*, team: Team, filters: AuditFilters) -> QuerySet:
    """A team's own events. ``filters.team`` is ignored: the scope is the team."""
    return _filtered(AuditEvent.objects.filter(team_id=team.pk), AuditFilters(**{**filters.__dict__, "team": None}))


def event_list_for_site(*, filters: AuditFilters) -> QuerySet:
    """Every team's events, and the site-wide ones (sign-ins, denied requests without a team)."""
    return _filtered(AuditEvent.objects.all(), filters)


def chain_head() -> tuple[int, str]:
    """``(seq, hash)`` of the newest event, ``(0, genesis)`` on an empty trail."""
    head = AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID).values_list("seq", "hash").first()
    return head if head is not None else (0, "0" * 64)


# --- Keyset pages -----------------------------------------------------------------------------------------


@dataclass
class EventPage:
    events: list = field(default_factory=list)
    older: int | None = None  # the "Older" link's ``before``
    newer: int | None = None  # the "Newer" link's ``after``
    searched: tuple[int, int] | None = None  # (lowest, highest) seq a bounded search looked at


def _older_page(qs: QuerySet, *, before: int | None, bounded: bool, size: int, window: int) -> EventPage:
    page = EventPage()
    if before is not None:
        qs = qs.filter(seq__lt=before)
        # A "Newer" link from a page reached through "Older" (new events may have arrived meanwhile).
        page.newer = before - 1
    lowest = None
    if bounded:
        top = before - 1 if before is not None else chain_head()[0]
        lowest = max(1, top - window + 1)
        qs = qs.filter(seq__gte=lowest, seq__lte=top)
        page.searched = (lowest, top)
    rows = list(qs.order_by("-seq")[: size + 1])
    if len(rows) > size:
        rows = rows[:size]
        page.older = rows[-1].seq
        page.searched = None
    elif lowest is not None and lowest > 1:
        page.older = lowest  # the window ran out before the page filled: continue below it
    else:
        page.searched = None  # everything down to the first event was searched
    page.events = rows
    if rows and page.newer is not None:
        page.newer = rows[0].seq
    return page


def _newer_page(qs: QuerySet, *, after: int, bounded: bool, size: int, window: int) -> EventPage:
    page = EventPage(older=after + 1)
    qs = qs.filter(seq__gt=after)
    highest = None
    if bounded:
        highest = after + window
        qs = qs.filter(seq__lte=highest)
        page.searched = (after + 1, highest)
    rows = list(qs.order_by("seq")[: size + 1])
    if len(rows) > size:
        rows = rows[:size]
        page.newer = rows[-1].seq
        page.searched = None
    elif highest is not None and highest < chain_head()[0]:
        page.newer = highest
    rows.reverse()
    page.events = rows
    if rows:
        page.older = rows[-1].seq
    return page


def event_page(qs: QuerySet, *, before: int | None = None, after: int | None = None, bounded: bool = False,
               size: int = PAGE_SIZE, window: int = SCAN_WINDOW) -> EventPage:
    """One page of ``qs``, newest first: the ``size`` events below ``before``, or above ``after``."""
    if after is not None:
        return _newer_page(qs, after=after, bounded=bounded, size=size, window=window)
    return _older_page(qs, before=before, bounded=bounded, size=size, window=window)


# --- One event ----------------------------------------------------------------------------------------------


def event_get_for_team(*, access: TeamAccess, public_id) -> AuditEvent:
    event = AuditEvent.objects.filter(public_id=public_id, team_id=access.team.pk).first()
    if event is None:
        raise NotInTeam("No such event in this team's audit trail.", user=access.user, team=access.team,
                        target=AuditTarget("audit.auditevent", str(public_id), ""))
    return event


def event_get_for_site(*, user: User, public_id) -> AuditEvent:
    # With its team: the page records its own read against that team.
    event = AuditEvent.objects.filter(public_id=public_id).select_related("team").first()
    if event is None:
        raise Http404("No such audit event.")
    return event


@dataclass(frozen=True)
class Change:
    field: str
    before: object
    after: object


def event_changes(event: AuditEvent) -> list[Change]:
    """``details.changes = {field: {before, after}}`` and top-level ``before``/``after``, as rows."""
    details = event.details if isinstance(event.details, dict) else {}
    rows = []
    changes = details.get("changes")
    if isinstance(changes, dict):
        for name, change in changes.items():
            if isinstance(change, dict) and ("before" in change or "after" in change):
                rows.append(Change(name, change.get("before"), change.get("after")))
    if "before" in details or "after" in details:
        before, after = details.get("before"), details.get("after")
        if isinstance(before, dict) or isinstance(after, dict):
            before, after = before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}
            rows.extend(Change(name, before.get(name), after.get(name)) for name in sorted({*before, *after}))
        else:
            rows.append(Change("value", before, after))
    return rows


def event_other_details(event: AuditEvent) -> list[tuple[str, object]]:
    """The details not shown as changes, as (key, value) rows."""
    details = event.details if isinstance(event.details, dict) else {"value": event.details}
    shown = {"before", "after"}
    if isinstance(details.get("changes"), dict):
        shown.add("changes")
    return [(key, value) for key, value in details.items() if key not in shown]


def related_shares(*, event: AuditEvent, team: Team | None) -> list:
    """The shares an event is about, that ``team`` may see (``None``: site-wide, every share)."""
    details = event.details if isinstance(event.details, dict) else {}
    about = Q(pk__in=[])
    if event.target_type == "transfers.share" and event.target_id:
        about |= Q(public_id=_uuid_or_none(event.target_id))
    if event.target_type == "transfers.export" and event.target_id:
        about |= Q(export__public_id=_uuid_or_none(event.target_id))
    for key, lookup in (("share", "public_id"), ("share_id", "public_id"), ("export", "export__public_id"),
                        ("export_id", "export__public_id")):
        value = details.get(key)
        if isinstance(value, str):
            about |= Q(**{lookup: _uuid_or_none(value)})
    qs = Share.objects.filter(about).select_related("team", "export")
    if team is not None:
        qs = qs.filter(transfer_selectors.seen_by(team))
    return list(qs.order_by("-requested_at")[:RELATED_SHARES_LIMIT])


def _uuid_or_none(value: str):
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
