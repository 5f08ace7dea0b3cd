"""An external recipient's panel in a real Chromium: the member asks for a copy to an external
account of the source's Region with its OOS user ID, and once the grant is made, the share page
shows the path and the commands; each Copy button puts its own command on the clipboard and says
so beside itself."""

import re

import pytest
from playwright.sync_api import expect

from tests import factories, workers
from tests.transfer_world import access, approve
from transfers import delivery
from transfers.models import Recipient, Share

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BETA = "222233334444"


def test_the_member_names_the_oos_user_id_and_copies_the_commands(flow, cloud, page, live_server, sign_in,
                                                                   tmp_path):
    user_id = cloud.account("beta")["canonical_id"]
    sign_in(page, live_server, flow.src_member.email, factories.PASSWORD)
    page.goto(f"{live_server.url}/t/{flow.source.public_id}/shares/new/?account={flow.alpha.public_id}")
    page.get_by_label("alpha-web-2025.01", exact=True).check()
    page.locator("[name=external_account_1]").fill(BETA)
    page.locator("[name=external_region_1]").select_option("eu-west-2")
    page.locator("[name=external_oos_user_1]").fill(user_id)
    page.get_by_label("Name of the copy").fill("web-copy")
    page.get_by_label("Reason").fill("For our partner.")
    page.get_by_label("I confirm that the image's third-party licences allow exporting it.").check()
    page.get_by_role("button", name="Ask for the copy").click()
    expect(page.locator("[data-oos-user-id]")).to_have_text(user_id)

    share = Share.objects.get(copy_name="web-copy")
    assert share.recipients.get().method == Recipient.Method.OBJECT_ACL
    approve(flow, share)
    workers.run_jobs(until=lambda: share.recipients.get().acl_granted_at is not None)
    share = Share.objects.select_related("export__account").get(pk=share.pk)

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.reload()
    panel = page.locator(f'[data-delivery="{share.recipients.get().public_id}"]')
    expect(panel).to_be_visible()
    page.screenshot(path=tmp_path / "external-delivery.png", full_page=True)
    aws = panel.locator('[data-command="aws"]')
    [shown] = delivery.share_deliveries(access=access(flow.src_member, flow.source), share=share,
                                        recipients=list(share.recipients.all()))
    expected = next(c.text for c in shown.commands if c.tool == "aws")
    expect(aws).to_have_value(expected)

    button = panel.locator(f'[data-copy-target="{aws.get_attribute("id")}"]')
    button.click()
    status = button.locator("xpath=following-sibling::*[@data-copy-status]")
    expect(status).to_have_text(re.compile("Copied|Select the text"))
    if status.inner_text() == "Copied.":
        assert page.evaluate("navigator.clipboard.readText()") == expected
    # Only the status beside the button that was clicked speaks.
    others = panel.locator("[data-copy-status]")
    assert [others.nth(i).inner_text() for i in range(others.count())].count("") == others.count() - 1
