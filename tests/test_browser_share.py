"""The issue's acceptance test: a whole copy through the pages, in a real Chromium.

A Platform member asks for a copy of alpha's image to Research's delta account (another Region: by
export; tests/test_browser_methods.py has the same-Region copy), a Platform
approver approves it and watches the export progress live, a Research member accepts the image
and watches the import complete. The portal talks to the OUTSCALE sandbox; the RQ jobs run in
this process (``workers.run_jobs``) while the browser keeps the page open.
"""

import re

import pytest
from playwright.sync_api import expect

from tests import factories, workers
from transfers.models import Recipient, Share

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IMAGE = "alpha-web-2025.01"
COPY_NAME = "web-copy"
REASON = "Release 1.2 needs the web image in Research."
COMMENT = "Fine: Research runs the release tests."
# share-progress.js polls every 2.5 s; leave room for a few polls on a busy machine.
LIVE_MS = 10_000


def _state() -> str:
    return Share.objects.get(copy_name=COPY_NAME).state


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))


def _nav(page):
    return page.get_by_role("navigation", name="Team")


def test_a_member_asks_an_approver_approves_and_another_team_accepts_the_copy(
    flow, cloud, page, live_server, sign_in, tmp_path
):
    share_state = page.locator("[data-share-state]")

    # --- The Platform member asks for the copy. ---------------------------------------------------
    sign_in(page, live_server, flow.src_member.email, factories.PASSWORD)
    expect(page.get_by_role("heading", level=1, name="Platform")).to_be_visible()
    page.screenshot(path=tmp_path / "1-dashboard-before.png", full_page=True)
    page.locator(".heading").get_by_role("link", name="Share an image").click()

    expect(page.get_by_role("heading", level=1, name="Share an image")).to_be_visible()
    page.get_by_label("Source account").select_option(label=f"alpha · {flow.alpha.region} · {flow.alpha.account_id}")
    page.get_by_role("button", name="Show its images").click()

    expect(page.get_by_text("Step 2 of 2")).to_be_visible()
    page.get_by_label(IMAGE, exact=True).check()
    expect(page.get_by_label("delta", exact=True)).not_to_be_checked()
    page.get_by_label("delta", exact=True).check()
    page.get_by_label("Name of the copy").fill(COPY_NAME)
    page.get_by_label("Reason").fill(REASON)
    page.get_by_label("I confirm that the image's third-party licences allow exporting it.").check()
    # The Region <select> lines up with the text input beside it.
    external_id, region = page.get_by_label("Account id").first, page.get_by_label("Region").first
    assert abs(external_id.bounding_box()["height"] - region.bounding_box()["height"]) < 1
    page.screenshot(path=tmp_path / "2-share-form.png", full_page=True)
    page.get_by_role("button", name="Ask for the copy").click()

    expect(share_state).to_have_text("Waiting for approval")
    expect(page.get_by_role("status")).to_contain_text("was sent to the team's approvers")
    share = Share.objects.get(copy_name=COPY_NAME)
    assert share.state == Share.State.REQUESTED and share.requested_by == flow.src_member
    assert list(share.recipients.values_list("target_account", flat=True)) == [flow.delta.pk]
    share_path = re.compile(rf"/shares/{share.public_id}/$")
    expect(page).to_have_url(share_path)
    # The requester cannot approve their own request.
    expect(page.get_by_text("You asked for this copy, so another approver")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_label("Comment")).to_have_count(0)
    expect(_nav(page).get_by_role("link", name="Approvals")).to_have_count(0)
    _sign_out(page)

    # --- The Platform approver approves; the page follows the export without a reload. -------------
    sign_in(page, live_server, flow.src_approver.email, factories.PASSWORD)
    _nav(page).get_by_role("link", name="Approvals").click()
    expect(page.get_by_role("heading", level=1, name="Waiting for approval")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=IMAGE)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(REASON)
    page.screenshot(path=tmp_path / "3-approvals.png", full_page=True)
    row.get_by_role("link", name="Review").click()

    expect(page).to_have_url(share_path)
    expect(share_state).to_have_text("Waiting for approval")
    page.get_by_label("Comment").fill(COMMENT)
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("status")).to_contain_text(f"Approved: the export of {IMAGE} starts now.")
    expect(share_state).to_have_text("Exporting")
    expect(page.get_by_text(COMMENT)).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    assert _state() == Share.State.EXPORTING
    page.screenshot(path=tmp_path / "4-detail-exporting.png", full_page=True)

    # The page is marked so that a reload would be noticed: a navigation would drop the mark.
    page.evaluate("window.__sameDocument = true")
    workers.run_jobs(until=lambda: _state() == Share.State.READY)
    expect(share_state).to_have_text("Ready for recipients", timeout=LIVE_MS)
    expect(page.locator("[data-export-percent]")).to_have_text("100")
    expect(page.locator("[data-export-state]")).to_have_text("Completed")
    expect(page.get_by_role("progressbar", name="Export progress")).to_have_attribute("value", "100")
    recipient_row = page.locator(f'[data-recipient="{share.recipients.get().public_id}"]')
    expect(recipient_row.locator('[data-field="state"]')).to_have_text("Offered")
    expect(page.locator("[data-countdown]")).to_contain_text("left")
    expect(page.locator("[data-reload-hint]")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=tmp_path / "5-detail-ready.png", full_page=True)
    _sign_out(page)

    # --- The Research member accepts; the import completes and the page shows the new image. -------
    sign_in(page, live_server, flow.dst_member.email, factories.PASSWORD)
    expect(page.get_by_role("heading", level=1, name="Research")).to_be_visible()
    _nav(page).get_by_role("link", name="Incoming").click()
    expect(page.get_by_role("heading", level=1, name="Incoming images")).to_be_visible()
    offer = page.get_by_role("row").filter(has_text=COPY_NAME)
    expect(offer).to_have_count(1)
    expect(offer).to_contain_text("delta")
    expect(offer).to_contain_text("left")
    page.screenshot(path=tmp_path / "6-inbox.png", full_page=True)
    offer.get_by_role("button", name="Accept").click()

    expect(page.get_by_role("status")).to_contain_text(f"Accepted: {COPY_NAME} is being imported into delta.")
    running = page.get_by_role("row").filter(has_text=COPY_NAME)
    expect(running.locator(".status")).to_have_text("Importing")
    running.get_by_role("link", name=COPY_NAME).click()

    expect(page).to_have_url(re.compile(rf"/t/{flow.dest.public_id}/shares/{share.public_id}/$"))
    expect(share_state).to_have_text("Importing")
    expect(_nav(page).get_by_role("link", name="Incoming")).to_have_attribute("aria-current", "page")
    page.evaluate("window.__sameDocument = true")
    workers.run_jobs(until=lambda: _state() == Share.State.COMPLETED)
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.COMPLETED and recipient.image_id.startswith("ami-")
    assert cloud.world.images[recipient.image_id].account_id == flow.delta.account_id
    expect(share_state).to_have_text("Completed", timeout=LIVE_MS)
    expect(recipient_row.locator('[data-field="state"]')).to_have_text("Completed")
    expect(recipient_row.locator('[data-field="image"]')).to_have_text(recipient.image_id)
    assert page.evaluate("window.__sameDocument") is True

    # The timeline is drawn by the server: a reload lists every step.
    page.reload()
    expect(share_state).to_have_text("Completed")
    expect(recipient_row.locator('[data-field="image"]')).to_have_text(re.compile(r"^ami-[0-9a-f]+$"))
    steps = page.locator("ol.timeline li strong")
    for action in ("share.requested", "share.approved", "export.completed", "share.offered",
                   "import.accepted", "import.completed", "share.completed"):
        expect(steps.filter(has_text=re.compile(rf"^{re.escape(action)}$"))).to_have_count(1)
    page.screenshot(path=tmp_path / "7-detail-completed.png", full_page=True)

    _nav(page).get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", level=1, name="Research")).to_be_visible()
    page.screenshot(path=tmp_path / "8-dashboard-after.png", full_page=True)
