"""Issue 16's browser proof of the same-Region fast path, in a real Chromium with a real worker.

A Platform member asks, through the share form, for one copy of alpha's own image to two of
Research's accounts: gamma, in alpha's Region (eu-west-2), and delta, in us-east-2. Before anyone
approves, the page says how each gets its copy and why; a Platform approver (another person)
approves in the browser and the share page follows the copies live to the end, while a real
`manage.py rqworker` process runs every job against the sandbox. Then, from outside the portal:
one export task (delta's), one UpdateImage that adds gamma and one that removes it, nobody left in
the source image's PermissionsToLaunch as the official SDK reads it with alpha's keys, each copy in
its own account with the Description the member typed beside the portal's mark, and the grant and
its removal on the share's timeline with their RequestIds.
"""

import re

import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from outscale import marks
from tests import factories, workers
from transfers.models import Export, LaunchGrant, Recipient, Share
from transfers.services import methods
from transfers.services.import_starts import image_subject
from transfers.views.decisions import APPROVED_BOTH

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ALPHA, GAMMA, DELTA = "111122223333", "333344445555", "444455556666"
IMAGE = "alpha-web-2025.01"
COPY_NAME = "web-release"
TYPED = "Web image for the 1.2 release tests (issue 16)"
REASON = "Release 1.2 runs in both Regions."
# The worker looks a fifth of a second apart; its scheduler moves due jobs once a second.
WORKER_PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 0.2, "OMIPORTAL_SWEEP_MAX_SECONDS": 0.5,
               "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 100, "OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY": 0.05,
               "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY": 0.2, "OMIPORTAL_SWEEP_BUDGET_SECONDS": 1,
               "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
OTHER_REGION = methods.REASON_OTHER_REGION.format(region="us-east-2", source_region="eu-west-2")
# Both copies, from the approval: an export, two imports and a copy, each a few sweeps.
END_MS = 45_000


@pytest.fixture
def worker(flow, cloud, tmp_path):
    """One real worker process (with its scheduler) on this test's database, Redis and sandbox,
    started before the browser so that its start-up overlaps the form; killed before the database
    is flushed."""
    with open(tmp_path / "worker.log", "wb") as log:
        proc = workers.start_worker(workers.worker_env(
            cloud, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "worker-checkpoints", **WORKER_PACE), stdout=log)
        try:
            yield proc
        finally:
            workers.kill_tree(proc)


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))


def _nav(page):
    return page.get_by_role("navigation", name="Team")


def _expect_method(page, recipient, method, reason) -> None:
    shown = page.locator(f'[data-recipient="{recipient.public_id}"] [data-field="method"]')
    expect(shown.locator("[data-method]")).to_have_text(method.label)
    expect(shown).to_contain_text(reason)


def _update_image_answers(cloud, image_id: str) -> list[list[str]]:
    """Who could launch the source image after each UpdateImage the sandbox carried out, in order."""
    return [body["Image"]["PermissionsToLaunch"]["AccountIds"] for action, status, body in list(cloud.world.responses)
            if action == "UpdateImage" and status == 200 and body.get("Image", {}).get("ImageId") == image_id]


def test_one_share_copies_by_launch_permission_in_the_region_and_by_export_across(
        flow, cloud, oapi, worker, page, live_server, sign_in, wait_for, tmp_path):
    flow.dest.auto_accept_incoming = True  # Research takes what it is sent: the approval is the last click
    flow.dest.save()
    share_state = page.locator("[data-share-state]")

    # --- The Platform member asks for one copy to gamma (same Region) and delta (another). --------
    sign_in(page, live_server, flow.src_member.email, factories.PASSWORD)
    page.goto(f"{live_server.url}/t/{flow.source.public_id}/shares/new/?account={flow.alpha.public_id}")
    expect(page.get_by_text("Step 2 of 2")).to_be_visible()
    page.get_by_label(IMAGE, exact=True).check()
    page.get_by_label("gamma", exact=True).check()
    page.get_by_label("delta", exact=True).check()
    page.get_by_label("Name of the copy").fill(COPY_NAME)
    page.get_by_label("Description", exact=True).fill(TYPED)
    page.get_by_label("Reason").fill(REASON)
    page.get_by_label("I confirm that the image's third-party licences allow exporting it.").check()
    page.get_by_role("button", name="Ask for the copy").click()

    expect(share_state).to_have_text("Waiting for approval")
    share = Share.objects.get(copy_name=COPY_NAME)
    gamma_in = Recipient.objects.get(share=share, target_account=flow.gamma)
    delta_in = Recipient.objects.get(share=share, target_account=flow.delta)
    assert (gamma_in.method, delta_in.method) == (Recipient.Method.LAUNCH_PERMISSION, Recipient.Method.EXPORT)
    share_path = re.compile(rf"/shares/{share.public_id}/$")
    expect(page).to_have_url(share_path)
    # Before any approval, the member's page says how each recipient gets its copy, and why.
    _expect_method(page, gamma_in, Recipient.Method.LAUNCH_PERMISSION, methods.REASON_LAUNCH_PERMISSION)
    _expect_method(page, delta_in, Recipient.Method.EXPORT, OTHER_REGION)
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    page.screenshot(path=tmp_path / "1-requested.png", full_page=True)
    _sign_out(page)

    # --- The approver reads each recipient's method and why, then approves. ----------------------
    sign_in(page, live_server, flow.src_approver.email, factories.PASSWORD)
    _nav(page).get_by_role("link", name="Approvals").click()
    page.get_by_role("row").filter(has_text=IMAGE).get_by_role("link", name="Review").click()
    expect(page).to_have_url(share_path)
    expect(share_state).to_have_text("Waiting for approval")
    _expect_method(page, gamma_in, Recipient.Method.LAUNCH_PERMISSION, methods.REASON_LAUNCH_PERMISSION)
    _expect_method(page, delta_in, Recipient.Method.EXPORT, OTHER_REGION)
    # The decision card says the same, beside what else the approver weighs.
    decided = page.locator('[data-fact="methods"] li')
    expect(decided).to_have_count(2)
    for label, method, reason in (("gamma (eu-west-2)", Recipient.Method.LAUNCH_PERMISSION,
                                   methods.REASON_LAUNCH_PERMISSION),
                                  ("delta (us-east-2)", Recipient.Method.EXPORT, OTHER_REGION)):
        item = decided.filter(has_text=label)
        expect(item.locator("strong")).to_have_text(method.label)
        expect(item).to_contain_text(reason)
    expect(page.locator('[data-fact="description"]')).to_have_text(TYPED)
    page.screenshot(path=tmp_path / "2-decision.png", full_page=True)
    page.get_by_label("Comment").fill("Both Regions, fine.")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_have_text(APPROVED_BOTH.format(image=IMAGE))

    # --- The page follows both copies to the end without a reload. --------------------------------
    page.evaluate("window.__sameDocument = true")
    expect(share_state).to_have_text("Completed", timeout=END_MS)
    gamma_in.refresh_from_db()
    delta_in.refresh_from_db()
    for recipient in (gamma_in, delta_in):
        assert recipient.state == Recipient.State.COMPLETED and recipient.image_id.startswith("ami-")
        row = page.locator(f'[data-recipient="{recipient.public_id}"]')
        expect(row.locator('[data-field="state"]')).to_have_text("Completed")
        expect(row.locator('[data-field="image"]')).to_have_text(recipient.image_id)
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=tmp_path / "3-completed-live.png", full_page=True)

    # The removal follows gamma's copy; once it is made, the timeline (drawn by the server) lists it.
    wait_for(lambda: LaunchGrant.objects.get(share=share).state, lambda s: s == LaunchGrant.State.REVOKED,
             timeout=END_MS / 1000)
    page.reload()
    expect(share_state).to_have_text("Completed")
    steps = page.locator("ol.timeline li")
    for action in ("grant.added", "grant.removed"):
        [event] = AuditEvent.objects.filter(action=action, target_id=str(share.public_id))
        assert event.details["grantee_account_ids"] == [GAMMA] and event.cloud_request_ids
        step = steps.filter(has=page.locator("strong", has_text=re.compile(rf"^{re.escape(action)}$")))
        expect(step).to_have_count(1)
        for request_id in event.cloud_request_ids:
            expect(step).to_contain_text(request_id)
    page.screenshot(path=tmp_path / "4-timeline.png", full_page=True)

    # --- From outside the portal. -----------------------------------------------------------------
    source = share.source_image_id
    # One export task, alpha's, for delta alone; gamma's copy needed none.
    assert [(t.account_id, t.image_id) for t in cloud.world.tasks.values()] == [(ALPHA, source)]
    assert cloud.counters(ALPHA).get("CreateImageExportTask") == 1
    assert Export.objects.filter(shares=share).count() == 1
    # One UpdateImage added gamma, one took it away; nobody else touched the image's permissions.
    assert _update_image_answers(cloud, source) == [[GAMMA], []]
    assert cloud.counters(ALPHA).get("UpdateImage") == 2
    assert not cloud.counters(GAMMA).get("UpdateImage") and not cloud.counters(DELTA).get("UpdateImage")
    # The source image as OUTSCALE answers its owner: no recipient may launch it any more.
    [image] = oapi("alpha").ReadImages(Filters={"ImageIds": [source]})["Images"]
    assert image["PermissionsToLaunch"] == {"AccountIds": [], "GlobalPermission": False}
    # Each copy in its own account, available, named as asked, with the typed Description and the mark.
    for name, recipient in (("gamma", gamma_in), ("delta", delta_in)):
        [copy] = oapi(name).ReadImages(Filters={"ImageIds": [recipient.image_id]})["Images"]
        assert (copy["AccountId"], copy["ImageName"], copy["State"]) == (recipient.bound_account_id, COPY_NAME,
                                                                         "available")
        assert copy["Description"] == f"{TYPED} [from {source} {marks.mark(image_subject(recipient))}]"
        assert cloud.created(recipient.bound_account_id)["CreateImage"] == {COPY_NAME: 1}
