"""Queries per page stay at or under 12 (issue 7) and do not grow with the team's history.

The pages are the benchmark's own (``bench.pages.pages_for``: dashboard, share lists,
approvals, inbox, audit trails, event pages), over the benchmark's fill at two sizes.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bench import fill, pages

MAX_QUERIES = 12
# The pages issue 7 names, plus the audit trails; the admin's change list is Django's.
PINNED = {"dashboard", "shares", "shares_deep", "shares_state", "approvals", "inbox", "event_site", "event_team",
          "audit_site", "audit_team"}


def _quiet(line):
    pass


def _query_counts(world) -> dict[str, int]:
    counts = {}
    for page in pages.pages_for(world):
        if page.group == "admin":
            continue
        page.get()  # first request of a client: session and caches settle
        with CaptureQueriesContext(connection) as captured:
            page.get()
        counts[page.key] = len(captured)
    return counts


@pytest.fixture
def bench_world(db, settings, tmp_path):
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path)
    world, _ = fill.fill(events=400, shares=200, log=_quiet)
    return world


def test_every_page_stays_within_twelve_queries_and_does_not_grow_with_the_rows(bench_world):
    small = _query_counts(bench_world)
    assert set(small) >= PINNED
    assert {key: n for key, n in small.items() if n > MAX_QUERIES} == {}

    fill.fill_shares(bench_world, 2000, log=_quiet)  # ten times the shares and recipients
    large = _query_counts(bench_world)
    assert large == small


def test_the_dashboard_reads_each_panel_once(bench_world, django_assert_max_num_queries):
    dashboard = next(page for page in pages.pages_for(bench_world) if page.key == "dashboard")
    dashboard.get()
    with django_assert_max_num_queries(MAX_QUERIES):
        context = dashboard.get().context
    # Panels filled by the bench data, so the counts above cover each panel's queries.
    assert context["approvals"] and context["approvals_count"] >= len(context["approvals"])
    assert context["in_flight"] and context["recent"]
    assert context["offers_count"] >= len(context["offers"])


def test_approvals_and_the_inbox_are_paginated(bench_world, monkeypatch):
    from transfers.views import decisions, incoming

    monkeypatch.setattr(decisions, "APPROVALS_PER_PAGE", 1)
    monkeypatch.setattr(incoming, "INBOX_PER_PAGE", 5)
    by_key = {page.key: page for page in pages.pages_for(bench_world)}
    approvals = by_key["approvals"].get().context["page"]
    assert len(approvals.object_list) == 1 and approvals.has_next()

    inbox = by_key["inbox"]
    first = inbox.get()
    assert first.context["page"].has_next() and 'page=2"' in first.content.decode()
    rows = []
    for number in range(1, first.context["page"].paginator.num_pages + 1):
        inbox.url = inbox.url.split("?")[0] + f"?page={number}"
        context = inbox.get().context
        rows += [("offered", r) for r in context["offered"]] + [("running", r) for r in context["running"]] \
            + [("past", r) for r in context["past"]]
    sections = [section for section, _ in rows]
    assert sections == sorted(sections, key=["offered", "running", "past"].index)  # offers first, past last
    assert len({r.pk for _, r in rows}) == len(rows) == first.context["page"].paginator.count


def test_the_admin_estimates_the_unfiltered_trail_size_on_postgresql(bench_world, monkeypatch):
    from audit.models import AuditEvent
    from review import admin as audit_admin

    exact = AuditEvent.objects.count()
    filtered = AuditEvent.objects.filter(outcome="denied").order_by("-seq")
    assert audit_admin.EstimatedCountPaginator(filtered, 100).count == filtered.count()  # filtered: exact
    assert audit_admin.EstimatedCountPaginator(AuditEvent.objects.order_by("-seq"), 100).count == exact  # small
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_auditevent")
        monkeypatch.setattr(audit_admin, "ESTIMATE_ABOVE", 0)
        estimate = audit_admin.EstimatedCountPaginator(AuditEvent.objects.order_by("-seq"), 100).count
        assert abs(estimate - exact) <= exact * 0.2  # the planner's figure, not a COUNT(*)
