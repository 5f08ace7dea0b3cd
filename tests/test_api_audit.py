"""The audit trail in the API (issue 17): the review page's filters, scope, pages and records."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.selectors import team_access_for_user
from api import tokens
from api.models import ApiToken
from api.throttling import TokenRateThrottle
from audit.integrity import NEVER_VERIFIED, run_verification
from audit.models import AuditEvent
from audit.recorder import AuditTarget, record
from review import selectors
from review.forms import ACTION_INVALID, BOTH_CURSORS, DATES_INVERTED
from tests import factories

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/audit/events/"
INTEGRITY = "/api/v1/audit/integrity/"
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _own_throttle_counts(monkeypatch):
    # The per-token counts live in Redis under the token's pk, which a new test database hands out
    # again: counts left by an earlier run within the minute would throttle this one.
    monkeypatch.setattr(TokenRateThrottle, "cache_format", f"throttle-{uuid.uuid4().hex}-%(scope)s-%(ident)s")


def _event(team, action="share.requested", *, actor=None, outcome="success", target=None, details=None):
    return record(action=action, outcome=outcome, actor=actor, team=team, target=target, details=details)


def _page_url(team):
    return reverse("audit:event-list", kwargs={"team_id": team.public_id})


def _api_seqs(response):
    assert response.status_code == 200, response.content
    return [e["seq"] for e in response.json()["results"]]


def _page_seqs(response):
    assert response.status_code == 200
    return [e.seq for e in response.context["page"].events]


def _reads():
    return AuditEvent.objects.filter(action="audit.read")


@pytest.fixture
def trail(world):
    account = factories.make_cloud_account(world.alpha, label="prod")
    alpha = [
        _event(world.alpha, "share.requested", actor=world.member, target=AuditTarget("transfers.share", "s-1",
                                                                                      "web-1 → copy-1")),
        _event(world.alpha, "share.approved", actor=world.approver, target=AuditTarget("transfers.share", "s-1",
                                                                                       "web-1 → copy-1")),
        _event(world.alpha, "cloud_account.validated", actor=world.admin, target=account),
        _event(world.alpha, "access.denied", actor=world.member, outcome="denied"),
        _event(world.alpha, "import.failed", actor=None, outcome="failed"),
    ]
    beta = [_event(world.beta, "share.requested", actor=world.outsider),
            _event(world.beta, "share.approved", actor=world.outsider)]
    site = [_event(None, "auth.logged_in", actor=world.admin)]
    return {"alpha": alpha, "beta": beta, "site": site, "account": account}


# --- The same events as the page ------------------------------------------------------------------------------


TODAY = datetime.now(UTC).date()
QUERIES = [
    {},
    {"action": "share.requested"},
    {"action": "share."},
    {"outcome": "denied"},
    {"outcome": "failed"},
    {"actor": "approver@alpha"},
    {"actor": "ALPHA"},
    {"q": "copy-1"},
    {"q": "cloud_acc"},
    {"target_type": "transfers.share", "target_id": "s-1"},
    {"target_type": "accounts.cloudaccount"},
    {"date_from": TODAY.isoformat(), "date_to": TODAY.isoformat()},
    {"date_to": (TODAY - timedelta(days=1)).isoformat()},
    {"team": "ignored-on-a-team-trail", "action": "share."},  # the team page has no team filter either
    # What the page's filter form sends: every field, the unused ones empty.
    {"actor": "", "action": "share.", "outcome": "", "target_type": "", "target_id": "", "date_from": "",
     "date_to": "", "q": ""},
]


@pytest.mark.parametrize("query", QUERIES)
def test_it_gives_the_events_the_page_gives_for_the_same_query_string(query, world, trail, api, login):
    client = api.client(world.auditor)
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    # Each read appends an audit.read event: pin both to the events that existed before them.
    query = {**query, "before": head + 1}
    api_seqs, page_seqs = _api_seqs(client.get(EVENTS, query)), _page_seqs(login(world.auditor).get(
        _page_url(world.alpha), query))
    assert api_seqs == page_seqs
    assert not set(api_seqs) & {e.seq for e in trail["beta"] + trail["site"]}


def test_without_a_cursor_the_newest_events_come_first(world, trail, api):
    seqs = _api_seqs(api.client(world.admin).get(EVENTS, {"action": "share."}))
    assert seqs == [trail["alpha"][1].seq, trail["alpha"][0].seq]


def test_it_shows_the_events_public_fields_and_no_integer_keys(world, trail, api):
    client = api.client(world.auditor)
    client.get(EVENTS, {"action": "share."}, **{"User-Agent": "pipeline/2.0"})
    read = _reads().latest("seq")
    body = client.get(f"{EVENTS}{read.public_id}/").json()
    assert body["seq"] == read.seq and body["id"] == str(read.public_id)
    assert body["action"] == "audit.read" and body["outcome"] == "success"
    assert body["actor_name"] == read.actor_name and body["team_name"] == "Alpha"
    assert body["target_type"] == "audit.trail" and body["target_id"] == str(world.alpha.public_id)
    assert body["user_agent"] == "pipeline/2.0" and body["ip"] == "127.0.0.1"
    assert body["request_id"] == read.request_id != ""
    assert body["hash"] == read.hash and body["prev_hash"] == read.prev_hash
    assert body["details"]["via"]["id"] == str(client.token.public_id)
    assert "actor_id" not in body and "team_id" not in body and "actor" not in body and "team" not in body
    cloud = record(action="export.completed", actor=None, team=world.alpha, cloud_request_ids=["req-0001"])
    assert client.get(f"{EVENTS}{cloud.public_id}/").json()["cloud_request_ids"] == ["req-0001"]


# --- Who reads what ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_team_admins_and_auditors_read_their_own_teams_trail(role, world, trail, api):
    seqs = _api_seqs(api.client(getattr(world, role)).get(EVENTS))
    assert {e.seq for e in trail["alpha"]} <= set(seqs)
    assert not set(seqs) & {e.seq for e in trail["beta"] + trail["site"]}


@pytest.mark.parametrize("path", ["list", "detail", "integrity"])
@pytest.mark.parametrize("role", ["member", "approver"])
def test_a_token_without_the_audit_role_gets_a_recorded_403(role, path, world, trail, api):
    client = api.client(getattr(world, role))
    url = {"list": EVENTS, "detail": f"{EVENTS}{trail['alpha'][0].public_id}/", "integrity": INTEGRITY}[path]
    response = client.get(url)
    assert response.status_code == 403 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "forbidden"
    denied = AuditEvent.objects.filter(action="access.denied").latest("seq")
    assert denied.actor_id == getattr(world, role).pk and denied.details["reason"] == "missing_role"
    assert denied.details["needs"] == "view_audit"
    assert denied.details["via"]["id"] == str(client.token.public_id)
    assert not _reads().exists()


def test_a_member_role_service_token_gets_a_403_and_an_auditor_one_reads(world, trail, api):
    assert api.client(world.admin, kind="service").get(EVENTS).status_code == 403
    auditor = api.client(world.admin, kind="service", role="auditor")
    assert {e.seq for e in trail["alpha"]} <= set(_api_seqs(auditor.get(EVENTS)))


def test_another_teams_event_is_a_recorded_404(world, trail, api):
    client = api.client(world.admin)
    theirs = trail["beta"][0]
    response = client.get(f"{EVENTS}{theirs.public_id}/")
    assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "not_found"
    denied = AuditEvent.objects.filter(action="access.denied").latest("seq")
    assert denied.actor_id == world.admin.pk and denied.team_id == world.alpha.pk
    assert denied.details["reason"] == "not_found_in_team"
    assert denied.target_type == "audit.auditevent" and denied.target_id == str(theirs.public_id)
    assert denied.details["via"]["id"] == str(client.token.public_id)
    assert not _reads().exists()
    site = trail["site"][0]  # a site-wide event belongs to no team: not found either
    assert client.get(f"{EVENTS}{site.public_id}/").status_code == 404


def test_a_compliance_officer_makes_an_auditor_token_for_any_team_and_reads_that_team_only(world, trail, api):
    assert not world.compliance.memberships.exists()
    client = api.client(world.compliance, world.beta, role="auditor")
    assert client.token.role == "auditor" and client.token.kind == "personal"
    assert _api_seqs(client.get(EVENTS, {"before": trail["site"][0].seq})) == \
        [e.seq for e in reversed(trail["beta"])]
    assert client.get(f"{EVENTS}{trail['alpha'][0].public_id}/").status_code == 404
    assert client.get(f"{EVENTS}{trail['beta'][0].public_id}/").status_code == 200
    read = _reads().latest("seq")
    assert read.actor_id == world.compliance.pk and read.team_id == world.beta.pk
    assert client.get(INTEGRITY).status_code == 200


def test_a_compliance_officer_cannot_make_a_token_above_reading(world):
    access = team_access_for_user(user=world.compliance, team_public_id=world.beta.public_id)
    for role in ("member", "approver", "admin"):
        with pytest.raises((ValidationError, PermissionDenied)):
            tokens.token_create(access=access, kind=ApiToken.Kind.PERSONAL, name="x", role=role, days=30)
    with pytest.raises(PermissionDenied):
        tokens.token_create(access=access, kind=ApiToken.Kind.SERVICE, name="x", role="auditor", days=30)
    assert not ApiToken.objects.exists()


# --- Reads are recorded as the page records them --------------------------------------------------------------------


def test_each_read_is_recorded_with_the_pages_details_and_the_token(world, trail, api, login):
    query = {"action": "share.", "q": "copy", "before": "999"}
    login(world.auditor).get(_page_url(world.alpha), query)
    by_page = _reads().latest("seq")
    client = api.client(world.auditor)
    client.get(EVENTS, query)
    by_api = _reads().latest("seq")
    assert by_api.details == {**by_page.details, "via": by_api.details["via"]}
    assert by_api.details == {"view": "list", "filters": {"action": "share.", "q": "copy"},
                              "cursor": {"before": 999}, "via": by_api.details["via"]}
    assert by_api.details["via"] == {"kind": "personal", "name": client.token.name, "id": str(client.token.public_id),
                                     "prefix": f"omi_{client.token.prefix}"}
    assert (by_api.target_type, by_api.target_id, by_api.team_id) == (by_page.target_type, by_page.target_id,
                                                                       by_page.team_id)

    event = trail["alpha"][0]
    login(world.auditor).get(reverse("audit:event-detail", kwargs={"team_id": world.alpha.public_id,
                                                                   "event_id": event.public_id}))
    by_page = _reads().latest("seq")
    client.get(f"{EVENTS}{event.public_id}/")
    by_api = _reads().latest("seq")
    assert by_api.details == {"view": "event", "seq": event.seq, "via": by_api.details["via"]}
    assert by_page.details == {"view": "event", "seq": event.seq}
    assert (by_api.target_type, by_api.target_id, by_api.target_label) == (
        by_page.target_type, by_page.target_id, by_page.target_label)


@pytest.mark.parametrize(("query", "field", "message"), [
    ({"date_from": "2025-03-02", "date_to": "2025-03-01"}, "date_to", DATES_INVERTED),
    ({"before": "5", "after": "3"}, "non_field_errors", BOTH_CURSORS),
])
def test_filters_valid_each_but_not_together_are_a_422(query, field, message, world, trail, api):
    response = api.client(world.auditor).get(EVENTS, query)
    assert response.status_code == 422 and response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["code"] == "refused" and body["detail"] == message and body["errors"] == {field: [message]}
    assert not _reads().exists()


@pytest.mark.parametrize("query", [{"before": str(2**63 - 1)}, {"after": str(2**63 - 1), "q": "copy"},
                                   {"date_from": "9999-12-31"}, {"date_to": "9999-12-31"}, {"date_to": "0001-01-01"},
                                   {"q": " a"}])
def test_extreme_but_valid_values_are_an_answer(query, world, trail, api):
    response = api.client(world.auditor).get(EVENTS, query)
    assert response.status_code == 200


def test_a_filter_that_looks_like_a_secret_is_withheld_from_the_read_event(world, api):
    api.client(world.auditor).get(EVENTS, {"q": "X-Amz-Signature=abc"})
    assert _reads().latest("seq").details["filters"]["q"].startswith("(withheld")


@pytest.mark.parametrize(("query", "field", "message"), [
    ({"action": "Share Approved"}, "action", ACTION_INVALID),
    ({"action": "share.\n"}, "action", ACTION_INVALID),
    ({"action": " share."}, "action", ACTION_INVALID),  # taken as sent: the schema's pattern is the form's
    ({"date_from": "2025-3-1"}, "date_from", "YYYY-MM-DD"),
    ({"before": "5.0"}, "before", "whole number"),
    ({"before": ""}, "before", "whole number"),
    ({"date_from": "yesterday"}, "date_from", "Enter a valid date."),
    ({"outcome": "maybe"}, "outcome", "Select a valid choice."),
    ({"before": "abc"}, "before", "Enter a whole number."),
    ({"q": "x"}, "q", "Search for at least"),
    ({"target_type": "share"}, "target_type", "target type"),
    ({"before": str(2**63)}, "before", "less than or equal to"),
    ({"after": "99999999999999999999999"}, "after", "less than or equal to"),
    ({"page_size": "0"}, "page_size", "greater than or equal to 1"),
    ({"page_size": "101"}, "page_size", "less than or equal to 100"),
    ({"page_size": ["5", "50"]}, "page_size", "Give page_size once."),  # found by tests/test_api_schema.py
])
def test_bad_filters_are_a_400_with_the_pages_words_and_read_nothing(query, field, message, world, trail, api):
    client = api.client(world.auditor)
    client.get(EVENTS)  # the token's first use is written down; not part of what is measured
    reads = _reads().count()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(EVENTS, query)
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["code"] == "validation_error"
    assert any(message in text for text in body["errors"][field])
    assert not [q for q in queries.captured_queries
                if q["sql"].lstrip().upper().startswith("SELECT") and "audit_auditevent" in q["sql"]]
    assert _reads().count() == reads


# --- Pages ------------------------------------------------------------------------------------------------------------


def _follow(client, url, key):
    pages = []
    while url:
        body = client.get(url).json()
        pages.append([e["seq"] for e in body["results"]])
        url = body[key]
        _event(client.token.team, "share.requested")  # newer events keep arriving meanwhile
    return pages


def test_it_pages_through_everything_once_and_back_while_events_are_appended(world, api):
    created = [_event(world.alpha, "share.requested").seq for _ in range(45)]
    client = api.client(world.auditor)
    older = _follow(client, f"http://testserver{EVENTS}?action=share.requested&page_size=20", "next")
    assert [len(p) for p in older] == [20, 20, 5]
    assert [seq for page in older for seq in page] == sorted(created, reverse=True)
    last = client.get(EVENTS, {"action": "share.requested", "page_size": 20, "before": older[-1][-1]}).json()
    assert last["results"] == [] and last["next"] is None
    newer = _follow(client, f"http://testserver{EVENTS}?action=share.requested&page_size=20&after={created[0] - 1}",
                    "previous")
    assert [len(p) for p in newer[:2]] == [20, 20]
    seen = [seq for page in reversed(newer) for seq in page]  # each page newest first, pages oldest first
    assert seen == sorted(set(seen), reverse=True)  # no duplicate, no disorder
    assert seen[-len(created):] == sorted(created, reverse=True)  # and, from the cursor up, no gap


def test_links_keep_the_filters(world, api):
    for _ in range(3):
        _event(world.alpha, "share.approved")
    body = api.client(world.auditor).get(EVENTS, {"action": "share.approved", "page_size": 2}).json()
    assert "action=share.approved" in body["next"] and "page_size=2" in body["next"] and "before=" in body["next"]
    assert body["previous"] is None and body["searched"] is None


def test_a_text_search_scans_a_bounded_window_and_says_which(world, api, monkeypatch):
    hits = [_event(world.alpha, target=AuditTarget("x.y", "1", "needle")).seq for _ in range(2)]
    for _ in range(15):
        _event(world.alpha, "share.approved")
    hits.append(_event(world.alpha, target=AuditTarget("x.y", "1", "needle")).seq)
    monkeypatch.setattr(selectors, "SCAN_WINDOW", 10)
    client = api.client(world.auditor)
    found, url, windows = [], f"http://testserver{EVENTS}?q=needle&page_size=5", []
    while url:
        body = client.get(url).json()
        found += [e["seq"] for e in body["results"]]
        if body["searched"]:
            windows.append(body["searched"])
            assert body["searched"][1] - body["searched"][0] < 10
        url = body["next"]
    assert found == sorted(hits, reverse=True)
    assert windows


# --- Integrity ---------------------------------------------------------------------------------------------------


def test_integrity_says_never_verified_then_ok_then_broken_after_tampering(world, trail, api, audit_tamper):
    client = api.client(world.auditor)
    body = client.get(INTEGRITY).json()
    assert body["ok"] is None and body["verified_at"] is None and body["message"] == NEVER_VERIFIED

    run_verification()
    body = client.get(INTEGRITY).json()
    assert body["ok"] is True and body["verified_at"]
    assert body["last_seq"] == body["events_checked"] == AuditEvent.objects.count()

    forged = trail["alpha"][1]
    audit_tamper.update(forged.seq, target_label="nothing to see here")
    run_verification()
    body = client.get(INTEGRITY).json()
    assert body["ok"] is False
    assert body["last_seq"] == forged.seq - 1  # the last event still found good
    assert str(forged.seq) in body["message"]
    assert set(body) == {"verified_at", "ok", "events_checked", "last_seq", "checkpoint_seq", "checkpoint_at",
                         "message"}


def test_integrity_is_the_same_status_the_page_shows(world, trail, api, login):
    run_verification()
    page = login(world.auditor).get(_page_url(world.alpha))
    status = page.context["integrity"]
    body = api.client(world.auditor).get(INTEGRITY).json()
    assert (body["ok"], body["last_seq"], body["events_checked"], body["message"]) == (
        status.ok, status.last_seq, status.events_checked, status.message)
