"""The transfer pages: sharing, approving, the inbox, share details with live progress, links."""

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from accounts.models import Role
from audit.models import AuditEvent
from tests import factories, workers
from tests.transfer_world import access, approve, image_id, make_transfer_world, request_share, sandbox_account
from transfers import errors, link_checks, selectors
from transfers.forms import RECIPIENT_NOT_LISTED
from transfers.models import Recipient, Share
from transfers.services.requests import ExternalRecipient
from transfers.views.decisions import APPROVED, APPROVED_IN_REGION, CANCELLED, REJECTED


@pytest.fixture
def w(cloud, db):
    return make_transfer_world(cloud)


def _url(name, team, **kwargs):
    return reverse(f"transfers:{name}", kwargs={"team_id": team.public_id, **kwargs})


def _share_url(name, share, team=None):
    return _url(name, team or share.team, share_id=share.public_id)


def _form(w, cloud, **changes):
    data = {"image_id": image_id(cloud, "alpha", "alpha-web-2025.01"), "recipients": [str(w.delta.public_id)],
            "copy_name": "web-copy", "description": "", "reason": "release 1.2", "licence_confirmed": "on"}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def _new_url(w):
    return _url("share-new", w.source) + f"?account={w.alpha.public_id}"


def _messages(response):
    return [str(m) for m in response.context["messages"]]


# --- Sharing ---------------------------------------------------------------------------------------


def test_it_first_asks_which_account_holds_the_image(w, client):
    client.force_login(w.src_member)
    response = client.get(_url("share-new", w.source))
    assert response.status_code == 200
    assert f'value="{w.alpha.public_id}"' in response.content.decode()


def test_the_share_form_shows_the_live_images_and_the_directory(w, cloud, client):
    closed = sandbox_account(cloud, factories.make_team("Closed"), "beta", incoming=False)
    client.force_login(w.src_member)
    page = client.get(_new_url(w)).content.decode()
    for text in ("alpha-web-2025.01", "alpha-db-base", "Ubuntu-24.04-2025.01.15-0", "owned", "public",
                 "Research", "delta", "us-east-2", "444455556666", str(w.gamma.public_id)):
        assert text in page
    assert str(closed.public_id) not in page
    assert f'name="recipients" value="{w.alpha.public_id}"' not in page


def test_a_cloud_error_on_the_image_list_is_a_friendly_message(w, cloud, client, settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {r: {"api": "http://127.0.0.1:9/api/v1", "oos": "http://127.0.0.1:9"}
                                             for r in settings.OMIPORTAL_OUTSCALE_ENDPOINTS}
    client.force_login(w.src_member)
    response = client.get(_new_url(w))
    assert response.status_code == 200
    assert "could not be read from OUTSCALE" in response.content.decode()


def test_a_valid_request_creates_a_share_and_shows_it(w, cloud, client):
    client.force_login(w.src_member)
    response = client.post(_new_url(w), _form(w, cloud, external_account_1="123456789012",
                                              external_region_1="eu-west-2"))
    share = Share.objects.get()
    assert response.status_code == 302
    assert response["Location"] == _share_url("share-detail", share)
    assert share.state == Share.State.REQUESTED and share.requested_by == w.src_member
    assert {r.kind for r in share.recipients.all()} == {"team", "external"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"recipients": None}, errors.NO_RECIPIENT),
    ({"licence_confirmed": None}, errors.LICENCE_REQUIRED),
    ({"copy_name": "no*stars"}, "letters"),
    ({"recipients": "random"}, RECIPIENT_NOT_LISTED),
    ({"recipients": "closed"}, RECIPIENT_NOT_LISTED),
    ({"recipients": "source"}, errors.SOURCE_AS_RECIPIENT),
    ({"recipients": None, "external_account_1": "111122223333", "external_region_1": "eu-west-2"},
     errors.SOURCE_AS_RECIPIENT),
    ({"external_account_1": "12345"}, errors.EXTERNAL_ID),
])
def test_bad_input_is_refused_on_the_form_and_nothing_is_created(w, cloud, client, changes, message):
    closed = sandbox_account(cloud, factories.make_team("Closed"), "beta", incoming=False)
    picks = {"random": str(uuid.uuid4()), "closed": str(closed.public_id), "source": str(w.alpha.public_id)}
    if changes.get("recipients") in picks:
        changes = {**changes, "recipients": [picks[changes["recipients"]]]}
    client.force_login(w.src_member)
    response = client.post(_new_url(w), _form(w, cloud, **changes))
    assert response.status_code == 400
    assert escape(message) in response.content.decode()
    assert not Share.objects.exists() and not Recipient.objects.exists()


def test_a_service_refusal_is_shown_on_the_form(w, cloud, client):
    # The copy name is looked up in the team's own accounts only (another team's keys are its own; INS-09).
    epsilon = sandbox_account(cloud, w.source, "epsilon")
    client.force_login(w.src_member)
    response = client.post(_new_url(w), _form(w, cloud, copy_name="epsilon-secure-base",
                                              recipients=[str(epsilon.public_id)]))
    assert response.status_code == 400
    assert "already exists in epsilon" in response.content.decode()
    assert not Share.objects.exists()


def test_an_account_of_another_team_cannot_be_the_source(w, client):
    client.force_login(w.src_member)
    response = client.get(_url("share-new", w.source) + f"?account={w.delta.public_id}")
    assert response.status_code == 404


# --- Approvals -------------------------------------------------------------------------------------


def test_the_approvals_queue_lists_requests_for_approvers(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_approver)
    page = client.get(_url("approval-list", w.source)).content.decode()
    assert "web-copy" in page and "release 1.2" in page and _share_url("share-detail", share) in page
    assert "delta (us-east-2) of Research" in page


def test_an_approver_approves_from_the_share_page(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_approver)
    page = client.get(_share_url("share-detail", share)).content.decode()
    assert _share_url("share-approve", share) in page and share.digest in page
    response = client.post(_share_url("share-approve", share), {"digest": share.digest, "comment": "fine"},
                           follow=True)
    assert APPROVED.format(image="alpha-web-2025.01") in _messages(response)
    share.refresh_from_db()
    assert share.state == Share.State.EXPORTING and share.decided_by == w.src_approver
    assert share.decision_comment == "fine"


def test_approving_a_share_within_the_region_says_no_export_starts(w, cloud, client):
    share = request_share(w, cloud, accounts=[w.gamma])  # alpha's Region: a copy by launch permission
    client.force_login(w.src_approver)
    response = client.post(_share_url("share-approve", share), {"digest": share.digest}, follow=True)
    assert _messages(response) == [APPROVED_IN_REGION.format(image="alpha-web-2025.01")]
    share.refresh_from_db()
    assert share.state == Share.State.APPROVED and share.export is None


def test_the_requester_sees_no_approve_form_and_cannot_approve(w, cloud, client):
    share = request_share(w, cloud, requester=w.src_approver)
    client.force_login(w.src_approver)
    page = client.get(_share_url("share-detail", share)).content.decode()
    assert _share_url("share-approve", share) not in page
    assert "another approver" in page
    response = client.post(_share_url("share-approve", share), {"digest": share.digest}, follow=True)
    assert errors.SELF_APPROVAL in _messages(response)
    assert Share.objects.get(pk=share.pk).state == Share.State.REQUESTED


def test_a_second_approval_is_told_the_share_moved_on(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_approver)
    client.post(_share_url("share-approve", share), {"digest": share.digest})
    client.force_login(w.src_admin)
    response = client.post(_share_url("share-approve", share), {"digest": share.digest}, follow=True)
    assert errors.MOVED_ON.format(state="exporting") in _messages(response)
    assert Share.objects.get(pk=share.pk).decided_by == w.src_approver


def test_a_stale_digest_is_refused(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_approver)
    response = client.post(_share_url("share-approve", share), {"digest": "0" * 64}, follow=True)
    assert errors.STALE_DIGEST in _messages(response)


def test_an_approver_rejects(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_approver)
    response = client.post(_share_url("share-reject", share), {"digest": share.digest, "comment": "no"},
                           follow=True)
    assert REJECTED.format(image="alpha-web-2025.01") in _messages(response)
    assert Share.objects.get(pk=share.pk).state == Share.State.REJECTED
    assert set(share.recipients.values_list("state", flat=True)) == {"cancelled"}


def test_the_requester_cancels(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_member)
    assert _share_url("share-cancel", share) in client.get(_share_url("share-detail", share)).content.decode()
    response = client.post(_share_url("share-cancel", share), follow=True)
    assert CANCELLED.format(image="alpha-web-2025.01") in _messages(response)
    assert Share.objects.get(pk=share.pk).state == Share.State.CANCELLED


def test_an_approver_cannot_act_on_a_share_through_a_recipient_team(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.dst_approver)
    response = client.post(_share_url("share-approve", share, team=w.dest), {"digest": share.digest})
    assert response.status_code == 404
    assert Share.objects.get(pk=share.pk).state == Share.State.REQUESTED


# --- Share pages -----------------------------------------------------------------------------------


def test_the_share_page_is_hidden_from_unrelated_teams_and_shown_to_recipients(w, cloud, client):
    share = request_share(w, cloud, accounts=[w.delta, w.gamma])  # two recipient rows of one team
    stranger = factories.make_team("Stranger")
    outsider = factories.add_member(stranger, factories.make_user("x@stranger.test"), Role.ADMIN).user
    client.force_login(outsider)
    assert client.get(_share_url("share-detail", share, team=stranger)).status_code == 404
    assert client.get(_share_url("share-progress", share, team=stranger)).status_code == 404
    assert AuditEvent.objects.filter(action="access.denied", actor_id=outsider.pk,
                                     target_id=str(share.public_id)).exists()
    client.force_login(w.dst_member)
    response = client.get(_share_url("share-detail", share, team=w.dest))
    assert response.status_code == 200
    assert "alpha-web-2025.01" in response.content.decode()
    assert _share_url("share-approve", share) not in response.content.decode()


def test_the_share_page_shows_the_timeline_and_polls_for_progress(w, cloud, client):
    share = approve(w, request_share(w, cloud))
    client.force_login(w.src_member)
    page = client.get(_share_url("share-detail", share)).content.decode()
    for action in ("share.requested", "share.approved", "export.requested"):
        assert action in page
    assert "js/share-progress.js" in page and _share_url("share-progress", share) in page
    assert "<script>" not in page and " style=" not in page
    data = client.get(_share_url("share-progress", share)).json()
    assert data["state"] == "exporting" and data["export"]["progress"] == 0 and not data["final"]
    assert [r["state"] for r in data["recipients"]] == ["waiting"]


def test_the_progress_poll_reads_the_share_its_export_and_the_recipients_seen_with_nothing_joined(w, cloud, client):
    # The poll is the most frequent request: its two queries join only what the JSON shows.
    share = approve(w, request_share(w, cloud, accounts=[w.delta, w.gamma]))
    Recipient.objects.filter(share=share, target_account=w.gamma).update(team=factories.make_team("Other"))
    tables = re.compile(r'(?:FROM|JOIN) "(\w+)"')
    for team, seen in ((w.source, 2), (w.dest, 1)):  # a recipient team sees its own rows only
        acting = access(w.src_member if team == w.source else w.dst_member, team)
        with CaptureQueriesContext(connection) as queries:
            got, recipients = selectors.share_progress_for_user(access=acting, public_id=share.public_id)
        assert got == share and got.export is not None and len(recipients) == seen
        read = [set(tables.findall(q["sql"])) for q in queries.captured_queries]
        assert read == [{"transfers_share", "transfers_export", "transfers_recipient"}, {"transfers_recipient"}]
    client.force_login(w.dst_member)
    data = client.get(_share_url("share-progress", share, team=w.dest)).json()
    assert [r["id"] for r in data["recipients"]] == [
        str(r.public_id) for r in Recipient.objects.filter(share=share, team=w.dest)]

def test_the_share_page_reads_its_share_and_what_it_shows_of_it_in_one_query(w, cloud):
    # Unlike the poll, the page shows the team, the source account, the requester, the decider and
    # the export: read with the share, not one query each.
    share = approve(w, request_share(w, cloud))
    acting = access(w.src_member, w.source)
    with CaptureQueriesContext(connection) as queries:
        got = selectors.share_get_for_user(access=acting, public_id=share.public_id)
        shown = (got.team.name, got.source_account.label, got.requested_by.email, got.decided_by.email, got.export)
    assert all(shown) and len(queries) == 1

def test_the_outgoing_list_filters_by_state(w, cloud, client):
    kept = request_share(w, cloud)
    gone = request_share(w, cloud, copy_name="other-copy")
    client.force_login(w.src_member)
    client.post(_share_url("share-cancel", gone))
    page = client.get(_url("share-list", w.source) + "?state=requested").content.decode()
    assert _share_url("share-detail", kept) in page and _share_url("share-detail", gone) not in page


def test_the_dashboard_shows_shares_in_flight_and_the_weekly_chart(w, cloud, client):
    share = approve(w, request_share(w, cloud))
    client.force_login(w.src_member)
    page = client.get(reverse("transfers:dashboard", kwargs={"team_id": w.source.public_id})).content.decode()
    assert "In flight" in page and _share_url("share-detail", share) in page
    assert "<svg" in page and "Copies per week" in page and 'class="bar"' in page


def test_the_dashboard_lists_what_needs_an_approvers_action(w, cloud, client):
    share = request_share(w, cloud)
    client.force_login(w.src_approver)
    page = client.get(reverse("transfers:dashboard", kwargs={"team_id": w.source.public_id})).content.decode()
    assert "Waiting for approval" in page and _share_url("share-detail", share) in page


def test_empty_pages_say_what_to_do_next(w, client):
    client.force_login(w.src_member)
    dashboard = client.get(reverse("transfers:dashboard", kwargs={"team_id": w.source.public_id})).content.decode()
    assert "Nothing in flight" in dashboard and _url("share-new", w.source) in dashboard
    assert "No share yet" in client.get(_url("share-list", w.source)).content.decode()
    assert "Nothing shared with" in client.get(_url("inbox", w.source)).content.decode()
    client.force_login(w.src_approver)
    assert "Nothing waits for approval" in client.get(_url("approval-list", w.source)).content.decode()


# --- Incoming --------------------------------------------------------------------------------------


def test_another_team_cannot_answer_a_recipient(w, cloud, client):
    share = request_share(w, cloud)
    recipient = share.recipients.get()
    client.force_login(w.src_member)
    assert client.post(_url("recipient-accept", w.source, recipient_id=recipient.public_id)).status_code == 404


def test_an_offer_not_yet_ready_cannot_be_accepted(w, cloud, client):
    share = request_share(w, cloud)
    recipient = share.recipients.get()
    client.force_login(w.dst_member)
    response = client.post(_url("recipient-accept", w.dest, recipient_id=recipient.public_id), follow=True)
    assert errors.NOT_OFFERED.format(state="waiting for the export") in _messages(response)


def test_a_pasted_foreign_link_is_refused_without_being_echoed(w, client):
    client.force_login(w.dst_member)
    secret = "https://evil.example.com/bucket/manifest.json?X-Amz-Signature=" + "a" * 64
    response = client.post(_url("link-import", w.dest), {"url": secret, "account": str(w.delta.public_id),
                                                         "image_name": "pasted-copy"})
    page = response.content.decode()
    assert response.status_code == 400
    assert escape(link_checks.MSG_FOREIGN_HOST) in page
    assert "evil.example.com" not in page and "a" * 64 not in page
    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "no-referrer"
    assert not Recipient.objects.exists()


def test_the_link_import_page_is_never_cached(w, client):
    client.force_login(w.dst_member)
    response = client.get(_url("link-import", w.dest))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "no-referrer"


# --- The whole flow, with real jobs -----------------------------------------------------------------


def _state(share):
    return Share.objects.get(pk=share.pk).state


@pytest.mark.django_db(transaction=True)
def test_a_recipient_accepts_from_the_inbox_and_the_copy_completes(flow, cloud, client):
    share = request_share(flow, cloud, externals=[ExternalRecipient("123456789012", "eu-west-2")])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    team_recipient = share.recipients.get(kind=Recipient.Kind.TEAM)
    external = share.recipients.get(kind=Recipient.Kind.EXTERNAL)

    client.force_login(flow.dst_member)
    inbox = client.get(_url("inbox", flow.dest)).content.decode()
    assert "web-copy" in inbox and "left" in inbox
    assert _url("recipient-accept", flow.dest, recipient_id=team_recipient.public_id) in inbox
    response = client.post(_url("recipient-accept", flow.dest, recipient_id=team_recipient.public_id))
    assert response.status_code == 302
    assert Recipient.objects.get(pk=team_recipient.pk).state == Recipient.State.IMPORTING

    client.force_login(flow.src_member)
    reveal = client.post(_url("share-reveal-link", flow.source, share_id=share.public_id,
                              recipient_id=external.public_id))
    assert reveal.status_code == 200
    assert "no-store" in reveal["Cache-Control"] and reveal["Referrer-Policy"] == "no-referrer"
    assert "X-Amz-Signature" in reveal.content.decode() and "js/copy-link.js" in reveal.content.decode()
    assert AuditEvent.objects.filter(action="link.revealed", target_id=str(share.public_id)).exists()

    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)
    progress = client.get(_share_url("share-progress", share))
    assert progress.json()["final"] is True
    assert "http" not in progress.content.decode() and "X-Amz" not in progress.content.decode()
    done = Recipient.objects.get(pk=team_recipient.pk)
    page = client.get(_share_url("share-detail", share)).content.decode()
    assert done.image_id in page and "import.completed" in page
    dashboard = client.get(reverse("transfers:dashboard", kwargs={"team_id": flow.source.public_id}))
    assert 'fill="#12805c"' in dashboard.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_failed_export_can_be_exported_again_from_the_share_page(flow, cloud, client):
    share = approve(flow, request_share(flow, cloud, image="alpha-legacy-broken"))
    workers.run_jobs(until=lambda: _state(share) == Share.State.FAILED)
    client.force_login(flow.src_member)
    page = client.get(_share_url("share-detail", share)).content.decode()
    assert _share_url("share-reexport", share) in page
    response = client.post(_share_url("share-reexport", share))
    assert response.status_code == 302
    assert _state(share) == Share.State.EXPORTING


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_share_page_follows_the_export_live_in_a_browser(flow, cloud, page, live_server, sign_in):
    from playwright.sync_api import expect

    share = approve(flow, request_share(flow, cloud))
    sign_in(page, live_server, flow.src_member.email, factories.PASSWORD)
    page.goto(live_server.url + _share_url("share-detail", share))
    expect(page.locator("[data-share-state]")).to_have_text("Exporting")
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    # No reload: share-progress.js polls and updates the page (any CSP violation fails the test).
    expect(page.locator("[data-share-state]")).to_have_text("Ready for recipients", timeout=10_000)
    expect(page.locator('[data-field="state"]').first).to_have_text("Offered")
    expect(page.locator("[data-countdown]")).to_contain_text("left")
    expect(page.locator("[data-reload-hint]")).to_be_visible()
