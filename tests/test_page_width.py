"""The busiest pages select only the columns they show (issue 19, "Pages under load").

Django compiles every query anew on each request, and a ``select_related`` adds every column of
the joined table to it: on the dashboard, compiling the five joins of each share panel was most of
the page's CPU (29 ms of the approver's 35 ms per request before, 16 ms after, on the bench's fill).
Under load that CPU is what a hundred people queue for, so the width of each page's queries is
pinned here: the columns selected over all of a page's queries, counted from their SQL.
"""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bench import fill, pages

# Measured after the change (295 and 186 columns), with a little room; before it the approver's
# dashboard selected 535 columns and the share list 198.
MAX_COLUMNS = {"dashboard": 320, "shares": 192}
COLUMN = re.compile(r'"[a-z_]+"\."[a-z_]+"(?: AS "[a-z_0-9]+")?[,\s]')


def _columns(sql: str) -> int:
    """Columns selected by one query: those listed before its FROM (the outer and any inner SELECT)."""
    return sum(len(COLUMN.findall(part.split(" FROM ")[0])) for part in sql.split("SELECT ")[1:])


def _quiet(line):
    pass


@pytest.fixture
def bench_world(db, settings, tmp_path):
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path)
    world, _ = fill.fill(events=200, shares=100, log=_quiet)
    return world


def test_the_dashboard_and_the_share_list_select_only_what_they_show(bench_world):
    widths = {}
    for page in pages.pages_for(bench_world):
        if page.key in MAX_COLUMNS:
            page.get()
            with CaptureQueriesContext(connection) as captured:
                response = page.get()
            assert response.status_code == 200
            widths[page.key] = sum(_columns(q["sql"]) for q in captured.captured_queries)
    assert set(widths) == set(MAX_COLUMNS)
    assert {key: n for key, n in widths.items() if n > MAX_COLUMNS[key]} == {}
