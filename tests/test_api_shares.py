"""The shares API (api/views/shares.py): an account's images, asking for a copy with the form's rules
and words, the team's list, and one share as each team may see it. Against the sandbox."""

from types import SimpleNamespace

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import CloudAccount
from accounts.twofactor.services import WRONG_CODE_MESSAGE
from audit.models import AuditEvent
from tests import rates
from tests.test_twofactor import code_for, enrol
from tests.transfer_world import image_id, sandbox_account
from transfers import errors
from transfers.forms import IMAGE_NOT_LISTED, RECIPIENT_NOT_LISTED
from transfers.models import Recipient, Share
from transfers.views.decisions import APPROVED, CANCELLED, REEXPORTING, REJECTED
from transfers.views.shares import SHARE_REQUESTED

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def share_world(world, cloud, api) -> SimpleNamespace:
    """Alpha shares from its sandbox account "alpha" (eu-west-2) to Beta's "delta" (us-east-2) and
    "gamma" (eu-west-2, so by launch permission): Beta's accounts accept images from other teams."""
    return SimpleNamespace(
        world=world, cloud=cloud, api=api,
        source=sandbox_account(cloud, world.alpha, "alpha", incoming=False),
        delta=sandbox_account(cloud, world.beta, "delta"),
        gamma=sandbox_account(cloud, world.beta, "gamma"),
        web=image_id(cloud, "alpha", "alpha-web-2025.01"),
    )


@pytest.fixture
def shares(world, cloud, api):
    return share_world(world, cloud, api)


def share_body(s, **changes) -> dict:
    body = {"source_account": str(s.source.public_id), "image_id": s.web, "recipients": [str(s.delta.public_id)],
            "externals": [], "copy_name": "web-copy", "description": "built by CI", "reason": "release 1.2",
            "licence_confirmed": True, "launch_permission_only": False}
    return {**body, **changes}


def request_share(s, client=None, **changes) -> dict:
    response = (client or s.api.client(s.world.member)).post("/api/v1/shares/", share_body(s, **changes))
    assert response.status_code == 201, response.content
    return response.json()


def _denials(token):
    return AuditEvent.objects.filter(action="access.denied", details__via__id=str(token.public_id))


# --- Images -------------------------------------------------------------------------------------------


def test_it_lists_the_images_an_account_may_share(shares):
    response = shares.api.client(shares.world.member).get(f"/api/v1/accounts/{shares.source.public_id}/images/")
    assert response.status_code == 200
    body = response.json()
    assert body["error"] == ""
    by_name = {i["name"]: i for i in body["images"]}
    web = by_name["alpha-web-2025.01"]
    assert web["image_id"] == shares.web and web["relation"] == "owned" and web["size_gib"] > 0
    assert by_name["Ubuntu-24.04-2025.01.15-0"]["relation"] == "public"


def test_another_teams_account_has_no_images_here(shares):
    client = shares.api.client(shares.world.member)
    response = client.get(f"/api/v1/accounts/{shares.delta.public_id}/images/")
    assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert _denials(client.token).get().details["reason"] == "not_found_in_team"


def test_image_lists_share_the_pages_per_person_limit(shares, settings):
    settings.OMIPORTAL_IMAGE_LIST_RATE = rates.limit(2)
    client = shares.api.client(shares.world.member)
    url = f"/api/v1/accounts/{shares.source.public_id}/images/"
    assert [client.get(url).status_code for _ in range(2)] == [200, 200]
    refused = client.get(url)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1 and "image lists" in refused.json()["detail"]
    client.get(url)
    assert _denials(client.token).filter(details__reason="rate_limited").count() == 1  # once per window


# --- Asking for a copy ------------------------------------------------------------------------------------


def test_a_member_asks_for_a_copy_as_the_form_would(shares):
    client = shares.api.client(shares.world.member)
    response = client.post("/api/v1/shares/", share_body(shares))
    assert response.status_code == 201
    body = response.json()
    share = Share.objects.get(public_id=body["id"])
    assert response["Location"] == f"http://testserver/api/v1/shares/{share.public_id}/"
    assert share.state == Share.State.REQUESTED and share.requested_by == shares.world.member
    assert body["message"] == SHARE_REQUESTED.format(image="alpha-web-2025.01")
    assert body["state"] == "requested" and body["digest"] == share.digest and body["approval_required"]
    assert body["image_id"] == shares.web and body["copy_name"] == "web-copy"
    [recipient] = body["recipients"]
    assert recipient["account"] == str(shares.delta.public_id) and recipient["account_id"] == "444455556666"
    assert recipient["method"] == "export" and recipient["state"] == "waiting" and recipient["image_id"] == ""
    event = AuditEvent.objects.get(action="share.requested", outcome="success")
    assert event.actor_id == shares.world.member.pk and event.details["via"]["id"] == str(client.token.public_id)


def test_the_form_refuses_with_its_own_words(shares):
    client = shares.api.client(shares.world.member)
    cases = [
        ({"copy_name": "x"}, "copy_name", None),
        ({"licence_confirmed": False}, "licence_confirmed", errors.LICENCE_REQUIRED),
        ({"image_id": "ami-00000000"}, "image_id", IMAGE_NOT_LISTED),
        ({"recipients": [str(shares.source.public_id)]}, "recipients", errors.SOURCE_AS_RECIPIENT),
        ({"recipients": [], "externals": []}, "recipients", errors.NO_RECIPIENT),
        ({"recipients": [], "externals": [{"account_id": "12", "region": "us-east-2"}]},
         "externals[0].account_id", errors.EXTERNAL_ID),
    ]
    for change, field, message in cases:
        response = client.post("/api/v1/shares/", share_body(shares, **change))
        assert response.status_code == 400 and response["Content-Type"] == PROBLEM, change
        problem = response.json()
        assert problem["code"] == "validation_error" and field in problem["errors"], (change, problem)
        if message:
            assert problem["errors"][field] == [message] and message in problem["detail"]
    assert not Share.objects.exists()


def test_an_account_of_a_team_that_takes_no_images_cannot_be_picked(shares):
    CloudAccount.objects.filter(pk=shares.delta.pk).update(accepts_incoming_shares=False)
    response = shares.api.client(shares.world.member).post("/api/v1/shares/", share_body(shares))
    assert response.status_code == 400 and response.json()["errors"]["recipients"] == [RECIPIENT_NOT_LISTED]


def test_the_body_s_shape_is_checked_before_anything_is_read(shares):
    client = shares.api.client(shares.world.member)
    for body in ({"source_account": "nope"}, {**share_body(shares), "recipients": "x"},
                 {**share_body(shares), "externals": [{"account_id": "123456789012"}] * 4}):
        response = client.post("/api/v1/shares/", body)
        assert response.status_code == 400 and response.json()["code"] == "validation_error"


def test_a_service_refusal_is_a_422_in_the_service_s_words_and_stays_recorded(shares):
    # The source's export bucket belongs to another account: share_request refuses and records it.
    bucket = shares.cloud.account("gamma")["bucket"]
    CloudAccount.objects.filter(pk=shares.source.pk).update(export_bucket=bucket)
    client = shares.api.client(shares.world.member)
    response = client.post("/api/v1/shares/", share_body(shares))
    assert response.status_code == 422 and response.json()["code"] == "refused"
    assert response.json()["detail"] == errors.BUCKET_NOT_OWNED.format(bucket=bucket, label="alpha")
    denied = AuditEvent.objects.get(action="share.requested", outcome="denied")
    assert denied.details["reason"] == "export_bucket_not_owned"
    assert denied.details["via"]["id"] == str(client.token.public_id)
    # What the service did before refusing stays, as on the page: the keys it opened are recorded.
    assert AuditEvent.objects.filter(action="credential.used", details__via__id=str(client.token.public_id)).exists()
    assert not Share.objects.exists()


def test_an_auditor_token_cannot_ask_for_a_copy(shares):
    client = shares.api.client(shares.world.auditor)
    response = client.post("/api/v1/shares/", share_body(shares))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert _denials(client.token).get().details["reason"] == "missing_role"
    assert not Share.objects.exists()


def test_another_teams_source_account_is_a_recorded_404(shares):
    client = shares.api.client(shares.world.member)
    response = client.post("/api/v1/shares/", share_body(shares, source_account=str(shares.delta.public_id)))
    assert response.status_code == 404
    assert _denials(client.token).get().details["reason"] == "not_found_in_team"


# --- Reading ----------------------------------------------------------------------------------------------


def test_the_list_is_the_team_s_outgoing_shares_newest_first(shares):
    first = request_share(shares)
    second = request_share(shares, copy_name="web-copy-2")
    client = shares.api.client(shares.world.auditor)
    body = client.get("/api/v1/shares/").json()
    assert [s["id"] for s in body["results"]] == [second["id"], first["id"]]
    assert body["results"][0]["recipients"][0]["account_id"] == "444455556666"
    assert client.get("/api/v1/shares/", {"state": "completed"}).json()["results"] == []
    assert client.get("/api/v1/shares/", {"page_size": 1}).json()["next"]
    bad = client.get("/api/v1/shares/", {"state": "lost"})
    assert bad.status_code == 400 and "state" in bad.json()["errors"]
    assert shares.api.client(shares.world.outsider).get("/api/v1/shares/").json()["results"] == []


def test_a_share_shows_its_progress_and_to_each_recipient_team_only_its_own_rows(shares):
    body = request_share(shares, recipients=[str(shares.delta.public_id)],
                         externals=[{"account_id": "123456789012", "region": "us-west-1"}])
    own = shares.api.client(shares.world.member).get(f"/api/v1/shares/{body['id']}/").json()
    assert own["progress"]["state"] == "requested" and own["progress"]["export"] is None
    assert {r["kind"] for r in own["recipients"]} == {"team", "external"}
    assert {r["id"] for r in own["progress"]["recipients"]} == {r["id"] for r in own["recipients"]}

    theirs = shares.api.client(shares.world.outsider).get(f"/api/v1/shares/{body['id']}/").json()
    assert [r["account"] for r in theirs["recipients"]] == [str(shares.delta.public_id)]
    assert len(theirs["progress"]["recipients"]) == 1


def test_a_share_of_no_concern_to_the_team_is_a_recorded_404(shares, world):
    from tests import factories

    body = request_share(shares)
    stranger = factories.make_team("Gamma team")
    admin = factories.add_member(stranger, factories.make_user("admin@gamma.test"), "admin").user
    client = shares.api.client(admin, team=stranger)
    assert client.get(f"/api/v1/shares/{body['id']}/").status_code == 404
    assert _denials(client.token).get().details["reason"] == "not_found_in_team"


def test_a_completed_copy_shows_its_new_image_id(shares):
    body = request_share(shares)
    Recipient.objects.filter(share__public_id=body["id"]).update(state="importing", image_id="ami-12345678")
    client = shares.api.client(shares.world.member)
    assert client.get(f"/api/v1/shares/{body['id']}/").json()["recipients"][0]["image_id"] == ""  # not yet
    Recipient.objects.filter(share__public_id=body["id"]).update(state="completed")
    shown = client.get(f"/api/v1/shares/{body['id']}/").json()
    assert shown["recipients"][0]["image_id"] == "ami-12345678"
    assert shown["progress"]["recipients"][0]["image_id"] == "ami-12345678"


# --- Deciding ---------------------------------------------------------------------------------------------


def _decide(s, client, share_id, action="approve", **body):
    return client.post(f"/api/v1/shares/{share_id}/{action}/", body)


def test_an_approver_approves_what_they_read(shares):
    body = request_share(shares)
    client = shares.api.client(shares.world.approver)
    response = _decide(shares, client, body["id"], digest=body["digest"], comment="ok")
    assert response.status_code == 200, response.content
    assert response.json()["message"] == APPROVED.format(image="alpha-web-2025.01")
    share = Share.objects.get(public_id=body["id"])
    assert share.decided_by == shares.world.approver and share.decision_comment == "ok"
    assert response.json()["state"] == share.state != "requested"
    event = AuditEvent.objects.get(action="share.approved", outcome="success")
    assert event.details["via"]["id"] == str(client.token.public_id)


def test_a_member_or_a_service_token_never_approves(shares):
    body = request_share(shares)
    for client in (shares.api.client(shares.world.member), shares.api.client(shares.world.admin, kind="service")):
        response = _decide(shares, client, body["id"], digest=body["digest"], otp="123456")
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
        assert _denials(client.token).get().details["reason"] == "missing_role"
    assert Share.objects.get(public_id=body["id"]).state == Share.State.REQUESTED


def test_the_requester_never_approves_their_own_request(shares):
    client = shares.api.client(shares.world.approver)
    body = request_share(shares, client=client)
    response = _decide(shares, client, body["id"], digest=body["digest"])
    assert response.status_code == 422 and response.json()["detail"] == errors.SELF_APPROVAL
    denied = AuditEvent.objects.get(action="share.approved", outcome="denied")
    assert denied.details["reason"] == "self_approval" and denied.details["via"]["id"] == str(client.token.public_id)
    assert Share.objects.get(public_id=body["id"]).state == Share.State.REQUESTED


def test_a_decision_on_a_changed_request_is_refused(shares):
    body = request_share(shares)
    client = shares.api.client(shares.world.approver)
    response = _decide(shares, client, body["id"], digest="0" * 64)
    assert response.status_code == 422 and response.json()["detail"] == errors.STALE_DIGEST
    missing = _decide(shares, client, body["id"], comment="no digest")
    assert missing.status_code == 400 and "digest" in missing.json()["errors"]


def test_an_approver_rejects(shares):
    body = request_share(shares)
    response = _decide(shares, shares.api.client(shares.world.admin), body["id"], "reject", digest=body["digest"],
                       comment="not this one")
    assert response.status_code == 200 and response.json()["message"] == REJECTED.format(image="alpha-web-2025.01")
    assert response.json()["state"] == "rejected" and response.json()["decision_comment"] == "not this one"
    assert {r["state"] for r in response.json()["recipients"]} == {"cancelled"}


@pytest.fixture
def strict(shares, clock):
    """Alpha requires two-factor sign-in for approvers; its approver has an authenticator app."""
    shares.world.alpha.require_two_factor_for_privileged = True
    shares.world.alpha.save()
    shares.device = enrol(shares.world.approver, clock)
    shares.clock = clock
    return shares


def _code(s, steps=1):
    s.clock.now += 30 * steps  # a new 30-second step: each code is used once
    return code_for(s.device, s.clock.now)


def test_with_two_factor_required_an_approval_needs_a_current_code(strict):
    body = request_share(strict)
    client = strict.api.client(strict.world.approver)
    url = f"/api/v1/shares/{body['id']}/approve/"

    none = client.post(url, {"digest": body["digest"]})
    assert none.status_code == 403 and none.json()["code"] == "two_factor_required"
    assert none.json()["detail"] == errors.STEP_UP_NEEDED.format(team="Alpha", minutes=5)
    assert _denials(client.token).get().details["reason"] == "two_factor_required"

    wrong = client.post(url, {"digest": body["digest"], "otp": f"{(int(_code(strict)) + 1) % 10**6:06d}"})
    assert wrong.status_code == 403 and wrong.json()["detail"] == WRONG_CODE_MESSAGE
    # The wrong code counts towards the device's throttle although the request was refused.
    assert TOTPDevice.objects.get(pk=strict.device.pk).throttling_failure_count == 1
    assert AuditEvent.objects.filter(action="twofactor.failed", actor_id=strict.world.approver.pk).exists()
    assert Share.objects.get(public_id=body["id"]).state == Share.State.REQUESTED

    TOTPDevice.objects.filter(pk=strict.device.pk).update(throttling_failure_count=0,
                                                          throttling_failure_timestamp=None)
    code = _code(strict)
    right = client.post(url, {"digest": body["digest"], "otp": code})
    assert right.status_code == 200, right.content
    assert Share.objects.get(public_id=body["id"]).decided_by == strict.world.approver
    verified = AuditEvent.objects.get(action="twofactor.verified", actor_id=strict.world.approver.pk)
    assert verified.details["via"]["id"] == str(client.token.public_id)

    again = request_share(strict, copy_name="web-copy-2")  # the same code cannot serve twice
    replayed = client.post(f"/api/v1/shares/{again['id']}/approve/", {"digest": again["digest"], "otp": code})
    assert replayed.status_code == 403 and replayed.json()["detail"] == WRONG_CODE_MESSAGE


def test_with_two_factor_required_a_member_is_still_refused_for_the_role(strict):
    body = request_share(strict)
    client = strict.api.client(strict.world.member)
    response = client.post(f"/api/v1/shares/{body['id']}/reject/", {"digest": body["digest"], "otp": _code(strict)})
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


# --- Cancelling and exporting again ------------------------------------------------------------------------


def test_the_requester_cancels_and_an_approver_may_not(shares):
    body = request_share(shares)
    approver = shares.api.client(shares.world.approver)
    refused = approver.post(f"/api/v1/shares/{body['id']}/cancel/")
    assert refused.status_code == 403 and _denials(approver.token).get().details["reason"] == "missing_role"
    response = shares.api.client(shares.world.member).post(f"/api/v1/shares/{body['id']}/cancel/")
    assert response.status_code == 200 and response.json()["message"] == CANCELLED.format(image="alpha-web-2025.01")
    assert Share.objects.get(public_id=body["id"]).state == Share.State.CANCELLED
    again = shares.api.client(shares.world.member).post(f"/api/v1/shares/{body['id']}/cancel/")
    assert again.status_code == 422 and again.json()["detail"] == errors.NOT_CANCELLABLE.format(state="cancelled")


def test_an_expired_share_is_exported_again(shares):
    body = request_share(shares)
    client = shares.api.client(shares.world.member)
    not_yet = client.post(f"/api/v1/shares/{body['id']}/reexport/")
    assert not_yet.status_code == 422
    assert not_yet.json()["detail"] == errors.NOT_REEXPORTABLE.format(state="waiting for approval")
    _decide(shares, shares.api.client(shares.world.approver), body["id"], digest=body["digest"])
    Share.objects.filter(public_id=body["id"]).update(state=Share.State.EXPIRED)
    response = client.post(f"/api/v1/shares/{body['id']}/reexport/")
    assert response.status_code == 200 and response.json()["message"] == REEXPORTING.format(image="alpha-web-2025.01")
    assert AuditEvent.objects.filter(action="share.reexport_requested", outcome="success").exists()


def test_an_image_list_outscale_refuses_is_said_so(world, cloud, api):
    from tests import factories
    from transfers.services.images import IMAGES_UNAVAILABLE

    alpha = cloud.account("alpha")  # its access key with a wrong secret: OUTSCALE refuses the signature
    account = factories.make_cloud_account(world.alpha, label="rekeyed", access_key=alpha["access_key"],
                                           secret_key="W" * 40, bucket=alpha["bucket"], validation_status="valid",
                                           account_id=alpha["account_id"])
    client = api.client(world.member)
    listed = client.get(f"/api/v1/accounts/{account.public_id}/images/")
    assert listed.status_code == 200 and listed.json()["images"] == []
    assert listed.json()["error"].startswith(IMAGES_UNAVAILABLE.split("{")[0] + "rekeyed")
    asked = client.post("/api/v1/shares/", {"source_account": str(account.public_id), "image_id": "ami-12345678",
                                            "copy_name": "web-copy", "reason": "r", "licence_confirmed": True,
                                            "externals": [{"account_id": "123456789012", "region": "us-east-2"}]})
    assert asked.status_code == 502 and asked.json()["code"] == "cloud_error"
    assert asked.json()["detail"] == listed.json()["error"]
