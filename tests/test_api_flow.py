"""A whole copy through the API only: a member's token asks, an approver's personal token approves
with a current two-factor code, the recipient team's token accepts, real RQ workers (tests/workers.py)
run the export and the imports against the sandbox, and the share finally names each new image,
which ReadImages shows in the recipient account."""

import pytest

from tests import workers
from tests.test_twofactor import code_for, enrol
from tests.transfer_world import image_id

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_pipeline_distributes_an_image_through_the_api(flow, cloud, api, clock, oapi):
    flow.source.require_two_factor_for_privileged = True
    flow.source.save()
    device = enrol(flow.src_approver, clock)
    requester = api.client(flow.src_member, team=flow.source, kind="personal")
    approver = api.client(flow.src_approver, team=flow.source)
    receiver = api.client(flow.dst_admin, team=flow.dest, kind="service")  # the recipient team's pipeline

    images = requester.get(f"/api/v1/accounts/{flow.alpha.public_id}/images/").json()["images"]
    web = next(i for i in images if i["name"] == "alpha-web-2025.01")
    assert web["image_id"] == image_id(cloud, "alpha", "alpha-web-2025.01")
    asked = requester.post("/api/v1/shares/", {
        "source_account": str(flow.alpha.public_id), "image_id": web["image_id"],
        "recipients": [str(flow.delta.public_id), str(flow.gamma.public_id)], "externals": [],
        "copy_name": "web-from-ci", "description": "built by pipeline 42", "reason": "release 1.2",
        "licence_confirmed": True, "launch_permission_only": False})
    assert asked.status_code == 201, asked.content
    share = asked.json()
    assert share["state"] == "requested"
    assert {r["method"] for r in share["recipients"]} == {"export", "launch_permission"}  # delta, gamma

    clock.now += 30
    approved = approver.post(f"/api/v1/shares/{share['id']}/approve/",
                             {"digest": share["digest"], "comment": "ok", "otp": code_for(device, clock.now)})
    assert approved.status_code == 200, approved.content

    def offers():
        body = receiver.get("/api/v1/incoming/", {"state": "offered"}).json()
        return [row for row in body["results"] if row["share"] == share["id"]]

    workers.run_jobs(until=lambda: len(offers()) == 2)
    for offer in offers():
        accepted = receiver.post(f"/api/v1/incoming/{offer['id']}/accept/")
        assert accepted.status_code == 200, accepted.content

    def current():
        response = requester.get(f"/api/v1/shares/{share['id']}/")
        assert response.status_code == 200
        return response.json()

    workers.run_jobs(until=lambda: current()["state"] == "completed")
    done = current()
    assert done["progress"]["final"] and done["progress"]["state"] == "completed"
    accounts = {str(flow.delta.public_id): "delta", str(flow.gamma.public_id): "gamma"}
    assert {r["account"] for r in done["recipients"]} == set(accounts)
    for recipient in done["recipients"]:
        assert recipient["state"] == "completed" and recipient["image_id"].startswith("ami-")
        name = accounts[recipient["account"]]
        # What the recipient account itself sees, with its own keys (the official SDK).
        [image] = oapi(name).ReadImages(Filters={"ImageIds": [recipient["image_id"]]})["Images"]
        assert image["AccountId"] == cloud.account(name)["account_id"] == recipient["account_id"]
        assert image["State"] == "available" and image["ImageName"] == "web-from-ci"
    # The recipient team sees its copies too, each with its new id.
    mine = receiver.get(f"/api/v1/shares/{share['id']}/").json()
    assert {r["image_id"] for r in mine["recipients"]} == {r["image_id"] for r in done["recipients"]}
