"""Issue 18's browser proof: a family walked from its declaration to its second automatic release,
in a real Chromium, with a real worker process running every job against the sandbox.

A Platform member declares the family golden-web (images of alpha named golden-web-*); a Research
member finds it in the family directory and subscribes with gamma (its yes to every version:
nobody accepts each copy); a Platform approver, not the declarer, signs a standing approval for exactly
gamma on its page. Then, twice: a new image is made in alpha with alpha's own keys (a copy of its
web image under a new matching name, as a release pipeline would), "Scan now" finds it, and with
nobody asking or approving anything it is shared, copied into gamma and tagged there. The pages
show both versions with their shares, "Approved by standing approval N" on the share's page, the
latest copy in Research's view; gamma's ReadImages with the filter omiportal:latest=golden-web
finds the second copy only.
"""

import re

import django_rq
import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from distribution.models import FAMILY_TAG, LATEST_TAG, FamilyVersion, InventoryEntry, StandingApproval
from tests import factories, workers
from tests.transfer_world import image_id
from transfers.models import Recipient, Share

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FAMILY = "golden-web"
GAMMA = "333344445555"
GAMMA_CHOICE = f"gamma (eu-west-2, {GAMMA})"
# The worker looks a fifth of a second apart and ticks its reconciler every second; the family's
# own sweep stays at its default, so each version is found by the "Scan now" the test presses.
WORKER_PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 0.2, "OMIPORTAL_SWEEP_MAX_SECONDS": 0.5,
               "OMIPORTAL_RECONCILE_EVERY_SECONDS": 1, "OMIPORTAL_RECONCILE_GRACE_SECONDS": 2,
               "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 100, "OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY": 0.05,
               "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY": 0.2, "OMIPORTAL_SWEEP_BUDGET_SECONDS": 1,
               "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
# From "Scan now" to the copy tagged in gamma: a release, a launch permission, a copy, the tags.
RELEASE_S = 40


@pytest.fixture
def worker(flow, cloud, tmp_path):
    """One real worker process (with its scheduler) on this test's database, Redis and sandbox,
    started before the browser so that its start-up overlaps the forms; killed before the flush."""
    with open(tmp_path / "worker.log", "wb") as log:
        proc = workers.start_worker(workers.worker_env(
            cloud, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "worker-checkpoints", **WORKER_PACE), stdout=log)
        try:
            yield proc
        finally:
            workers.kill_tree(proc)


def _nav(page):
    return page.get_by_role("navigation", name="Team")


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))


def _new_image(cloud, oapi, wait_for, name: str) -> str:
    """A new version in alpha, made with alpha's keys: its web image copied under a new name."""
    gw = oapi("alpha")
    made = gw.CreateImage(SourceImageId=image_id(cloud, "alpha", "alpha-web-2025.01"), SourceRegionName="eu-west-2",
                          ImageName=name)["Image"]["ImageId"]
    wait_for(lambda: gw.ReadImages(Filters={"ImageIds": [made]})["Images"][0]["State"], lambda s: s == "available")
    return made


def _copy_tagged(number: int):
    """The version's copy in gamma, once it completed and its tags are no longer owed (else None)."""
    return InventoryEntry.objects.filter(version__number=number, version__family__name=FAMILY,
                                         account__account_id=GAMMA, family_tagged_at__isnull=False).first()


def _worker_looked(family) -> bool:
    """The worker's own first look at the family's account is over: claimed, and its job no longer
    queued or running. A version made before that look ends could be found by the worker rather
    than by "Scan now", which would then truthfully say it found nothing new."""
    family.refresh_from_db(fields=["last_scanned_at"])
    poll = django_rq.get_queue("poll")
    scans = [j for j in [*poll.get_job_ids(), *poll.started_job_registry.get_job_ids()]
             if j.startswith("family-scan-")]
    return family.last_scanned_at is not None and not scans


def _release(page, cloud, oapi, wait_for, number: int, image_name: str) -> InventoryEntry:
    """Make the image, press Scan now on the family's page (open already), wait for its copy in gamma."""
    made = _new_image(cloud, oapi, wait_for, image_name)
    page.get_by_role("button", name="Scan now").click()
    expect(page.get_by_role("status")).to_contain_text("1 new version of the families of alpha found.")
    row = page.locator(f'[data-versions] tr[data-version="{number}"]')
    expect(row).to_contain_text(image_name)
    expect(row).to_contain_text(made)
    entry = wait_for(lambda: _copy_tagged(number), lambda e: e is not None, timeout=RELEASE_S)
    version = FamilyVersion.objects.get(family__name=FAMILY, number=number)
    assert version.image_id == made and version.state == FamilyVersion.State.SHARED
    return entry


def test_a_family_goes_from_its_declaration_to_its_second_automatic_release(
        flow, cloud, oapi, worker, page, live_server, sign_in, wait_for, tmp_path):
    assert not flow.dest.auto_accept_incoming  # the subscription is Research's yes to every version
    family_heading = page.get_by_role("heading", level=1, name=FAMILY)

    # --- A Platform member declares the family. ---------------------------------------------------
    sign_in(page, live_server, flow.src_member.email, factories.PASSWORD)
    _nav(page).get_by_role("link", name="Distribution").click()
    expect(page.get_by_role("heading", level=1, name="Distribution")).to_be_visible()
    expect(page.locator("[data-families]")).to_contain_text("No family yet")
    page.get_by_role("link", name="Declare a family").click()
    page.get_by_label("Name", exact=True).fill(FAMILY)
    page.get_by_label("Description").fill("The hardened web image, every week.")
    page.get_by_label("Source account").select_option(label="alpha (eu-west-2)")
    expect(page.get_by_role("radio", name="Image name pattern")).to_be_checked()
    page.get_by_role("textbox", name="Image name pattern").fill(f"{FAMILY}-*")
    page.get_by_role("button", name="Declare the family").click()
    expect(family_heading).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(f"Family {FAMILY} declared")
    expect(page.locator("[data-versions]")).to_contain_text("No version found yet")
    family = flow.source.families.get()
    assert family.created_by == flow.src_member and family.name_pattern == f"{FAMILY}-*"
    family_url = page.url
    # A member may not sign: the approvals page says who does, without a button.
    page.locator("[data-approvals-link]").click()
    expect(page.locator("[data-no-active]")).to_contain_text(f"An approver of {flow.source.name} signs one.")
    expect(page.locator("[data-sign-link]")).to_have_count(0)
    page.screenshot(path=tmp_path / "1-declared.png", full_page=True)
    _sign_out(page)

    # --- A Research member subscribes with gamma, from the family directory. ----------------------
    sign_in(page, live_server, flow.dst_member.email, factories.PASSWORD)
    _nav(page).get_by_role("link", name="Distribution").click()
    page.locator(".heading").get_by_role("link", name="Family directory").click()
    listed = page.locator(f'[data-directory] tr[data-family="{family.public_id}"]')
    expect(listed).to_contain_text(flow.source.name)
    listed.get_by_role("link", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1, name="Subscribe a family")).to_be_visible()
    expect(page.get_by_label("Family")).to_have_value(str(family.public_id))
    page.get_by_label(GAMMA_CHOICE).check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("status")).to_contain_text(f"{flow.dest.name} subscribes {FAMILY}")
    expect(page.locator("[data-subscriptions]")).to_contain_text("gamma")
    _sign_out(page)

    # --- A Platform approver (not the declarer) signs a standing approval for gamma. --------------
    sign_in(page, live_server, flow.src_approver.email, factories.PASSWORD)
    page.goto(family_url)
    expect(page.locator("[data-family-subscriptions]")).to_contain_text(GAMMA)
    page.locator("[data-approvals-link]").click()
    page.locator("[data-sign-link]").click()
    expect(page.get_by_role("heading", level=1, name=f"Sign a standing approval for {FAMILY}")).to_be_visible()
    page.get_by_label("At most this many versions").fill("5")
    page.get_by_role("button", name="Review the recipients").click()
    signed_for = page.locator("[data-review] [data-recipients] tbody tr")
    expect(signed_for).to_have_count(1)
    expect(signed_for).to_contain_text("gamma")
    expect(signed_for).to_contain_text(flow.dest.name)
    expect(signed_for).to_contain_text(GAMMA)
    expect(signed_for).to_contain_text("eu-west-2")
    page.get_by_label("The third-party licences of this family's images allow their export to these accounts.").check()
    page.screenshot(path=tmp_path / "2-sign.png", full_page=True)
    page.get_by_role("button", name="Sign", exact=True).click()
    approval = StandingApproval.objects.get(family=family)
    assert approval.signed_by == flow.src_approver and approval.max_versions == 5
    assert list(approval.recipients.values_list("bound_account_id", "bound_region")) == [(GAMMA, "eu-west-2")]
    expect(page.get_by_role("status")).to_contain_text(
        f"Standing approval {approval.pk} signed: the next versions of {FAMILY} go to the 1 account listed.")
    active = page.locator(f'[data-active-approval="{approval.public_id}"]')
    expect(active.locator("[data-versions-used]")).to_have_text("0 of 5 released")
    _sign_out(page)

    # --- Two versions, each found by Scan now and released without any request. ------------------
    sign_in(page, live_server, flow.src_member.email, factories.PASSWORD)
    page.goto(family_url)
    # The next look of the worker's own is OMIPORTAL_FAMILY_SCAN_SECONDS (300) away: each version
    # below is found by the button.
    wait_for(lambda: _worker_looked(family), lambda looked: looked, timeout=RELEASE_S)
    first = _release(page, cloud, oapi, wait_for, 1, f"{FAMILY}-2026.01")
    page.reload()
    expect(page.locator('[data-versions] tr[data-version="1"]')).to_have_attribute("data-state", "shared")
    second = _release(page, cloud, oapi, wait_for, 2, f"{FAMILY}-2026.02")
    page.reload()
    for number in (1, 2):
        row = page.locator(f'[data-versions] tr[data-version="{number}"]')
        expect(row).to_have_attribute("data-state", "shared")
        expect(row).to_contain_text(f"Shared under standing approval {approval.pk}.")
        expect(row).to_contain_text(f"under standing approval {approval.pk}")
        expect(row.get_by_role("link", name="Completed")).to_be_visible()
    page.screenshot(path=tmp_path / "3-family-two-versions.png", full_page=True)
    # No request, no approval click: the system asked, the signer decided, once per version.
    shares = list(Share.objects.filter(family_version__family=family).order_by("requested_at"))
    assert [s.copy_name for s in shares] == [f"{FAMILY}-v1", f"{FAMILY}-v2"]
    for share in shares:
        assert (share.requested_by, share.decided_by, share.state) == (flow.src_member, flow.src_approver,
                                                                      Share.State.COMPLETED)
        assert AuditEvent.objects.get(action="share.requested", target_id=str(share.public_id)).actor_id is None
        assert AuditEvent.objects.get(action="share.approved", target_id=str(share.public_id)).actor_id is None
    assert AuditEvent.objects.filter(action="family_version.shared").count() == 2

    # The second version's share page says what approved it.
    page.locator('[data-versions] tr[data-version="2"]').get_by_role("link", name="Completed").click()
    expect(page).to_have_url(re.compile(rf"/shares/{shares[1].public_id}/$"))
    expect(page.locator("[data-share-state]")).to_have_text("Completed")
    expect(page.get_by_text(f"Approved by standing approval {approval.pk} (signed by "
                            f"{flow.src_approver.display_name} on ")).to_be_visible()
    recipient = Recipient.objects.get(share=shares[1])
    expect(page.locator(f'[data-recipient="{recipient.public_id}"] [data-field="image"]')).to_have_text(
        second.image_id)
    page.screenshot(path=tmp_path / "4-share.png", full_page=True)
    page.goto(family_url)
    page.locator("[data-approvals-link]").click()
    expect(page.locator("[data-versions-used]")).to_have_text("2 of 5 released")
    _sign_out(page)

    # --- Research sees where the latest copy is, and gamma's one filter finds only it. ------------
    sign_in(page, live_server, flow.dst_member.email, factories.PASSWORD)
    _nav(page).get_by_role("link", name="Distribution").click()
    page.locator("[data-subscriptions] tr", has_text=FAMILY).get_by_role("link", name="Open").click()
    expect(page.locator('[data-versions] tr[data-version="2"]')).to_contain_text(f"{FAMILY}-2026.02")
    page.get_by_role("link", name="Latest copy per account").click()
    expect(page.get_by_role("heading", level=1, name=f"Latest {FAMILY} in each account")).to_be_visible()
    latest_rows = page.locator("[data-latest-table] tbody tr")
    expect(latest_rows).to_have_count(1)
    expect(latest_rows).to_have_attribute("data-image", second.image_id)
    expect(latest_rows).to_contain_text("v2")
    expect(page.get_by_text(f'"Tags": ["{LATEST_TAG}={FAMILY}"]')).to_be_visible()
    page.screenshot(path=tmp_path / "5-latest.png", full_page=True)
    page.get_by_role("link", name="Every copy").click()
    copies = page.locator("[data-inventory] tbody tr")
    expect(copies).to_have_count(2)
    expect(page.locator(f'tr[data-copy="{second.image_id}"] [data-latest]')).to_be_visible()
    expect(page.locator(f'tr[data-copy="{first.image_id}"] [data-latest]')).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # the filters wrap
    page.screenshot(path=tmp_path / "6-inventory.png", full_page=True)

    answer = oapi("gamma").ReadImages(Filters={"Tags": [f"{LATEST_TAG}={FAMILY}"]})["Images"]
    assert [image["ImageId"] for image in answer] == [second.image_id]
    family_copies = oapi("gamma").ReadImages(Filters={"Tags": [f"{FAMILY_TAG}={FAMILY}"]})["Images"]
    assert sorted(image["ImageId"] for image in family_copies) == sorted([first.image_id, second.image_id])
    assert cloud.created(GAMMA)["CreateImage"] == {f"{FAMILY}-v1": 1, f"{FAMILY}-v2": 1}
