"""Queries per API GET stay at or under 12 and do not grow with the rows (issue 17), as for the pages.

Every GET route under /api/v1/ is found in ``api.urls`` and must have a pin here: a new route
without one fails ``test_every_get_route_is_pinned``. The data are the page benchmark's
(``bench.fill``, as tests/test_page_queries.py): teams, people, accounts, shares with a recipient
each and a valid audit chain; then ten times the shares and ten times the events, and every
count must be unchanged.
"""

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, reverse

from api import urls as api_urls
from api.throttling import TokenRateThrottle
from audit.models import AuditChainHead, AuditEvent
from bench import fill
from distribution.models import Family, FamilyVersion, InventoryEntry
from tests.fixtures_api import ApiClient, make_token
from tests.fixtures_audit import AuditTamper
from transfers.models import Recipient, Share

MAX_QUERIES = 12
SMALL_EVENTS, SMALL_SHARES, GROWTH = 400, 200, 10

# GET routes not measured here, and why.
SKIPPED = {
    # Lists the account's images from OUTSCALE itself (ReadImages with the account's keys): its cost
    # is a cloud call, and its few queries (token, team, account) are the account detail's.
    "account-images": "needs the cloud",
}


@dataclass
class Probe:
    """One request to measure: a route, the person whose token asks, the query string."""

    route: str
    who: str = "admin"  # admin | auditor | compliance (an auditor-role token, no membership)
    query: dict | None = None
    label: str = ""
    follow: int = 0  # measure the page this many "next" links further

    @property
    def key(self) -> str:
        return self.label or (self.route if self.who == "admin" else f"{self.route}@{self.who}")


def _probes(head: int) -> list[Probe]:
    deep = max(2, head // 2)
    return [
        Probe("schema"), Probe("docs"),
        Probe("account-list"), Probe("account-detail"),
        Probe("share-list"), Probe("share-list", "auditor"), Probe("share-detail"), Probe("share-detail", "auditor"),
        Probe("share-list", query={"state": "failed"}, label="share-list state"),
        Probe("share-list", query={"page_size": 100}, label="share-list 100"),
        Probe("share-list", query={"page_size": 5}, follow=3, label="share-list fourth page"),
        Probe("incoming-list"), Probe("incoming-detail"),
        Probe("incoming-list", query={"state": "completed"}, label="incoming-list state"),
        Probe("incoming-list", query={"page_size": 100}, label="incoming-list 100"),
        Probe("incoming-list", query={"page_size": 2}, follow=2, label="incoming-list third page"),
        Probe("family-latest"), Probe("family-latest", "auditor"),
        Probe("audit-event-list"), Probe("audit-event-list", "auditor"), Probe("audit-event-list", "compliance"),
        Probe("audit-event-list", query={"before": deep}, label="audit-event-list deep"),
        Probe("audit-event-list", query={"page_size": 5}, follow=3, label="audit-event-list fourth page"),
        Probe("audit-event-list", query={"action": "share."}, label="audit-event-list action prefix"),
        Probe("audit-event-list", query={"outcome": "denied"}, label="audit-event-list denied"),
        Probe("audit-event-list", query={"q": "copy-"}, label="audit-event-list text"),
        Probe("audit-event-list", query={"actor": "pages-member"}, label="audit-event-list actor"),
        Probe("audit-event-detail"), Probe("audit-event-detail", "compliance"),
        Probe("audit-integrity"), Probe("audit-integrity", "compliance"),
    ]


@pytest.fixture(autouse=True)
def _own_throttle_counts(monkeypatch):
    # The per-token counts live in Redis under the token's pk, which a new test database hands out
    # again: counts left by an earlier run within the minute would throttle this one.
    monkeypatch.setattr(TokenRateThrottle, "cache_format", f"throttle-{uuid.uuid4().hex}-%(scope)s-%(ident)s")


def _api_get_routes() -> set[str]:
    """Every GET route under /api/v1/ in api.urls (DRF views and Django class-based views alike)."""
    names = set()
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern), f"{pattern}: walk included URL confs here too"
        view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        if str(pattern.pattern).startswith(api_urls.V1) and view is not None and hasattr(view, "get"):
            names.add(pattern.name)
    return names


def _quiet(line):
    pass


class Bench:
    """The bench world and one token per kind of reader, all in its biggest team."""

    def __init__(self, world: fill.World):
        self.world = world
        big = world.big
        people = world.members[big.pk]
        self.clients = {}
        for who, user, role in (("admin", people["admin"], None), ("auditor", people["auditor"], None),
                                ("compliance", world.compliance, "auditor")):
            token, raw = make_token(user, big, role=role, name=f"queries {who}")
            self.clients[who] = ApiClient(raw, token)
        self.ids = {
            "account_id": world.accounts[big.pk][0].public_id,
            "share_id": Share.objects.filter(team=big).order_by("-requested_at").values_list("public_id",
                                                                                             flat=True).first(),
            "recipient_id": Recipient.objects.filter(team=big).order_by("-created_at").values_list(
                "public_id", flat=True).first(),
            "event_id": AuditEvent.objects.filter(team_id=big.pk, target_type="transfers.share").order_by(
                "-seq").values_list("public_id", flat=True).first(),
            "family_id": _family_with_copies(world).public_id,
        }

    def url(self, route: str) -> str:
        pattern = next(p for p in api_urls.urlpatterns if p.name == route)
        kwargs = {name: self.ids[name] for name in pattern.pattern.converters}
        return reverse(f"api:{route}", kwargs=kwargs)

    def count(self, probe: Probe) -> int:
        client = self.clients[probe.who]
        url, query = self.url(probe.route), probe.query
        for _ in range(probe.follow):
            url, query = client.get(url, query).json()["next"], None
        assert client.get(url, query).status_code == 200, (probe.key, url)  # first use: last_used_at
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url, query)
        assert response.status_code == 200, (probe.key, response.content[:300])
        body = response.json() if response["Content-Type"].startswith("application/json") else None
        if isinstance(body, dict) and "results" in body:
            assert body["results"], f"{probe.key}: an empty page proves nothing"
        return len(captured)

    def counts(self) -> dict[str, int]:
        head = AuditChainHead.objects.get(pk=AuditChainHead.SINGLETON_ID).seq
        return {probe.key: self.count(probe) for probe in _probes(head)}

    def grow(self):
        """Ten times the shares (with their recipients) and ten times the audit events."""
        total = Share.objects.filter(team__in=self.world.teams).count()
        fill.fill_shares(self.world, total * GROWTH, log=_quiet)
        _append_events(self.world, AuditEvent.objects.count() * (GROWTH - 1))


def _family_with_copies(world: fill.World, accounts: int = 8) -> Family:
    """A family of the big team whose version's copies, made by its completed shares, hold the latest
    tag in several recipient accounts (the latest answer's rows)."""
    big = world.big
    family = Family.objects.create(team=big, source_account=world.accounts[big.pk][0], name="bench-golden",
                                   match=Family.Match.NAME, name_pattern="bench-golden-*",
                                   created_by=world.members[big.pk]["admin"])
    recipients = list(Recipient.objects.filter(share__team=big, state="completed").select_related("share")
                      .order_by("pk")[:accounts])
    for number, recipient in enumerate(recipients, start=1):
        made = FamilyVersion.objects.create(family=family, number=number, image_id=recipient.share.source_image_id,
                                            image_name=f"bench-golden-{number}", share=recipient.share,
                                            state=FamilyVersion.State.SHARED)
        InventoryEntry.objects.create(team_id=recipient.team_id, account_id=recipient.target_account_id,
                                      image_id=f"ami-{number:08x}", recipient=recipient, family=family, version=made,
                                      cloud_state="available", is_latest=True)
    return family


def _append_events(world: fill.World, count: int) -> None:
    """Events chained on from the current head, as ``recorder.record`` would chain them, in bulk."""
    head = AuditChainHead.objects.get(pk=AuditChainHead.SINGLETON_ID)
    now = datetime.now(UTC)
    maker = fill.EventMaker(world, start_seq=head.seq + 1, prev_hash=head.hash, start_at=now - timedelta(hours=1),
                            step=timedelta(milliseconds=1))
    rows = (maker.next() for _ in range(count))
    while batch := list(itertools.islice(rows, 2000)):
        AuditEvent.objects.bulk_create([AuditEvent(**row) for row in batch])
    # The head moves one step per event in the portal; the triggers refuse a jump, so lift them
    # for this one write (what a bulk fill of a live chain would need too).
    AuditTamper().set_head(seq=maker.seq - 1, hash=maker.prev_hash)


@pytest.fixture
def bench(db, settings, tmp_path):
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path)
    world, _ = fill.fill(events=SMALL_EVENTS, shares=SMALL_SHARES, log=_quiet)
    return Bench(world)


def test_every_get_route_is_pinned():
    pinned = {probe.route for probe in _probes(head=10)}
    assert _api_get_routes() - set(SKIPPED) == pinned


def test_every_get_stays_within_twelve_queries_and_does_not_grow_with_the_rows(bench):
    small = bench.counts()
    assert {key: n for key, n in small.items() if n > MAX_QUERIES} == {}
    events, shares = AuditEvent.objects.count(), Share.objects.count()

    bench.grow()
    assert AuditEvent.objects.count() >= events * GROWTH and Share.objects.count() >= shares * GROWTH
    large = bench.counts()
    assert large == small


def test_the_chain_is_still_whole_after_the_growth(bench):
    from audit.verify import verify_chain

    bench.grow()
    result = verify_chain()
    assert result.ok, result.describe()
