"""Compliance review: the audit trail's pages and exports (AUD-13, AUD-14, AUD-15, AUD-16)."""

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models.expressions import RawSQL
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import services as account_services
from accounts.selectors import team_access_for_user
from audit import download_verify
from audit.download_format import DOWNLOAD_COLUMNS
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import AuditTarget, record
from review import downloads, selectors
from review.forms import ACTION_INVALID, BOTH_CURSORS, DATES_INVERTED
from tests import factories
from tests.test_authz import _share


def _event(team, action="share.approved", *, actor=None, outcome="success", target=None, details=None):
    return record(action=action, outcome=outcome, actor=actor, team=team, target=target, details=details)


def _list_url(team=None):
    return reverse("audit:event-list", kwargs={"team_id": team.public_id}) if team else reverse("audit:site-event-list")


def _detail_url(event, team=None):
    if team is None:
        return reverse("audit:site-event-detail", kwargs={"event_id": event.public_id})
    return reverse("audit:event-detail", kwargs={"team_id": team.public_id, "event_id": event.public_id})


def _export_url(team=None):
    return reverse("audit:event-download", kwargs={"team_id": team.public_id}) if team \
        else reverse("audit:site-event-download")


def _seqs(response):
    return [e.seq for e in response.context["page"].events]


def _body(response) -> str:
    return b"".join(response.streaming_content).decode("utf-8")


def _csv(text):
    first, _, rest = text.partition("\n")  # CRLF from Python, LF from PostgreSQL's COPY
    return first.removesuffix("\r"), list(csv.reader(io.StringIO(rest)))


@pytest.fixture
def trail(world):
    """A few events in each team and one site-wide."""
    alpha = [_event(world.alpha, "share.requested", actor=world.member),
             _event(world.alpha, "share.approved", actor=world.approver),
             _event(world.alpha, "cloud_account.created", actor=world.admin),
             _event(world.alpha, "access.denied", actor=world.member, outcome="denied")]
    beta = [_event(world.beta, "share.requested", actor=world.outsider)]
    site = [_event(None, "auth.logged_in", actor=world.admin)]
    return {"alpha": alpha, "beta": beta, "site": site}


# --- Who sees what -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["auditor", "admin", "compliance"])
def test_it_shows_the_team_its_own_trail(role, world, trail, login):
    response = login(getattr(world, role)).get(_list_url(world.alpha))
    assert response.status_code == 200
    seqs = set(_seqs(response))
    assert {e.seq for e in trail["alpha"]} <= seqs
    assert not seqs & {e.seq for e in trail["beta"] + trail["site"]}


@pytest.mark.parametrize("role", ["member", "approver"])
def test_it_refuses_members_without_the_audit_role(role, world, trail, login):
    response = login(getattr(world, role)).get(_list_url(world.alpha))
    assert response.status_code == 403
    assert AuditEvent.objects.filter(action="access.denied", outcome="denied", actor_id=getattr(world, role).pk,
                                     details__reason="missing_role").exists()


def test_it_hides_another_teams_trail(world, trail, login):
    response = login(world.outsider).get(_list_url(world.alpha))
    assert response.status_code == 404
    assert AuditEvent.objects.filter(action="access.denied", actor_id=world.outsider.pk,
                                     details__reason="not_a_member").exists()


def test_it_hides_another_teams_event_behind_the_own_team_url(world, trail, login):
    response = login(world.admin).get(_detail_url(trail["beta"][0], world.alpha))
    assert response.status_code == 404
    assert AuditEvent.objects.filter(action="access.denied", actor_id=world.admin.pk,
                                     details__reason="not_found_in_team").exists()


def test_it_shows_compliance_officers_every_team(world, trail, login):
    response = login(world.compliance).get(_list_url())
    assert response.status_code == 200
    assert {e.seq for e in trail["alpha"] + trail["beta"] + trail["site"]} <= set(_seqs(response))


@pytest.mark.parametrize("role", ["admin", "auditor", "member", "outsider"])
@pytest.mark.parametrize("url", ["list", "detail", "export"])
def test_it_refuses_the_site_wide_trail_to_everyone_else(role, url, world, trail, login):
    path = {"list": _list_url(), "detail": _detail_url(trail["alpha"][0]), "export": _export_url()}[url]
    user = getattr(world, role)
    response = login(user).get(path)
    assert response.status_code == 403
    assert AuditEvent.objects.filter(action="access.denied", outcome="denied", actor_id=user.pk,
                                     details__reason="not_compliance_officer").exists()


@pytest.mark.parametrize("path", ["list", "detail", "export", "team"])
def test_it_sends_anonymous_users_to_sign_in(path, world, trail):
    url = {"list": _list_url(), "detail": _detail_url(trail["alpha"][0]), "export": _export_url(),
           "team": _list_url(world.alpha)}[path]
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_has_no_page_that_changes_an_event(world, trail, login):
    client = login(world.compliance)
    for url in (_list_url(), _detail_url(trail["alpha"][0]), _export_url(), _list_url(world.alpha)):
        assert client.post(url).status_code == 405
        assert client.delete(url).status_code == 405


def test_it_links_the_audit_pages_for_those_who_may_see_them(world, login):
    dashboard = reverse("transfers:dashboard", kwargs={"team_id": world.alpha.public_id})
    assert _list_url(world.alpha) in login(world.auditor).get(dashboard).content.decode()
    assert _list_url(world.alpha) not in login(world.member).get(dashboard).content.decode()
    assert f'href="{_list_url()}"' not in login(world.admin).get(dashboard).content.decode()
    assert f'href="{_list_url()}"' in login(world.compliance).get(dashboard).content.decode()


# --- Filters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ({"action": "share.requested"}, ["a0", "b0"]),
    ({"action": "share."}, ["a0", "a1", "b0"]),
    ({"outcome": "denied"}, ["a3"]),
    ({"actor": "approver@alpha"}, ["a1"]),
    ({"actor": "ADMIN@"}, ["a2", "s0", "b0"]),
    ({"q": "cloud_acc"}, ["a2"]),
])
def test_it_filters_the_site_wide_trail(query, expected, world, trail, login):
    names = {f"{k[0]}{i}": e.seq for k in ("alpha", "beta", "site") for i, e in enumerate(trail[k])}
    response = login(world.compliance).get(_list_url(), query)
    assert response.status_code == 200
    assert sorted(_seqs(response)) == sorted(names[n] for n in expected)


def test_it_filters_by_team_on_the_site_wide_trail(world, trail, login):
    response = login(world.compliance).get(_list_url(), {"team": str(world.beta.public_id)})
    assert _seqs(response) == [trail["beta"][0].seq]


def test_it_filters_by_actor_name(world, trail, login):
    world.approver.full_name = "Ada Lovelace"
    world.approver.save()
    response = login(world.auditor).get(_list_url(world.alpha), {"actor": "lovelace"})
    assert _seqs(response) == [trail["alpha"][1].seq]


def test_it_filters_by_target(world, login):
    account = factories.make_cloud_account(world.alpha, label="prod")
    hit = _event(world.alpha, "cloud_account.validated", target=account)
    _event(world.alpha, "cloud_account.validated", target=AuditTarget("accounts.cloudaccount", "other", "x"))
    client = login(world.auditor)
    for query in ({"target_type": "accounts.cloudaccount", "target_id": str(account.public_id)},
                  {"target_id": str(account.public_id)}):
        assert _seqs(client.get(_list_url(world.alpha), query)) == [hit.seq]


def test_it_filters_by_utc_days(world, audit_tamper, login):
    events = [_event(world.alpha, "share.requested") for _ in range(3)]
    days = [datetime(2025, 3, 1, 23, 59, tzinfo=UTC), datetime(2025, 3, 2, 0, 0, tzinfo=UTC),
            datetime(2025, 3, 3, 12, 0, tzinfo=UTC)]
    for event, day in zip(events, days, strict=True):
        audit_tamper.update(event.seq, occurred_at=day)  # only the dates matter to this test
    client = login(world.auditor)
    assert _seqs(client.get(_list_url(world.alpha), {"date_from": "2025-03-02", "date_to": "2025-03-02"})) \
        == [events[1].seq]
    assert _seqs(client.get(_list_url(world.alpha), {"date_to": "2025-03-01"})) == [events[0].seq]
    assert _seqs(client.get(_list_url(world.alpha), {"date_from": "2025-03-03", "date_to": "2025-03-03"})) \
        == [events[2].seq]


@pytest.mark.parametrize(("query", "message"), [
    ({"date_from": "2025-03-02", "date_to": "2025-03-01"}, DATES_INVERTED),
    ({"action": "Share Approved"}, ACTION_INVALID),
    ({"date_from": "yesterday"}, "Enter a valid date."),
    ({"outcome": "maybe"}, "Select a valid choice."),
    ({"team": "not-a-uuid"}, "No such team."),
    ({"before": "abc"}, "Enter a whole number."),
    ({"before": "5", "after": "3"}, BOTH_CURSORS),
    ({"q": "x"}, "Search for at least"),
    ({"target_type": "share"}, "target type"),
])
def test_it_refuses_bad_filters_without_querying_events(query, message, world, trail, login):
    client = login(world.compliance)
    reads = AuditEvent.objects.filter(action="audit.read").count()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(_list_url(), query)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert response.context.get("page") is None
    assert not [q for q in queries.captured_queries
                if q["sql"].lstrip().upper().startswith("SELECT") and "audit_auditevent" in q["sql"]]
    assert AuditEvent.objects.filter(action="audit.read").count() == reads


def test_it_refuses_bad_filters_on_export_too(world, trail, login):
    client = login(world.compliance)
    assert client.get(_export_url(), {"format": "xlsx"}).status_code == 400
    assert client.get(_export_url(), {"date_from": "2025-03-02", "date_to": "2025-03-01"}).status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


# --- Keyset pagination -------------------------------------------------------------------------------------------


def _walk(client, url, query=None, *, between=None):
    """Follow "Older" from the newest page; return each page's seqs."""
    pages, params = [], dict(query or {})
    while True:
        response = client.get(url, params)
        assert response.status_code == 200
        pages.append(_seqs(response))
        if between:
            between()
        older = response.context["page"].older
        if older is None:
            return pages
        params = {**(query or {}), "before": older}


def test_it_pages_through_everything_once_while_events_are_appended(world, login):
    created = [_event(world.alpha, "share.requested").seq for _ in range(120)]
    client = login(world.auditor)
    query = {"action": "share.requested"}
    pages = _walk(client, _list_url(world.alpha), query,
                  between=lambda: _event(world.alpha, "share.requested"))  # newer events keep arriving
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [seq for page in pages for seq in page]
    assert seen == sorted(created, reverse=True)  # no duplicate, no gap, newest first


def test_it_pages_back_to_newer_events(world, login):
    for _ in range(110):
        _event(world.alpha, "share.requested")
    client, url, query = login(world.auditor), _list_url(world.alpha), {"action": "share.requested"}
    first = client.get(url, query).context["page"]
    second = client.get(url, {**query, "before": first.older}).context["page"]
    back = client.get(url, {**query, "after": second.newer}).context["page"]
    assert [e.seq for e in back.events] == [e.seq for e in first.events]
    assert back.older == first.older


def test_it_never_counts_or_offsets(world, login):
    for _ in range(60):
        _event(world.alpha, "share.requested")
    client = login(world.auditor)
    first = client.get(_list_url(world.alpha)).context["page"]
    for query in ({}, {"before": first.older}, {"after": first.older}, {"q": "share"}, {"actor": "alpha"}):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(_list_url(world.alpha), query).status_code == 200
        sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
        assert "COUNT(" not in sql
        assert "OFFSET" not in sql


def test_a_text_search_scans_a_bounded_window_and_continues_below_it(world):
    hits = [_event(world.alpha, "share.requested", target=AuditTarget("x.y", "1", "needle")).seq for _ in range(3)]
    for _ in range(25):
        _event(world.alpha, "share.approved")
    hits.append(_event(world.alpha, "share.requested", target=AuditTarget("x.y", "1", "needle")).seq)
    qs = selectors.event_list_for_team(team=world.alpha, filters=selectors.AuditFilters(q="needle"))
    found, before, pages = [], None, 0
    while True:
        page = selectors.event_page(qs, before=before, bounded=True, size=2, window=10)
        pages += 1
        found += [e.seq for e in page.events]
        if page.older is None:
            break
        assert page.searched is None or page.searched[1] - page.searched[0] < 10
        before = page.older
    assert found == sorted(hits, reverse=True)
    assert pages > 2


def _queries(client, url, query=None) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, query or {}).status_code == 200
    return len(queries.captured_queries)


@pytest.mark.parametrize("scope", ["site", "team"])
def test_list_page_query_count_does_not_grow_with_the_page(scope, world, login):
    # About a dozen: session, user, team and membership (team pages), the last verification, one
    # page of events, the team choices (site-wide), the audit.read event (savepoint, head lock,
    # insert, head update, release) and the switcher's memberships. None per row.
    client = login(world.compliance)
    url = _list_url(world.alpha if scope == "team" else None)
    _event(world.alpha, "share.requested", actor=world.member)
    client.get(url)  # the first visit to a team page also saves the session
    few = _queries(client, url)
    for _ in range(60):
        _event(world.alpha, "share.requested", actor=world.member)
    assert _queries(client, url) == few
    assert _queries(client, url, {"before": 40}) == few
    assert few <= 16


# --- One event -----------------------------------------------------------------------------------------------------


def test_it_shows_every_field_of_an_event(world, login):
    client = login(world.auditor)
    client.get(_list_url(world.alpha), HTTP_USER_AGENT="Reviewer/1.0")
    event = AuditEvent.objects.filter(action="audit.read").latest("seq")
    changed = _event(world.alpha, "cloud_account.changed", actor=world.admin,
                     target=AuditTarget("accounts.cloudaccount", "abc", "prod"),
                     details={"changes": {"label": {"before": "prod", "after": "production"}}, "keys_replaced": False})
    page = client.get(_detail_url(event, world.alpha)).content.decode()
    for text in (event.action, event.actor_name, event.team_name, event.request_id, "Reviewer/1.0",
                 str(event.seq), event.prev_hash, event.hash, str(event.public_id), "audit.trail"):
        assert text in page
    page = client.get(_detail_url(changed, world.alpha)).content.decode()
    assert "production" in page and "keys_replaced" in page
    assert page.index("prod") < page.index("production")


def test_it_shows_cloud_request_ids(world, login):
    event = record(action="export.completed", actor=None, team=world.alpha, cloud_request_ids=["req-0001"])
    assert "req-0001" in login(world.auditor).get(_detail_url(event, world.alpha)).content.decode()


def test_it_shows_the_timeline_of_the_share_an_event_is_about(world, login):
    account = factories.make_cloud_account(world.alpha, label="alpha-prod")
    share = _share(world.alpha, account, world.member)
    first = _event(world.alpha, "share.requested", actor=world.member, target=share)
    approved = _event(world.alpha, "share.approved", actor=world.approver, target=share)
    share_url = reverse("transfers:share-detail", kwargs={"team_id": world.alpha.public_id,
                                                          "share_id": share.public_id})
    for client, url in ((login(world.auditor), _detail_url(approved, world.alpha)),
                        (login(world.compliance), _detail_url(approved))):
        response = client.get(url)
        page = response.content.decode()
        assert share_url in page
        timeline = response.context["shares"][0]["timeline"]
        assert [e.seq for e in timeline.events] == [first.seq, approved.seq] and not timeline.more
        assert "Every event about the share" not in page


def test_a_long_share_timeline_is_capped_with_a_link_to_the_filtered_trail(world, login, monkeypatch):
    from transfers import selectors as transfer_selectors

    monkeypatch.setattr(transfer_selectors, "TIMELINE_LIMIT", 3)
    account = factories.make_cloud_account(world.alpha, label="alpha-prod")
    share = _share(world.alpha, account, world.member)
    events = [_event(world.alpha, "share.requested", actor=world.member, target=share) for _ in range(5)]
    response = login(world.auditor).get(_detail_url(events[-1], world.alpha))
    timeline = response.context["shares"][0]["timeline"]
    assert [e.seq for e in timeline.events] == [e.seq for e in events[-3:]] and timeline.more
    trail = _list_url(world.alpha) + f"?target_type=transfers.share&amp;target_id={share.public_id}"
    assert trail in response.content.decode()


def test_it_renders_user_controlled_text_safely(world, login):
    """AUD-16: newlines, carriage returns, ANSI escapes and markup stay visible text."""
    evil = "ok\nFAKE 2025-01-01 share.approved\r\x1b[31mred\u202e<script>alert(1)</script>"
    world.member.full_name = "Mallory\n<script>alert(2)</script>"
    world.member.save()
    event = _event(world.alpha, "share.requested", actor=world.member,
                   target=AuditTarget("transfers.share", "x", evil), details={"note": evil, "changes": {
                       "label": {"before": evil, "after": "<b>bold</b>"}}})
    client = login(world.auditor)
    for url in (_detail_url(event, world.alpha), _list_url(world.alpha)):
        page = client.get(url, HTTP_USER_AGENT="ua\x1b[2J<script>alert(3)</script>").content.decode()
        assert "<script>alert" not in page
        assert "<b>bold" not in page
        assert "\x1b" not in page and "\u202e" not in page and "\r" not in page
        assert "ok\\nFAKE" in page
        assert "\\x1b[31m" in page
        assert "&lt;script&gt;alert(1)" in page
    read = AuditEvent.objects.filter(action="audit.read").latest("seq")
    page = client.get(_detail_url(read, world.alpha)).content.decode()
    assert "<script>alert(3)" not in page and "&lt;script&gt;alert(3)" in page


# --- Exports ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "'quoted", "plain"])
def test_escape_cell_is_undone_by_unescape_cell(value):
    escaped = downloads.escape_cell(value)
    assert not escaped.startswith(downloads.FORMULA_PREFIXES)
    assert downloads.unescape_cell(escaped) == value


def test_the_csv_export_parses_back_to_the_filtered_events(world, trail, login):
    formula = _event(world.alpha, "share.requested", target=AuditTarget("x.y", "=1+1", "=cmd|' /C calc'!A0"))
    response = login(world.auditor).get(_export_url(world.alpha), {"format": "csv", "action": "share."})
    assert isinstance(response, StreamingHttpResponse)
    assert response["Cache-Control"] == "no-store"
    head = AuditEvent.objects.filter(action="audit.exported").latest("seq").details["head_seq"]
    assert response["Content-Disposition"] == f'attachment; filename="audit-alpha-{head}.csv"'
    first, rows = _csv(_body(response))
    head_row = AuditChainHead.objects.get()
    assert json.loads(first.removeprefix("# ")) == {"chain_head": {"seq": head, "hash": AuditEvent.objects.get(
        seq=head).hash}}
    assert head_row.seq >= head
    assert tuple(rows[0]) == DOWNLOAD_COLUMNS
    expected = list(selectors.event_list_for_team(team=world.alpha, filters=selectors.AuditFilters(action="share."))
                    .filter(seq__lte=head).order_by("seq"))
    data = [dict(zip(DOWNLOAD_COLUMNS, [downloads.unescape_cell(c) for c in row], strict=True)) for row in rows[1:]]
    assert [int(r["seq"]) for r in data] == [e.seq for e in expected]
    assert [r["hash"] for r in data] == [e.hash for e in expected]
    raw = dict(zip(DOWNLOAD_COLUMNS, rows[[r[0] for r in rows].index(str(formula.seq))], strict=True))
    assert raw["target_label"] == "'=cmd|' /C calc'!A0"
    assert raw["target_id"] == "'=1+1"


def test_the_jsonl_export_parses_back_and_is_cut_at_the_head(world, trail, login):
    response = login(world.compliance).get(_export_url(), {"format": "jsonl"})
    assert response["Content-Type"].startswith("application/x-ndjson")
    late = _event(world.alpha, "share.requested")  # appended after the export started
    lines = _body(response).splitlines()
    head = json.loads(lines[0])["chain_head"]
    assert late.seq > head["seq"]
    rows = [json.loads(line) for line in lines[1:]]
    assert [r["seq"] for r in rows] == list(range(1, head["seq"] + 1))
    assert rows[-1]["hash"] == head["hash"]
    assert all(tuple(r) == DOWNLOAD_COLUMNS for r in rows)
    assert response["Content-Disposition"] == f'attachment; filename="audit-all-{head["seq"]}.jsonl"'


def test_exports_and_reads_are_recorded(world, trail, login):
    client = login(world.compliance)
    client.get(_list_url(), {"action": "share.", "before": "999"})
    read = AuditEvent.objects.filter(action="audit.read").latest("seq")
    assert read.actor_id == world.compliance.pk
    assert read.details == {"view": "list", "filters": {"action": "share."}, "cursor": {"before": 999}}
    client.get(_detail_url(trail["alpha"][0]))
    read = AuditEvent.objects.filter(action="audit.read").latest("seq")
    assert read.details == {"view": "event", "seq": trail["alpha"][0].seq}
    assert read.team_id == world.alpha.pk
    response = client.get(_export_url(), {"format": "csv", "team": str(world.beta.public_id)})
    exported = AuditEvent.objects.filter(action="audit.exported").latest("seq")
    assert exported.details == {"format": "csv", "filters": {"team": str(world.beta.public_id)},
                                "head_seq": exported.seq - 1}
    assert exported.team_id == world.beta.pk
    assert response["Content-Disposition"].endswith(f'audit-beta-{exported.seq - 1}.csv"')


def test_a_filter_that_looks_like_a_secret_is_withheld_from_the_read_event(world, login):
    login(world.compliance).get(_list_url(), {"q": "X-Amz-Signature=abc"})
    read = AuditEvent.objects.filter(action="audit.read").latest("seq")
    assert read.details["filters"]["q"].startswith("(withheld")


def test_a_large_export_streams_in_chunks(world, login, monkeypatch, django_assert_max_num_queries):
    for _ in range(5000):
        _event(world.alpha, "share.requested")
    chunk_sizes = []
    real_iterator = type(AuditEvent.objects.all()).iterator

    def spy(self, chunk_size=None):
        chunk_sizes.append(chunk_size)
        return real_iterator(self, chunk_size=chunk_size)

    monkeypatch.setattr(type(AuditEvent.objects.all().values()), "iterator", spy)
    response = login(world.auditor).get(_export_url(world.alpha), {"format": "jsonl"})
    assert isinstance(response, StreamingHttpResponse)
    assert chunk_sizes == [downloads.CHUNK_SIZE]
    stream = iter(response.streaming_content)
    assert json.loads(next(stream))["chain_head"]
    with django_assert_max_num_queries(3):  # the rows arrive in chunks from one query, not one per row
        blocks = [chunk.count(b"\n") for chunk in stream]
    assert sum(blocks) >= 5000 and max(blocks) == downloads.CHUNK_SIZE  # a block of lines per chunk


def test_no_secret_reaches_an_export(world, login):
    """AUD-15 canary: a cloud account created through the service leaves no key in any export."""
    access = team_access_for_user(user=world.admin, team_public_id=world.alpha.public_id)
    canary_secret = "CanarySecret/" + "q" * 27
    canary_key = "AKIACANARY0000000042"
    account = account_services.cloud_account_create(
        access=access, label="canary", region="eu-west-2", access_key=canary_key, secret_key=canary_secret,
        export_bucket="exports")
    account_services.cloud_account_update(access=access, account=account, access_key=canary_key + "X",
                                          secret_key=canary_secret + "X", label="canary-2")
    client = login(world.compliance)
    for url in (_export_url(), _export_url(world.alpha)):
        for fmt in ("csv", "jsonl"):
            body = _body(client.get(url, {"format": fmt}))
            assert "canary-2" in body
            assert canary_secret not in body and "CanarySecret" not in body
            assert canary_key not in body


def test_an_export_of_nothing_still_names_the_head(world, login):
    response = login(world.auditor).get(_export_url(world.alpha), {"format": "csv", "action": "nothing.happened"})
    first, rows = _csv(_body(response))
    assert first.startswith("# ")
    assert rows == [list(DOWNLOAD_COLUMNS)]


def test_the_integrity_badge_says_when_the_chain_was_never_verified(world, login):
    page = login(world.auditor).get(_list_url(world.alpha)).content.decode()
    assert "Never verified" in page and "python manage.py audit_verify" in page


def test_the_integrity_badge_shows_the_last_verification(world, trail, login):
    from audit.integrity import run_verification

    run_verification()
    page = login(world.compliance).get(_list_url()).content.decode()
    assert "Chain verified" in page


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_passes_audit_verify_export(fmt, world, trail, login, tmp_path):
    """The pages write what the checkpoint work's verifier reads (download_format is shared)."""
    from audit.download_verify import verify_download

    path = tmp_path / f"audit.{fmt}"
    path.write_bytes(_body(login(world.compliance).get(_export_url(), {"format": fmt})).encode())
    result = verify_download(path)
    assert result.ok, result.message
    assert result.rows == AuditEvent.objects.filter(action="audit.exported").latest("seq").seq - 1


def test_a_csv_export_with_formula_like_cells_passes_audit_verify_export(world, login, tmp_path):
    from audit.download_verify import verify_download

    _event(world.alpha, "share.requested", target=AuditTarget("x.y", "1", "=SUM(A1)"))
    path = tmp_path / "audit.csv"
    path.write_bytes(_body(login(world.compliance).get(_export_url(), {"format": "csv"})).encode())
    assert verify_download(path).ok


def test_the_chunked_csv_cells_match_the_format_functions_cell_for_cell(world):
    """The export's fast path writes exactly escape_cell(csv_cells(event_row(values)))."""
    from audit import download_format

    for label, details, ids in (("=SUM(A1)", {"b": 1, "a": ["x", None, True]}, ["req-1"]),
                                ("+1", -5, []), ("plain", None, None), ("'quoted", "text", ["@x"]),
                                ("\tTab\r\nnewline", {"é": "ü", "n": {"deep": [1, 2]}}, ["-a", "b"])):
        _event(world.alpha, "share.requested", actor=world.member, target=AuditTarget("transfers.share", "-x", label),
               details={"value": details, "ids": ids})
    qs = AuditEvent.objects.order_by("seq")
    slow = [[download_format.escape_cell(cell) for cell in download_format.csv_cells(download_format.event_row(values))]
            for values in qs.values(*DOWNLOAD_COLUMNS)]
    fast = list(download_format.csv_cells_of_values(qs.values_list(*DOWNLOAD_COLUMNS)))
    assert fast == slow and len(fast) >= 5
    assert any(cell.startswith("'=") for row in fast for cell in row)


def test_postgresqls_copy_writes_the_same_csv_cells_as_python(world, login):
    """On PostgreSQL the CSV export is written by COPY: after unescaping, every cell equals the one
    the Python writer makes (JSON cells as JSON values: the database prints jsonb its own way)."""
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's; SQLite exports go through the Python writer")
    for label, details, ids in (("=SUM(A1)", {"b": 1, "a": ["x", None, True]}, ["req-1"]),
                                ("+1", {"n": -5}, []), ("", {}, []), ("'quoted", {"t": "text"}, ["@x"]),
                                ("\tTab\r\nnewline, \"quoted\"", {"é": "ü", "n": {"deep": [1, 2]}}, ["-a", "b"])):
        _event(world.alpha, "share.requested", actor=world.member, target=AuditTarget("transfers.share", "-x", label),
               details={"value": details, "ids": ids})
    head = AuditChainHead.objects.get()
    qs = AuditEvent.objects.all()
    python = b"".join(s.encode() for s in downloads.csv_lines(
        downloads.download_rows(qs, head_seq=head.seq).iterator(), head=(head.seq, head.hash))).decode()
    copied = b"".join(downloads.copy_csv_lines(qs, head=(head.seq, head.hash))).decode()
    assert "\r\n" in python and copied.count("\n") >= head.seq + 2
    (p_first, p_rows), (c_first, c_rows) = _csv(python), _csv(copied)
    assert p_first == c_first and p_rows[0] == c_rows[0] == list(DOWNLOAD_COLUMNS)
    assert len(p_rows) == len(c_rows) == head.seq + 1
    for p_row, c_row in zip(p_rows[1:], c_rows[1:], strict=True):
        for column, p_cell, c_cell in zip(DOWNLOAD_COLUMNS, p_row, c_row, strict=True):
            if column in ("details", "cloud_request_ids"):
                assert json.loads(downloads.unescape_cell(c_cell)) == json.loads(downloads.unescape_cell(p_cell))
            else:
                assert c_cell == p_cell, (column, p_cell, c_cell)


def test_postgresqls_copy_leaves_a_time_bc_empty_and_the_export_check_names_the_event(world, audit_tamper, tmp_path):
    """to_char prints a year BC like the same year AD: the export writes no time for it rather
    than the untampered one, and the export check stops at that event."""
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's; SQLite stores times as text, without eras")
    for _ in range(3):
        _event(world.alpha, "share.requested", actor=world.member)
    audit_tamper.update(2, occurred_at=RawSQL(
        "((occurred_at AT TIME ZONE 'UTC')::text || ' BC')::timestamp AT TIME ZONE 'UTC'", []))
    head = AuditChainHead.objects.get()
    path = tmp_path / "trail.csv"
    path.write_bytes(b"".join(downloads.copy_csv_lines(AuditEvent.objects.all(), head=(head.seq, head.hash))))
    result = download_verify.verify_download(path)
    assert not result.ok and result.first_bad_seq == 2, result



@pytest.mark.parametrize("query", [{"before": str(2**63)}, {"after": str(2**63)}, {"date_to": "9999-12-31"},
                                   {"date_from": "9999-12-31", "date_to": "9999-12-31"}])
def test_extreme_filters_are_answered_not_a_server_error(query, world, trail, login):
    response = login(world.admin).get(_list_url(world.alpha), query)
    assert response.status_code in (200, 400)
