"""A compliance officer reviews the audit trail in a real Chromium: filter, open an event, export."""

import csv
import io
import json
import re

import pytest
from playwright.sync_api import expect

from accounts.models import Role
from audit.download_format import DOWNLOAD_COLUMNS
from audit.models import AuditEvent
from audit.recorder import AuditTarget, record
from review.downloads import unescape_cell
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def reviewed_world(transactional_db):
    platform, research = factories.make_team("Platform"), factories.make_team("Research")
    admin = factories.add_member(platform, factories.make_user("admin@platform.test", full_name="Pat Admin"),
                                 Role.ADMIN).user
    officer = factories.make_user("officer@compliance.test", is_compliance_officer=True)
    for i in range(3):
        record(action="share.requested", actor=admin, team=platform,
               target=AuditTarget("transfers.share", f"share-{i}", f"web-{i} → web-copy"))
    record(action="cloud_account.changed", actor=admin, team=platform,
           target=AuditTarget("accounts.cloudaccount", "acc-1", "=alpha-prod\n<script>x</script>"),
           details={"changes": {"label": {"before": "alpha", "after": "alpha-prod"}}, "keys_replaced": False})
    record(action="share.requested", actor=None, team=research, target=AuditTarget("transfers.share", "r", "other"))
    return officer


def test_a_compliance_officer_filters_opens_an_event_and_exports(reviewed_world, page, live_server, sign_in,
                                                                  tmp_path):
    sign_in(page, live_server, reviewed_world.email, factories.PASSWORD)
    page.get_by_role("link", name="Audit trail (all teams)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit trail of every team")
    expect(page.locator("[data-integrity]")).to_contain_text("Never verified")
    rows = page.locator("table.audit-table tbody tr")
    expect(rows.first).to_be_visible()
    page.screenshot(path=tmp_path / "1-list.png", full_page=True)

    # Filter by action.
    page.get_by_label("Action").fill("cloud_account.")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"action=cloud_account\."))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("cloud_account.changed")
    expect(rows.first).to_contain_text("<script>x</script>")  # shown as text, never run
    page.screenshot(path=tmp_path / "2-filtered.png", full_page=True)

    # Open the event.
    event = AuditEvent.objects.get(action="cloud_account.changed")
    rows.first.get_by_role("link", name=f"Event {event.seq}").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Event #{event.seq}")
    changes = page.locator("table.audit-changes")
    expect(changes).to_contain_text("alpha-prod")
    expect(page.locator(".audit-hash").last).to_have_text(event.hash)
    page.screenshot(path=tmp_path / "3-detail.png", full_page=True)

    # Export the filtered events as CSV.
    page.go_back()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(r"audit-all-\d+\.csv", download.suggested_filename)
    download.save_as(tmp_path / "export.csv")
    text = (tmp_path / "export.csv").read_bytes().decode("utf-8")
    head_line, _, rest = text.partition("\n")  # CRLF from Python's writer, LF from PostgreSQL's COPY
    head_line = head_line.removesuffix("\r")
    head = json.loads(head_line.removeprefix("# "))["chain_head"]
    rows_back = list(csv.reader(io.StringIO(rest)))
    assert tuple(rows_back[0]) == DOWNLOAD_COLUMNS
    assert len(rows_back) == 2
    exported = dict(zip(DOWNLOAD_COLUMNS, rows_back[1], strict=True))
    assert exported["hash"] == event.hash
    assert exported["target_label"] == "'=alpha-prod\n<script>x</script>"  # defused for spreadsheets
    assert unescape_cell(exported["target_label"]) == event.target_label
    assert head["seq"] >= event.seq
    assert AuditEvent.objects.filter(action="audit.exported", actor_id=reviewed_world.pk,
                                     details__filters={"action": "cloud_account."}).exists()
