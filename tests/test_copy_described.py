"""The copy the requester described (issue 16): the typed Description reaches every copy (with the
portal's mark), the source's tags on the team's allowlist are carried, a copy that differs from its
source is warned about, and the approver sees what they decide on. Real sandbox over HTTP, real RQ
workers, real database commits."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from audit.verify import verify_chain
from outscale import marks
from tests import workers
from tests.transfer_world import access, approve, image_id
from transfers.models import Recipient, Share
from transfers.services import requests as share_requests
from transfers.services.import_starts import image_subject
from transfers.views.shares import DESCRIPTION_CUT

pytestmark = pytest.mark.django_db(transaction=True)

TYPED = "Hardened web front end for release 1.2 (ticket OPS-481)"
SOURCE = "alpha-web-2025.01"


def _source_image(cloud):
    return cloud.world.images[image_id(cloud, "alpha", SOURCE)]


def _request(flow, cloud, *, description=TYPED, copy_name="web-copy") -> Share:
    return share_requests.share_request(
        access=access(flow.src_member, flow.source), source_account=flow.alpha,
        image_id=image_id(cloud, "alpha", SOURCE), accounts=[flow.delta], externals=[], copy_name=copy_name,
        description=description, reason="release 1.2", licence_confirmed=True)


def _copied(flow, share) -> Recipient:
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.COMPLETED)
    return Recipient.objects.get(share=share)


def _read_copy(oapi, recipient) -> dict:
    """The copy as OUTSCALE describes it to its owner, read with the official SDK."""
    return oapi("delta").ReadImages(Filters={"ImageIds": [recipient.image_id]})["Images"][0]


def test_the_copy_gets_the_typed_description_and_only_the_allowlisted_tags(flow, cloud, oapi):
    _source_image(cloud).tags = [{"Key": "env", "Value": "prod"}, {"Key": "cost-centre", "Value": "42"},
                                 {"Key": "owner", "Value": "alice"}, {"Key": "omiportal:share", "Value": "forged"}]
    # Even a provenance key put on the list behind the form's back is never carried over the portal's own.
    flow.source.copy_tag_allowlist = ["env", "cost-centre", "omiportal:share"]
    flow.source.save()
    share = _request(flow, cloud)
    assert share.source_facts["tags"] == {"env": "prod", "cost-centre": "42", "owner": "alice",
                                          "omiportal:share": "forged"}
    assert share.source_facts["carried_tags"] == {"env": "prod", "cost-centre": "42"}

    recipient = _copied(flow, share)
    image = _read_copy(oapi, recipient)
    assert image["Description"] == f"{TYPED} [from {share.source_image_id} {marks.mark(image_subject(recipient))}]"
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["env"] == "prod" and tags["cost-centre"] == "42"
    assert "owner" not in tags
    assert "omiportal:share" not in tags  # the forged one was not carried (nor is a share id a tag)
    assert "omiportal:source-image" not in tags  # named in the Description: tags stay equal across sources
    assert recipient.warnings == []
    completed = AuditEvent.objects.get(action="import.completed")
    assert completed.details["warnings"] == [] and completed.details["tags"]["env"] == "prod"
    assert verify_chain().ok


def test_a_tag_taken_off_the_allowlist_after_the_request_is_not_carried(flow, cloud, oapi):
    _source_image(cloud).tags = [{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "alice"}]
    flow.source.copy_tag_allowlist = ["env", "owner"]
    flow.source.save()
    share = _request(flow, cloud)
    flow.source.copy_tag_allowlist = ["env"]
    flow.source.save()
    tags = {t["Key"] for t in _read_copy(oapi, _copied(flow, share))["Tags"]}
    assert "env" in tags and "owner" not in tags


def test_a_long_description_is_cut_at_request_time_so_the_mark_still_fits(flow, cloud, oapi, client):
    typed = "Release notes: " + "x" * 240
    client.force_login(flow.src_member)
    url = reverse("transfers:share-new", kwargs={"team_id": flow.source.public_id}) + f"?account={flow.alpha.public_id}"
    response = client.post(url, {"image_id": image_id(cloud, "alpha", SOURCE),
                                 "recipients": [str(flow.delta.public_id)], "copy_name": "web-copy",
                                 "description": typed, "reason": "release 1.2", "licence_confirmed": "on"},
                           follow=True)
    kept = typed[:184] + "..."
    said = [str(m) for m in response.context["messages"]]
    assert DESCRIPTION_CUT.format(room=187, kept=kept) in said
    share = Share.objects.get()
    assert share.description == typed  # what the approver reads and signs is what was typed

    recipient = _copied(flow, share)
    description = _read_copy(oapi, recipient)["Description"]
    assert description == f"{kept} [from {share.source_image_id} {marks.mark(image_subject(recipient))}]"
    assert len(description) == 255
    assert marks.is_marked(description, subject=image_subject(recipient))


def test_a_copy_that_differs_from_its_source_is_warned_about_everywhere(flow, cloud, client):
    source = _source_image(cloud)
    source.product_codes, source.boot_modes = ["0002"], ["uefi"]
    cloud.faults.drift_import("web-copy", product_codes=["0001"], boot_modes=["legacy"])
    share = _request(flow, cloud)
    assert share.source_facts["product_codes"] == ["0002"] and share.source_facts["boot_modes"] == ["uefi"]

    recipient = _copied(flow, share)
    assert recipient.warnings == [
        "The copy's product codes are 0001 (Linux); the source's were 0002 (Windows): its licences and billing "
        "differ.",
        "The copy boots in legacy mode; the source booted in uefi.",
    ]
    completed = AuditEvent.objects.get(action="import.completed")
    assert completed.details["warnings"] == recipient.warnings
    client.force_login(flow.dst_member)
    for url in (reverse("transfers:share-detail", kwargs={"team_id": flow.dest.public_id, "share_id": share.public_id}),
                reverse("transfers:inbox", kwargs={"team_id": flow.dest.public_id})):
        page = client.get(url).content.decode()
        assert "data-copy-warnings" in page and "0002 (Windows)" in page and "booted in uefi" in page
    assert verify_chain().ok


def test_an_identical_copy_of_a_windows_image_raises_no_warning(flow, cloud):
    _source_image(cloud).product_codes = ["0002"]  # the export and import keep it
    recipient = _copied(flow, _request(flow, cloud))
    assert recipient.warnings == []
    assert cloud.world.images[recipient.image_id].product_codes == ["0002"]
