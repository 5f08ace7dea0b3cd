"""What an approver sees before deciding (issue 16): the source's size and licence classes, the
requester's licence confirmation, each recipient's method, the tags carried, the Description the
copies get, and the expected duration from the portal's own history; and the facts the digest binds."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

import outscale
from audit.models import AuditEvent
from outscale.results import ImageFacts, ImageState
from tests.transfer_world import approve, image_id, make_transfer_world, request_share
from transfers import errors, selectors
from transfers.models import Export, Recipient, Share
from transfers.services import binding, copy_facts

SOURCE = "alpha-web-2025.01"
REASON = "Same Region as the source account: copied from the source by launch permission, no export."


@pytest.fixture
def w(cloud, db):
    world = make_transfer_world(cloud)
    image = cloud.world.images[image_id(cloud, "alpha", SOURCE)]
    snapshot = image.snapshots[0]
    image.snapshots = [snapshot, type(snapshot)("snap-0000beef", "/dev/sdb", 20)]
    image.product_codes = ["0002"]
    image.tags = [{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "alice"}]
    world.source.copy_tag_allowlist = ["env"]
    world.source.save()
    return world


def _requested(w, cloud) -> Share:
    share = request_share(w, cloud, accounts=[w.delta, w.gamma])
    # The method is another part's choice (issue 16): set here as it would be.
    Recipient.objects.filter(share=share, target_account=w.gamma).update(method=Recipient.Method.LAUNCH_PERMISSION,
                                                                       method_reason=REASON)
    Share.objects.filter(pk=share.pk).update(digest=binding.current_digest(share))  # chosen at request time
    share.refresh_from_db()
    return share


def _past_copy(w, *, method, size_gib, seconds, days_ago=1, export_seconds=None):
    """A copy completed ``days_ago`` days ago whose own step took ``seconds`` (and its export ``export_seconds``)."""
    now = timezone.now() - timedelta(days=days_ago)
    export = None
    if export_seconds is not None:
        export = Export.objects.create(account=w.alpha, source_image_id="ami-00000000", state=Export.State.COMPLETED,
                                       bucket="b", prefix="p/", created_at=now - timedelta(seconds=export_seconds),
                                       completed_at=now)
    share = Share.objects.create(
        team=w.source, source_account=w.alpha, source_image_id="ami-00000000", source_image_name="old",
        source_image_relation="owned", copy_name="old-copy", reason="past", licence_confirmed_at=now,
        requested_by=w.src_member, approval_required=False, digest="x", state=Share.State.COMPLETED,
        source_facts={"size_gib": size_gib} if size_gib is not None else {}, export=export)
    Recipient.objects.create(share=share, kind=Recipient.Kind.TEAM, team=w.dest, target_account=w.delta,
                             state=Recipient.State.COMPLETED, method=method, started_at=now,
                             completed_at=now + timedelta(seconds=seconds))


def _detail(share, team):
    return reverse("transfers:share-detail", kwargs={"team_id": team.public_id, "share_id": share.public_id})


def test_the_request_records_the_sources_facts_from_its_one_read(w, cloud):
    share = _requested(w, cloud)
    assert share.source_facts == {
        "size_gib": 30, "snapshots": 2, "product_codes": ["0002"], "architecture": "x86_64",
        "boot_modes": ["legacy"], "root_device_type": "bsu", "root_device_name": "/dev/sda1",
        "tags": {"env": "prod", "owner": "alice"}, "carried_tags": {"env": "prod"},
    }
    event = AuditEvent.objects.get(action="share.requested")
    assert event.details["source_facts"]["carried_tags"] == {"env": "prod"}


def test_the_share_page_shows_the_approver_each_fact(w, cloud, client):
    share = _requested(w, cloud)
    client.force_login(w.src_approver)
    page = client.get(_detail(share, w.source)).content.decode()
    assert "data-decision-facts" in page
    for text in ("30 GiB in 2 snapshots", "Windows", "0002", "x86_64", "boots in legacy", "root device bsu /dev/sda1",
                 f"{escape(w.src_member.display_name)} confirmed that the image's third-party licences allow "
                 "exporting it",
                 "Export, then import from the manifest", "Copy by launch permission (same Region)", escape(REASON),
                 "env=prod", "Not carried (not on the team's list): owner", "for tests",
                 "Expected duration: no history yet"):
        assert text in page, text


def test_the_panel_is_only_for_who_may_decide(w, cloud, client):
    share = _requested(w, cloud)
    client.force_login(w.src_member)  # the requester: someone else decides
    assert "data-decision-facts" not in client.get(_detail(share, w.source)).content.decode()
    approve(w, share)
    client.force_login(w.src_approver)  # decided: nothing left to weigh
    assert "data-decision-facts" not in client.get(_detail(share, w.source)).content.decode()


def test_the_approvals_list_shows_each_fact_and_the_expected_duration(w, cloud, client):
    share = _requested(w, cloud)
    for seconds in (100, 300, 200):  # launch permission, similar size: median 200 s
        _past_copy(w, method=Recipient.Method.LAUNCH_PERMISSION, size_gib=25, seconds=seconds)
    client.force_login(w.src_approver)
    page = client.get(reverse("transfers:approval-list", kwargs={"team_id": w.source.public_id})).content.decode()
    for text in ("30 GiB in 2 snapshots", "Windows", "confirmed that the image", "Copy by launch permission",
                 "Export, then import", "env=prod",
                 "Expected about 3 min 20 s (median of 3 similar copies in the last 90 days)",
                 "Expected duration: no history yet"):  # the export method has none
        assert text in page, text
    assert str(share.public_id) in page


def test_the_approvals_list_reads_the_history_once_for_every_row(w, cloud, client, django_assert_max_num_queries):
    client.force_login(w.src_approver)
    url = reverse("transfers:approval-list", kwargs={"team_id": w.source.public_id})
    _requested(w, cloud)
    client.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        client.get(url)
    for k in range(3):
        request_share(w, cloud, accounts=[w.delta, w.gamma], copy_name=f"web-copy-{k}")
    with CaptureQueriesContext(connection) as four:
        client.get(url)
    assert len(four) == len(one)


def test_the_expected_duration_is_the_median_of_similar_recent_copies(w):
    _past_copy(w, method=Recipient.Method.EXPORT, size_gib=10, seconds=60, export_seconds=600)   # 660 s
    _past_copy(w, method=Recipient.Method.EXPORT, size_gib=12, seconds=120, export_seconds=900)  # 1020 s
    _past_copy(w, method=Recipient.Method.EXPORT, size_gib=14, seconds=30, export_seconds=300)   # 330 s
    _past_copy(w, method=Recipient.Method.EXPORT, size_gib=100, seconds=5000)   # not a similar size
    _past_copy(w, method=Recipient.Method.LAUNCH_PERMISSION, size_gib=10, seconds=40)  # another method
    _past_copy(w, method=Recipient.Method.EXPORT, size_gib=10, seconds=9, days_ago=91)  # too old
    history = selectors.copy_history()
    assert len(history) == 5
    estimate = selectors.expected_duration(history, method=Recipient.Method.EXPORT, size_gib=10)
    assert (estimate.seconds, estimate.count) == (660, 3)
    assert selectors.expected_duration(history, method=Recipient.Method.LAUNCH_PERMISSION, size_gib=10).seconds == 40
    assert selectors.expected_duration(history, method=Recipient.Method.DIRECT, size_gib=10).seconds is None
    assert selectors.expected_duration(history, method=Recipient.Method.EXPORT, size_gib=None).count == 4


def test_the_digest_binds_the_tags_the_copies_carry(w, cloud):
    share = _requested(w, cloud)
    Share.objects.filter(pk=share.pk).update(source_facts={**share.source_facts,
                                                           "carried_tags": {"env": "prod", "owner": "alice"}})
    share.refresh_from_db()
    with pytest.raises(errors.ShareConflict):
        approve(w, share)
    assert Share.objects.get(pk=share.pk).state == Share.State.REQUESTED


def test_a_request_from_before_source_facts_keeps_its_digest(w, cloud):
    share = _requested(w, cloud)
    recipients = list(share.recipients.all())
    with_facts = binding.bound_digest(share, recipients)
    share.source_facts = {}
    without = binding.bound_digest(share, recipients)
    share.source_facts = {"size_gib": 30}
    assert binding.bound_digest(share, recipients) == without != with_facts


def _state(**facts):
    return ImageState(image_id="ami-1", name="c", state="available", facts=ImageFacts(**facts))


def test_each_difference_from_the_source_is_one_sentence():
    share = Share(source_facts={"product_codes": ["0001"], "architecture": "x86_64", "boot_modes": ["legacy"],
                                "root_device_type": "bsu", "root_device_name": "/dev/sda1"})
    same = _state(product_codes=("0001",), architecture="x86_64", boot_modes=("legacy",), root_device_type="bsu",
                  root_device_name="/dev/sda1")
    assert copy_facts.copy_warnings(share, same) == []
    differs = _state(product_codes=("0001", "0005"), architecture="i386", boot_modes=("legacy",),
                     root_device_type="ebs", root_device_name="/dev/xvda")
    assert copy_facts.copy_warnings(share, differs) == [
        "The copy's product codes are 0001 (Linux), 0005 (product code 0005 (not a class OMI Portal knows: see "
        "ReadProductTypes)); the source's were 0001 (Linux): its licences and billing differ.",
        "The copy's architecture is i386; the source's was x86_64.",
        "The copy's root device is ebs /dev/xvda; the source's was bsu /dev/sda1.",
    ]
    assert copy_facts.copy_warnings(Share(source_facts={}), differs) == []  # asked before facts: nothing to compare


def test_a_description_is_cut_only_past_what_a_copy_keeps():
    room = outscale.DESCRIPTION_ROOM
    assert room == 255 - len(" [from ami-00000000 omiportal-mark:") - 32 - len("]")
    assert copy_facts.fit_description("a" * room) == "a" * room
    assert copy_facts.fit_description("a" * (room + 1)) == "a" * (room - 3) + "..."
    assert copy_facts.copy_description(Share(description="", source_image_id="ami-1")).startswith(
        "Copied by OMI Portal from ami-1")
