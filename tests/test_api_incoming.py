"""The receiving side of the API (api/views/incoming.py): the inbox, answering an offer, retrying,
and importing from a pasted link, whose URL never comes back out. Against the sandbox."""

import json
import logging
import re
from datetime import timedelta

import pytest
from django.utils import timezone

import outscale
from accounts.models import CloudAccount
from api.models import IdempotentRequest
from audit.models import AuditEvent
from tests.test_api_shares import request_share, share_world
from tests.transfer_world import access
from transfers import errors
from transfers.forms import ACCOUNT_NOT_LISTED
from transfers.models import Recipient, Share
from transfers.services import import_offers
from transfers.views.incoming import ACCEPTED, DECLINED, LINK_IMPORT_STARTED, RETRIED

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def shares(world, cloud, api):
    return share_world(world, cloud, api)


def offered(s, **changes) -> Recipient:
    """Beta's copy of an Alpha share, offered: approved, its export done (as the sweep leaves it)."""
    body = request_share(s, **changes)
    share = Share.objects.get(public_id=body["id"])
    Share.objects.filter(pk=share.pk).update(state=Share.State.READY, decided_by=s.world.approver,
                                             decided_at=timezone.now())
    Recipient.objects.filter(share=share).update(state=Recipient.State.OFFERED)
    return Recipient.objects.get(share=share)


def signed_link(s) -> str:
    """A pre-signed manifest link of the sandbox's OOS, signed as OUTSCALE's are (a bearer secret)."""
    delta = s.cloud.account("delta")
    creds = outscale.Credentials(access_key=delta["access_key"], secret_key=delta["secret_key"], region=delta["region"])
    return outscale.presign_manifest(creds=creds, bucket=delta["bucket"], key="export/ami-1/manifest.json",
                                     not_after=timezone.now() + timedelta(days=2)).url


def expired(url: str) -> str:
    """The same link, as signed eight days ago (its signature no longer matches; its expiry is what is read)."""
    date = re.search(r"X-Amz-Date=(\d{8})T(\d{6})Z", url)
    then = (timezone.now() - timedelta(days=8)).strftime("%Y%m%d")
    return url.replace(f"X-Amz-Date={date[1]}T", f"X-Amz-Date={then}T").replace(f"%2F{date[1]}%2F", f"%2F{then}%2F")


# --- The inbox --------------------------------------------------------------------------------------------


def test_the_inbox_lists_what_the_team_receives(shares):
    recipient = offered(shares)
    client = shares.api.client(shares.world.outsider)
    body = client.get("/api/v1/incoming/").json()
    [row] = body["results"]
    assert row["id"] == str(recipient.public_id) and row["state"] == "offered" and row["can_answer"]
    assert row["share"] == str(recipient.share.public_id) and row["source_team"] == "Alpha"
    assert row["account"] == str(shares.delta.public_id) and row["image_name"] == "web-copy"
    assert client.get("/api/v1/incoming/", {"state": "completed"}).json()["results"] == []
    assert client.get(f"/api/v1/incoming/{recipient.public_id}/").json()["id"] == str(recipient.public_id)
    # The source team's own inbox does not list what it sends.
    assert shares.api.client(shares.world.member).get("/api/v1/incoming/").json()["results"] == []


def test_another_teams_copy_is_a_recorded_404(shares):
    recipient = offered(shares)
    client = shares.api.client(shares.world.admin)  # Alpha sent it; only Beta receives it
    for response in (client.get(f"/api/v1/incoming/{recipient.public_id}/"),
                     client.post(f"/api/v1/incoming/{recipient.public_id}/accept/")):
        assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert AuditEvent.objects.filter(action="access.denied", details__reason="not_found_in_team",
                                     details__via__id=str(client.token.public_id)).count() == 2
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.OFFERED


# --- Answering ------------------------------------------------------------------------------------------


def test_a_member_accepts_an_offer(shares, django_capture_on_commit_callbacks):
    recipient = offered(shares)
    client = shares.api.client(shares.world.outsider, kind="service")
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(f"/api/v1/incoming/{recipient.public_id}/accept/")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == ACCEPTED.format(name="web-copy", account="delta")
    assert body["state"] == "importing" and not body["can_answer"]
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.IMPORTING
    assert callbacks, "the import's start was not queued"
    event = AuditEvent.objects.get(action="import.accepted")
    assert event.details["via"]["kind"] == "service"


def test_a_second_answer_is_refused_in_the_service_s_words(shares):
    recipient = offered(shares)
    client = shares.api.client(shares.world.outsider)
    assert client.post(f"/api/v1/incoming/{recipient.public_id}/accept/").status_code == 200
    response = client.post(f"/api/v1/incoming/{recipient.public_id}/decline/", {"reason": "changed my mind"})
    assert response.status_code == 422 and response.json()["code"] == "refused"
    assert response.json()["detail"] == errors.NOT_OFFERED.format(state="importing")


def test_a_member_declines_with_a_reason(shares):
    recipient = offered(shares)
    response = shares.api.client(shares.world.outsider).post(f"/api/v1/incoming/{recipient.public_id}/decline/",
                                                              {"reason": "not needed"})
    assert response.status_code == 200 and response.json()["message"] == DECLINED.format(name="web-copy")
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.DECLINED and recipient.decline_reason == "not needed"
    too_long = shares.api.client(shares.world.outsider).post(f"/api/v1/incoming/{recipient.public_id}/decline/",
                                                             {"reason": "x" * 501})
    assert too_long.status_code == 400 and "reason" in too_long.json()["errors"]


def test_an_offer_to_an_account_changed_since_the_approval_fails_and_the_failure_stays(shares):
    """The service fails the import and records the refusal outside its transaction, then raises:
    the API answers 422 and keeps both, as the page does (api/views/answers.py)."""
    recipient = offered(shares)
    CloudAccount.objects.filter(pk=shares.delta.pk).update(account_id="999999999999")
    client = shares.api.client(shares.world.outsider)
    response = client.post(f"/api/v1/incoming/{recipient.public_id}/accept/", key="accept-1")
    assert response.status_code == 422
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.FAILED and recipient.state_message == response.json()["detail"]
    assert AuditEvent.objects.filter(action="import.refused", details__via__id=str(client.token.public_id)).exists()
    assert not IdempotentRequest.objects.filter(key="accept-1").exists()


def test_a_failed_import_is_retried(shares):
    recipient = offered(shares)
    import_offers.recipient_accept(access=access(shares.world.outsider, shares.world.beta), recipient=recipient)
    Recipient.objects.filter(pk=recipient.pk).update(state=Recipient.State.FAILED, state_message="disk corrupt")
    Share.objects.filter(pk=recipient.share_id).update(state=Share.State.FAILED)
    from transfers.models import Export

    Export.objects.create(account=shares.source, source_image_id=shares.web, state="completed", bucket="b",
                          prefix="p/", manifest_deadline=timezone.now() + timedelta(days=3))
    Share.objects.filter(pk=recipient.share_id).update(export=Export.objects.get())
    client = shares.api.client(shares.world.outsider)
    assert client.get(f"/api/v1/incoming/{recipient.public_id}/").json()["can_retry"]
    response = client.post(f"/api/v1/incoming/{recipient.public_id}/retry/")
    assert response.status_code == 200 and response.json()["message"] == RETRIED.format(name="web-copy")
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.IMPORTING and recipient.attempt == 2


def test_an_auditor_token_cannot_answer(shares):
    from tests import factories

    recipient = offered(shares)
    auditor = factories.add_member(shares.world.beta, factories.make_user("auditor@beta.test"), "auditor").user
    client = shares.api.client(auditor)
    response = client.post(f"/api/v1/incoming/{recipient.public_id}/accept/")
    assert response.status_code == 403
    assert AuditEvent.objects.get(action="access.denied", details__via__id=str(client.token.public_id)) \
        .details["reason"] == "missing_role"


# --- Importing from a pasted link -------------------------------------------------------------------------


def test_a_pasted_link_starts_an_import_and_never_comes_back(shares, caplog):
    caplog.set_level(logging.DEBUG)
    url = signed_link(shares)
    client = shares.api.client(shares.world.member)
    account = str(shares.source.public_id)
    response = client.post("/api/v1/link-imports/", {"account": account, "url": url, "image_name": "pasted-web"})
    assert response.status_code == 201, response.content
    body = response.json()
    recipient = Recipient.objects.get(public_id=body["id"])
    assert response["Location"] == f"http://testserver/api/v1/incoming/{recipient.public_id}/"
    assert body["kind"] == "link" and body["state"] == "importing" and body["method"] == "link"
    assert body["message"] == LINK_IMPORT_STARTED.format(name="pasted-web", account="alpha")
    assert recipient.link_sealed and url not in recipient.link_sealed
    _never_shown(url, [response, client.get(f"/api/v1/incoming/{recipient.public_id}/"),
                       client.get("/api/v1/incoming/")], caplog)


def test_a_refused_link_is_never_echoed(shares, caplog):
    caplog.set_level(logging.DEBUG)
    url = signed_link(shares)
    client = shares.api.client(shares.world.member)
    account = str(shares.source.public_id)
    foreign = "https://oos.evil.example/bucket/manifest.json?" + url.split("?", 1)[1]
    old = expired(url)
    body = {"account": account, "url": url, "image_name": "pasted-web"}
    answers = {
        "bad name": (client.post("/api/v1/link-imports/", {**body, "image_name": "x"}), 400),
        "foreign host": (client.post("/api/v1/link-imports/", {**body, "url": foreign}), 400),
        "another team's account": (client.post("/api/v1/link-imports/",
                                               {**body, "account": str(shares.delta.public_id)}), 404),
        "not a string": (client.post("/api/v1/link-imports/", {**body, "url": [url]}), 400),
        "no key": (client.post("/api/v1/link-imports/", body, key=None), 400),
        "name taken": (client.post("/api/v1/link-imports/", {**body, "image_name": "alpha-web-2025.01"}), 422),
        "not JSON": (client._client.post("/api/v1/link-imports/", '{"url": "' + url + '", ',
                                         content_type="application/json", headers={"Idempotency-Key": "k"}), 400),
        "expired": (client.post("/api/v1/link-imports/", {**body, "url": old}), 400),
    }
    for case, (response, status) in answers.items():
        assert response.status_code == status, (case, response.content)
        assert response["Content-Type"] == PROBLEM, case
    assert answers["name taken"][0].json()["detail"] == errors.NAME_TAKEN.format(name="alpha-web-2025.01",
                                                                                 label="alpha")
    assert answers["bad name"][0].json()["errors"]["image_name"]
    assert answers["expired"][0].json()["errors"]["url"][0].startswith("This link expired at")
    assert "OOS" in answers["foreign host"][0].json()["errors"]["url"][0]
    assert not Recipient.objects.exists()
    _never_shown(url, [response for response, _ in answers.values()], caplog, also=[foreign, old])


def test_the_account_must_be_one_the_page_would_list(shares):
    CloudAccount.objects.filter(pk=shares.source.pk).update(validation_status="invalid")
    response = shares.api.client(shares.world.member).post("/api/v1/link-imports/", {
        "account": str(shares.source.public_id), "url": signed_link(shares), "image_name": "pasted-web"})
    assert response.status_code == 404  # the page's form lists only validated accounts
    assert ACCOUNT_NOT_LISTED not in response.content.decode()


def _never_shown(url, responses, caplog, also=()):
    secrets = [url, url.split("?", 1)[1], *(a for a in also if a)]
    signature = next(part for part in url.split("&") if "Signature=" in part).split("=", 1)[1]
    secrets.append(signature)
    for response in responses:
        shown = response.content.decode() + json.dumps(dict(response.headers))
        assert not any(secret in shown for secret in secrets), response.content[:300]
    trail = json.dumps(list(AuditEvent.objects.values("details", "target_label")), default=str)
    assert signature not in trail
    stored = json.dumps(list(IdempotentRequest.objects.values("response", "location", "fingerprint")))
    assert signature not in stored
    assert signature not in caplog.text
