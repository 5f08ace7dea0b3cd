"""A team admin makes a service token in a real Chromium, copies it, uses it, then revokes it."""

import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from accounts.models import Role
from api.models import ApiToken
from tests import factories

pytestmark = pytest.mark.browser


@pytest.fixture
def admin(transactional_db):
    team = factories.make_team("Alpha")
    return factories.add_member(team, factories.make_user("admin@alpha.test"), Role.ADMIN).user


def _call(live_server, raw) -> int:
    request = urllib.request.Request(f"{live_server.url}/api/v1/accounts/", headers={"Authorization": f"Bearer {raw}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_admin_makes_copies_uses_and_revokes_a_service_token(page, live_server, sign_in, admin, tmp_path):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    sign_in(page, live_server, admin.email, factories.PASSWORD)
    page.get_by_role("navigation", name="Team").get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", level=1, name="API tokens")).to_be_visible()
    expect(page.get_by_role("heading", name="No API token yet")).to_be_visible()
    expect(page.get_by_role("link", name="Read the API reference")).to_have_attribute("href", "/api/v1/docs/")

    page.get_by_label("Name").fill("packer pipeline")
    page.get_by_label("Kind").select_option("service")
    page.get_by_label("Role").select_option("member")
    page.get_by_label("Expires after (days)").fill("30")
    page.get_by_role("button", name="Make token").click()

    expect(page.get_by_role("heading", level=1, name="Your new token packer pipeline")).to_be_visible()
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    raw = page.locator("#api-token").input_value()
    assert re.fullmatch(r"omi_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", raw)
    # The button's handler comes with a deferred script: under load the page can show the token
    # before it runs, and a click then does nothing (CI saw it once).
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("[data-copy-status]")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    page.screenshot(path=tmp_path / "token-created.png", full_page=True)
    assert _call(live_server, raw) == 200

    page.get_by_role("link", name="Done").click()
    token = ApiToken.objects.get()
    row = page.get_by_role("row").filter(has_text="packer pipeline")
    expect(row).to_contain_text(f"omi_{token.prefix}…")
    expect(row).to_contain_text("Team service")
    expect(row.locator("[data-state]")).to_have_text("Active")
    assert raw not in page.content()

    row.get_by_role("link", name="Revoke").click()
    expect(page.get_by_role("heading", level=1, name="Revoke packer pipeline?")).to_be_visible()
    page.get_by_role("button", name="Revoke token").click()
    expect(page.get_by_role("status")).to_contain_text("revoked: it no longer works")
    expect(page.get_by_role("row").filter(has_text="packer pipeline").locator("[data-state]")).to_contain_text(
        "Revoked")
    assert _call(live_server, raw) == 401
