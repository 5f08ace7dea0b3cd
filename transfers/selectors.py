"""Reads of shares, exports and recipients. Every query starts from the acting team.

A share is visible to its source team and to every team it offers a copy to; anything else is a
404 (its existence is not leaked), recorded as a denied attempt like accounts.selectors does.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from django.db.models import Case, Count, Exists, F, IntegerField, OuterRef, Prefetch, Q, QuerySet, Value, When, Window
from django.db.models.functions import RowNumber, TruncWeek
from django.utils import timezone

from accounts.access import NotInTeam
from accounts.models import CloudAccount
from accounts.selectors import TeamAccess, cloud_account_directory
from audit.models import AuditEvent
from audit.recorder import AuditTarget
from transfers.models import LaunchGrant, Recipient, Share

CHART_WEEKS = 8
DASHBOARD_LIMIT = 8
TIMELINE_LIMIT = 50  # events per share on the audit event page; the rest is one link away


# --- Shares -----------------------------------------------------------------------------------------


def _shares() -> QuerySet:
    return Share.objects.select_related("team", "source_account", "requested_by", "decided_by", "export")


def _with_recipients(qs: QuerySet) -> QuerySet:
    return qs.prefetch_related(
        Prefetch("recipients", queryset=Recipient.objects.select_related("team", "target_account")))


def share_list_for_team(*, team, state: str = "") -> QuerySet:
    # Only the relations the list shows (its team is the page's, its decider is not shown): each
    # joined table adds its every column to a query Django compiles anew on every request.
    qs = _with_recipients(Share.objects.select_related("source_account", "requested_by", "export").filter(team=team))
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("-requested_at")


def _not_found(access: TeamAccess, public_id, kind: str) -> NotInTeam:
    return NotInTeam("Not found in this team.", user=access.user, team=access.team,
                     target=AuditTarget(kind, str(public_id), ""))


def seen_by(team) -> Q:
    """The shares ``team`` sees: its own and those it receives a copy of.

    EXISTS, not a join to recipients and DISTINCT: sorting every selected column to drop the
    duplicates took PostgreSQL 5 ms to plan on each share page and progress poll (0.2 ms to run)."""
    return Q(team=team) | Exists(Recipient.objects.filter(share=OuterRef("pk"), team=team))


def share_get_for_user(*, access: TeamAccess, public_id) -> Share:
    """The source team or a recipient team sees the share; everyone else gets a 404."""
    return _share_seen(access, public_id, _shares())


def _share_seen(access: TeamAccess, public_id, qs: QuerySet) -> Share:
    share = qs.filter(public_id=public_id).filter(seen_by(access.team)).first()
    if share is None:
        raise _not_found(access, public_id, "transfers.share")
    return share


def share_progress_for_user(*, access: TeamAccess, public_id) -> tuple[Share, list[Recipient]]:
    """What the live panel polls (presentation.share_progress), seen as share_get_for_user sees
    it: the share with its export, and the recipients the team sees, with nothing joined to them.
    The poll is the most frequent request there is (every few seconds on each open share page),
    and Django compiles each query anew: the requester, decider, team and accounts the share page
    joins would be hundreds of columns compiled per poll for nothing."""
    share = _share_seen(access, public_id, Share.objects.select_related("export"))
    return share, _visible_recipients(access, share, share.recipients.order_by("created_at"))


def share_get_for_source_team(*, access: TeamAccess, public_id) -> Share:
    """Only the team that asked for the copy acts on the share itself (approve, cancel, re-export, links)."""
    share = _shares().filter(public_id=public_id, team=access.team).first()
    if share is None:
        raise _not_found(access, public_id, "transfers.share")
    return share


def share_recipients_for_user(*, access: TeamAccess, share: Share) -> list[Recipient]:
    """The source team sees every recipient; a recipient team only its own rows."""
    return _visible_recipients(access, share, share.recipients.select_related("team", "target_account")
                               .order_by("created_at"))


def _visible_recipients(access: TeamAccess, share: Share, qs: QuerySet) -> list[Recipient]:
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


# --- Timeline ---------------------------------------------------------------------------------------------


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


def _first_with_total(qs: QuerySet) -> tuple[list, int]:
    """The first ``DASHBOARD_LIMIT`` rows of ``qs`` and how many it holds, in one query."""
    rows = list(qs.annotate(total=Window(Count("pk")))[:DASHBOARD_LIMIT])
    return rows, rows[0].total if rows else 0


def dashboard_for_team(*, access: TeamAccess) -> dict:
    """Each panel reads only what it shows: a few rows per query, counts alongside them."""
    team = access.team
    approvals, approvals_count = [], 0
    # Each panel joins only what it shows: the page's most frequent visitor pays for every column
    # of every joined table, compiled anew on each request (ORM time was most of the page's CPU).
    if access.can_approve:
        approvals, approvals_count = _first_with_total(
            Share.objects.select_related("requested_by").filter(team=team, state=Share.State.REQUESTED)
            .order_by("requested_at", "pk"))
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
    # In flight: the export's progress and each recipient's state (a mark per recipient).
    in_flight = Share.objects.select_related("export").filter(team=team, state__in=Share.ACTIVE_STATES) \
        .prefetch_related(Prefetch("recipients", queryset=Recipient.objects.only("pk", "share_id", "state"))) \
        .order_by("-requested_at", "-pk")
    recent = Share.objects.filter(team=team, state__in=Share.FINAL_STATES).order_by("-updated_at", "-pk")
    return {
        "approvals": approvals,
        "approvals_count": approvals_count,
        "offers": offers,
        "offers_count": offers[0].in_state if offers else 0,
        "in_flight": list(in_flight[:DASHBOARD_LIMIT]),
        "incoming_imports": importing,
        "recent": list(recent[:DASHBOARD_LIMIT]),
    }


# --- Expected duration, from the portal's own history ----------------------------------------------

HISTORY_DAYS = 90
HISTORY_ROWS = 2000  # the newest completed copies read: bounds the read; a page reads them once
# Methods whose copy comes through the share's export: the export's run is part of the copy's time.
_THROUGH_EXPORT = (Recipient.Method.EXPORT, Recipient.Method.OBJECT_ACL, Recipient.Method.LINK)


@dataclass(frozen=True)
class PastCopy:
    method: str
    size_gib: int | None  # the source's size at request time (None for a request from before source facts)
    seconds: float  # the cloud's work: the export's run (when the copy came through one), then the copy's


def copy_history(*, now: datetime | None = None) -> list[PastCopy]:
    """The copies completed in the last HISTORY_DAYS days across the portal, newest first, in one
    query. Only medians and counts of them reach a page (``expected_duration``), never a row of
    another team. Waiting for a person (an approver, an accepting member) is not counted."""
    now = now or timezone.now()
    rows = Recipient.objects.filter(
        state=Recipient.State.COMPLETED, share__isnull=False, started_at__isnull=False,
        completed_at__gte=now - timedelta(days=HISTORY_DAYS),
    ).order_by("-completed_at").values_list(
        "method", "share__source_facts__size_gib", "started_at", "completed_at",
        "share__export__created_at", "share__export__completed_at")[:HISTORY_ROWS]
    history = []
    for method, size, started, completed, export_created, export_completed in rows:
        seconds = (completed - started).total_seconds()
        if method in _THROUGH_EXPORT and export_created and export_completed:
            seconds += (export_completed - export_created).total_seconds()
        history.append(PastCopy(method=method, size_gib=size if isinstance(size, int) else None,
                                seconds=max(0.0, seconds)))
    return history


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # the median; None: no history yet
    count: int  # the copies it is the median of


def expected_duration(history: list[PastCopy], *, method: str, size_gib: int | None) -> Estimate:
    """The median time of past copies by ``method`` of a similar size (half to twice ``size_gib``;
    any size when the request recorded none)."""
    if size_gib is None:
        similar = [copy.seconds for copy in history if copy.method == method]
    else:
        low, high = size_gib / 2, max(size_gib, 1) * 2
        similar = [copy.seconds for copy in history if copy.method == method and copy.size_gib is not None
                   and low <= copy.size_gib <= high]
    return Estimate(seconds=median(similar) if similar else None, count=len(similar))


# --- Launch permissions (the source team's open grants) --------------------------------------------------


def _grants(team) -> QuerySet:
    copying = Recipient.objects.filter(share=OuterRef("share"), bound_account_id=OuterRef("grantee_account_id"),
                                       method__in=Recipient.GRANT_METHODS, state=Recipient.State.IMPORTING)
    return LaunchGrant.objects.filter(share__team=team).select_related("share__team", "account") \
        .annotate(copying=Exists(copying))


def launch_grants_open_for_team(*, team) -> QuerySet:
    """The launch permissions the team's accounts have given and not yet taken back, newest first;
    each says whether a copy by it is under way (``copying``, for rules.grant_revoke_refusal)."""
    return _grants(team).filter(state__in=LaunchGrant.OPEN_STATES).order_by("-created_at")


def launch_grant_get_for_source_team(*, access: TeamAccess, public_id) -> LaunchGrant:
    """One of the team's grants (to revoke it); another team's is not found."""
    grant = _grants(access.team).filter(public_id=public_id).first()
    if grant is None:
        raise _not_found(access, public_id, "transfers.launchgrant")
    return grant
