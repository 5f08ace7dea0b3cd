"""A team admin manages cloud accounts in a real Chromium, against the live portal and the sandbox."""

import re

import pytest
from playwright.sync_api import expect

from accounts.models import CloudAccount, Role
from tests import factories

pytestmark = pytest.mark.browser

WRONG_SECRET = "W" * 40
ALPHA_ACCOUNT_ID = "111122223333"


@pytest.fixture
def admin(transactional_db):
    team = factories.make_team("Alpha")
    return factories.add_member(team, factories.make_user("admin@alpha.test"), Role.ADMIN).user


def test_an_admin_adds_an_account_sees_it_validated_then_sees_a_wrong_secret_refused(
    page, live_server, sign_in, cloud, admin, tmp_path
):
    keys = cloud.account("alpha")
    sign_in(page, live_server, admin.email, factories.PASSWORD)

    # The dashboard of a team without accounts invites the admin to add one.
    expect(page.get_by_role("heading", level=1, name="Alpha")).to_be_visible()
    expect(page.get_by_text("No OUTSCALE account yet.")).to_be_visible()

    nav = page.get_by_role("navigation", name="Team")
    nav.get_by_role("link", name="Cloud accounts").click()
    expect(page.get_by_role("heading", level=1, name="Cloud accounts")).to_be_visible()
    expect(page.get_by_role("heading", name="No cloud account yet")).to_be_visible()
    page.get_by_role("link", name="Add a cloud account").click()

    expect(page.get_by_role("heading", level=1, name="Add a cloud account")).to_be_visible()
    page.get_by_label("Label").fill("prod")
    page.get_by_label("Region").select_option(keys["region"])
    page.get_by_label("Access key id").fill(keys["access_key"])
    page.get_by_label("Secret key").fill(keys["secret_key"])
    page.get_by_label("Export bucket").fill(keys["bucket"])
    page.get_by_label("Accept images shared by other teams").check()
    page.get_by_role("button", name="Save account").click()

    expect(page).to_have_url(re.compile(r"/accounts/$"))
    expect(page.get_by_role("status")).to_contain_text(f"validated: OUTSCALE account {ALPHA_ACCOUNT_ID}")
    row = page.get_by_role("row").filter(has_text="prod")
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell").nth(2)).to_have_text(ALPHA_ACCOUNT_ID)
    expect(row.locator(".status")).to_have_text("Valid")
    expect(page.get_by_text(keys["secret_key"])).to_have_count(0)
    page.screenshot(path=tmp_path / "accounts-list.png", full_page=True)

    # A wrong secret is saved, refused by OUTSCALE and shown on the account's form.
    row.get_by_role("link", name="Edit").click()
    expect(page.get_by_role("heading", level=1, name="Edit prod")).to_be_visible()
    page.get_by_label("Access key id").fill(keys["access_key"])
    page.get_by_label("Secret key").fill(WRONG_SECRET)
    page.get_by_role("button", name="Save changes").click()

    account = CloudAccount.objects.get(label="prod")
    expect(page).to_have_url(re.compile(rf"/accounts/{account.public_id}/edit/$"))
    refusal = page.get_by_role("alert").filter(has_text="OUTSCALE refused these keys")
    expect(refusal).to_contain_text("OUTSCALE refused these keys")
    account.refresh_from_db()
    assert account.validation_status == CloudAccount.Validation.INVALID and account.validation_message
    expect(refusal).to_contain_text(account.validation_message)
    expect(page.get_by_text(WRONG_SECRET)).to_have_count(0)
    expect(page.get_by_label("Secret key")).to_have_value("")
    page.screenshot(path=tmp_path / "refused-keys.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


def test_a_wrong_password_shows_the_form_error(page, live_server, sign_in, admin):
    sign_in(page, live_server, admin.email, "not the password", succeed=False)
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct email and password")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
