"""Reads of the inventory of copies. Every query starts from the team.

Two scopes:

- ``mine``: the copies in the team's own accounts (orphans included: they are in its accounts);
- ``outgoing``: the copies the team's shares made in every recipient team's accounts (only its
  own shares' recipients: never another team's orphans or copies from another team's shares).

"Behind" is computed here, for each copy's (family, account): the newest version the account still
holds (a copy neither deleted nor failed in the cloud) is older than the family's newest released
version (one shared). Pages are keyset-paginated newest first on (first_seen_at, id), which the
(team, -first_seen_at, -id) index serves; no OFFSET, no COUNT: a page costs the same at 10k copies.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Exists, Max, OuterRef, Q, QuerySet

from accounts.models import CloudAccount
from distribution.models import Family, FamilyVersion, InventoryCheck, InventoryEntry

PAGE_SIZE = 50
SCOPES = ("mine", "outgoing")
HELD = ~Q(cloud_state__in=[InventoryEntry.CloudState.DELETED, InventoryEntry.CloudState.FAILED])


@dataclass(frozen=True)
class Filters:
    scope: str = "mine"
    family: object = None  # a Family public id
    account: object = None  # a CloudAccount public id
    state: str = ""
    behind: bool | None = None
    orphan: bool | None = None


@dataclass(frozen=True)
class Page:
    rows: list
    next_cursor: str  # empty on the last page
    first: bool


def _scoped(team, scope: str) -> QuerySet:
    if scope == "outgoing":
        return InventoryEntry.objects.filter(recipient__share__team=team)
    return InventoryEntry.objects.filter(team=team)


def behind_pairs(*, team, scope: str) -> dict[tuple[int, int], tuple[int, int]]:
    """(family id, account id) -> (newest version held, newest released) for the pairs of the scope
    that are behind: two grouped queries, whatever the number of copies (a correlated subquery per
    copy costs a scan of its pair's copies each, minutes at 10k copies of one family in one account)."""
    held = _scoped(team, scope).filter(family__isnull=False, orphan=False).order_by().values(
        "family_id", "account_id").annotate(n=Max("version__number", filter=HELD))
    pairs = [(row["family_id"], row["account_id"], row["n"] or 0) for row in held]
    if not pairs:
        return {}
    released = dict(FamilyVersion.objects.filter(family_id__in={f for f, _, _ in pairs}, share__isnull=False)
                    .order_by().values("family_id").annotate(n=Max("number")).values_list("family_id", "n"))
    return {(f, a): (n, released[f]) for f, a, n in pairs if released.get(f) and n < released[f]}


def _behind_q(pairs) -> Q:
    by_family: dict[int, list[int]] = {}
    for family_id, account_id in pairs:
        by_family.setdefault(family_id, []).append(account_id)
    q = Q(pk__in=[])
    for family_id, accounts in by_family.items():
        q |= Q(family_id=family_id, account_id__in=accounts)
    return q


def inventory_for_team(*, team, filters: Filters, behind: dict | None = None) -> QuerySet:
    """The team's copies in ``filters.scope``, filtered, newest first. ``behind``: the scope's
    behind_pairs, read once by the caller when it shows them too."""
    qs = _scoped(team, filters.scope)
    if filters.family:
        qs = qs.filter(family__public_id=filters.family)
    if filters.account:
        qs = qs.filter(account__public_id=filters.account)
    if filters.state:
        qs = qs.filter(cloud_state=filters.state)
    if filters.orphan is not None:
        qs = qs.filter(orphan=filters.orphan)
    if filters.behind is not None:
        pairs = behind if behind is not None else behind_pairs(team=team, scope=filters.scope)
        qs = qs.filter(_behind_q(pairs)) if filters.behind else qs.exclude(_behind_q(pairs))
    return qs.order_by("-first_seen_at", "-id")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _cursor(entry) -> str:
    # Whole microseconds, exactly (a float timestamp loses the last digits): "<microseconds>_<id>".
    return f"{(entry.first_seen_at - EPOCH) // MICROSECOND}_{entry.pk}"


def parse_cursor(raw: str) -> tuple[datetime, int] | None:
    """A cursor from a next link, or None when it is not one (the first page is shown)."""
    try:
        micros, pk = (int(part) for part in raw.split("_", 1))
        return EPOCH + micros * MICROSECOND, pk
    except (ValueError, OverflowError):
        return None


def inventory_page(*, team, filters: Filters, cursor: str = "", size: int = PAGE_SIZE) -> Page:
    """One page of copies after ``cursor``, with what a row shows (``behind``, ``held_number``,
    ``released_number``): three queries."""
    behind = behind_pairs(team=team, scope=filters.scope)
    qs = inventory_for_team(team=team, filters=filters, behind=behind)
    after = parse_cursor(cursor) if cursor else None
    if after is not None and 0 < after[1] < 2**63:
        stamp, pk = after
        qs = qs.filter(Q(first_seen_at__lt=stamp) | Q(first_seen_at=stamp, id__lt=pk))
    rows = list(qs.select_related("account", "account__team", "family", "version", "recipient__share")[:size + 1])
    more = len(rows) > size
    rows = rows[:size]
    for row in rows:
        row.held_number, row.released_number = behind.get((row.family_id, row.account_id), (None, None))
        row.behind = row.released_number is not None
    return Page(rows=rows, next_cursor=_cursor(rows[-1]) if more else "", first=after is None)


def filter_choices(*, team, scope: str) -> dict:
    """The families and accounts the filters offer: two queries."""
    scoped = _scoped(team, scope)
    families = Family.objects.filter(Exists(scoped.filter(family=OuterRef("pk")))).select_related("team") \
        .order_by("name", "pk")
    accounts = CloudAccount.objects.filter(Exists(scoped.filter(account=OuterRef("pk")))) \
        .select_related("team").order_by("team__name", "label")
    return {"families": list(families), "accounts": list(accounts)}


CSV_COLUMNS = ("team", "account", "account_id", "region", "image_id", "image_name", "state", "pinned", "latest",
               "orphan", "behind", "family", "version", "source_image_id", "share", "first_seen_at", "last_seen_at",
               "checked_at")


def inventory_csv_rows(*, team, filters: Filters):
    """Every copy of the filters (no page), as tuples of ``CSV_COLUMNS``, read in chunks."""
    behind = behind_pairs(team=team, scope=filters.scope)
    rows = inventory_for_team(team=team, filters=filters, behind=behind).values_list(
        "account__team__name", "account__label", "account__account_id", "account__region", "image_id", "image_name",
        "cloud_state", "pinned", "is_latest", "orphan", "family_id", "account_id", "family__name", "version__number",
        "source_image_id", "recipient__share__public_id", "first_seen_at", "last_seen_at", "checked_at")
    for row in rows.iterator(chunk_size=2000):
        yield (*row[:10], (row[10], row[11]) in behind, *row[12:])


def checks_for_team(*, team) -> list:
    """When each of the team's accounts had its copies last confirmed, and why not if it failed: one query."""
    return list(InventoryCheck.objects.filter(account__team=team).select_related("account")
                .order_by("account__label"))
