"""The "latest" pointer (issue 18): in every recipient account each copy of a family's version
carries the family tag and the newest one the latest tag, moved on each release, found by one
ReadImages filter; the portal's page and the API give the same answer.

Real sandbox over HTTP, real RQ jobs (tests/workers.py), real PostgreSQL commits and advisory locks.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

import outscale
from audit.models import AuditEvent
from audit.verify import verify_chain
from distribution.models import FAMILY_TAG, LATEST_TAG, InventoryEntry
from distribution.services import latest
from tests import workers
from tests.fixtures_api import ApiClient, make_token
from tests.inventory_world import (
    accept_and_complete,
    copy_completes,
    image_tags,
    make_family,
    release,
    version,
)
from transfers.models import Recipient
from transfers.services import import_offers

pytestmark = pytest.mark.django_db(transaction=True)


def _entry(recipient) -> InventoryEntry:
    return InventoryEntry.objects.get(recipient=recipient)


def _latest_in_cloud(oapi, name, family) -> set[str]:
    """What a consumer finds with one ReadImages filter in the account (its own keys)."""
    answer = oapi(name).ReadImages(Filters={"Tags": [f"{LATEST_TAG}={family.name}"]})
    return {image["ImageId"] for image in answer["Images"]}


def _events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


# --- The proof: 1 -> 2 -> 3, and a late older version does not take it ----------------------------


def test_latest_moves_1_2_3_and_a_late_older_version_does_not_take_it(flow, cloud, oapi, client):
    family = make_family(flow)
    v1 = release(flow, cloud, family, 1, accounts=[flow.delta, flow.gamma])
    copies = {a: Recipient.objects.get(share=v1.share, target_account=a).image_id for a in (flow.delta, flow.gamma)}
    assert _latest_in_cloud(oapi, "delta", family) == {copies[flow.delta]}
    assert _latest_in_cloud(oapi, "gamma", family) == {copies[flow.gamma]}

    v2 = release(flow, cloud, family, 2, accounts=[flow.delta, flow.gamma], accept=False)
    # delta takes version 2 now; gamma's offer of version 2 waits until after version 3.
    delta_v2 = Recipient.objects.get(share=v2.share, target_account=flow.delta)
    import_offers.recipient_accept(access=_access(flow), recipient=delta_v2)
    workers.run_jobs(until=lambda: InventoryEntry.objects.filter(recipient=delta_v2,
                                                                 family_tagged_at__isnull=False).exists())
    v3 = release(flow, cloud, family, 3, accounts=[flow.delta, flow.gamma])
    accept_and_complete(flow, v2)  # gamma's version 2 completes last

    for account, name in ((flow.delta, "delta"), (flow.gamma, "gamma")):
        newest = Recipient.objects.get(share=v3.share, target_account=account).image_id
        assert _latest_in_cloud(oapi, name, family) == {newest}
        for made in (v1, v2, v3):  # every copy carries the family tag; only the newest the latest tag
            image = Recipient.objects.get(share=made.share, target_account=account).image_id
            assert image_tags(cloud, image)[FAMILY_TAG] == family.name
            assert (LATEST_TAG in image_tags(cloud, image)) == (made == v3)
        assert set(InventoryEntry.objects.filter(account=account, family=family, is_latest=True)
                   .values_list("image_id", flat=True)) == {newest}

    # delta: moved 1, 2, 3; gamma: moved 1, 3, then version 2 kept (once each, with RequestIds).
    moved = _events("latest.moved")
    assert sorted((e.details["account_id"], e.details["version"]) for e in moved) == sorted([
        (flow.delta.account_id, 1), (flow.gamma.account_id, 1), (flow.delta.account_id, 2),
        (flow.delta.account_id, 3), (flow.gamma.account_id, 3)])
    assert all(e.cloud_request_ids and e.team_id == flow.dest.pk for e in moved)
    kept = _events("latest.kept")
    assert [(e.details["account_id"], e.details["version"]) for e in kept] == [(flow.gamma.account_id, 2)]
    assert verify_chain().ok

    # The page and the API give the cloud's answer, for the recipient team and the source team.
    _same_answer_everywhere(flow, family, oapi, client)


def _access(flow):
    from tests.transfer_world import access

    return access(flow.dst_member, flow.dest)


def _same_answer_everywhere(flow, family, oapi, client):
    cloud_answer = {flow.delta.account_id: _latest_in_cloud(oapi, "delta", family),
                    flow.gamma.account_id: _latest_in_cloud(oapi, "gamma", family)}
    for team, user in ((flow.dest, flow.dst_member), (flow.source, flow.src_member)):
        token, raw = make_token(user, team, name=f"latest {team.name}")
        body = ApiClient(raw, token).get(reverse("api:family-latest", kwargs={"family_id": family.public_id})).json()
        assert {row["account_id"]: {row["image_id"]} for row in body["accounts"]} == cloud_answer
        assert body["tag_filter"] == f"{LATEST_TAG}={family.name}"
        client.force_login(user)
        page = client.get(reverse("distribution:family-latest", kwargs={"team_id": team.public_id,
                                                                        "family_id": family.public_id}))
        assert page.status_code == 200
        assert {(e.account.account_id, e.image_id) for e in page.context["rows"]} == {
            (account_id, image) for account_id, images in cloud_answer.items() for image in images}
        for images in cloud_answer.values():
            assert next(iter(images)) in page.content.decode()


# --- Order, exactly once, and the safety net (fast: copies completed without an export) ------------


def test_two_versions_completing_together_in_one_account_leave_the_newer_latest(flow, cloud, oapi, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks serialise the two workers on PostgreSQL only")
    family = make_family(flow)
    v1, v2, v3 = (version(family, n) for n in (1, 2, 3))
    copy_completes(flow, cloud, v1, flow.delta)
    workers.run_jobs()
    workers.flush()
    r3 = copy_completes(flow, cloud, v3, flow.delta)
    r2 = copy_completes(flow, cloud, v2, flow.delta)
    # Each worker reads who holds the tag, then stalls before tagging: without the lock both would
    # read "version 1" and both would take the tag.
    real_tag = outscale.tag_resources
    started = threading.Barrier(2, timeout=5)

    def slow_tag(**kwargs):
        time.sleep(0.3)
        return real_tag(**kwargs)

    monkeypatch.setattr(outscale, "tag_resources", slow_tag)
    results = {}

    def work(recipient):
        try:
            started.wait()
            results[recipient.pk] = latest.latest_move(entry_id=_entry(recipient).public_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in (r2, r3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results[r3.pk] == "moved" and results[r2.pk] in ("moved", "kept")
    assert _latest_in_cloud(oapi, "delta", family) == {r3.image_id}
    assert list(InventoryEntry.objects.filter(family=family, is_latest=True).values_list("image_id", flat=True)) \
        == [r3.image_id]
    assert LATEST_TAG not in image_tags(cloud, r2.image_id)
    assert FAMILY_TAG in image_tags(cloud, r2.image_id)


def test_a_job_run_twice_tags_once_and_records_once(flow, cloud):
    family = make_family(flow)
    recipient = copy_completes(flow, cloud, version(family, 1), flow.delta)
    entry = _entry(recipient)
    assert entry.family_id == family.pk and entry.family_tagged_at is None
    assert latest.latest_move(entry_id=entry.public_id) == "moved"
    assert latest.latest_move(entry_id=entry.public_id) == "nothing"
    workers.run_jobs()  # the job the completion enqueued finds it done
    assert cloud.counters(flow.delta.account_id).get("CreateTags") == 1
    assert len(_events("latest.moved")) == 1


def test_a_worker_dying_between_the_tags_and_the_record_tags_again_and_records_once(flow, cloud, monkeypatch):
    family = make_family(flow)
    v1, v2 = version(family, 1), version(family, 2)
    copy_completes(flow, cloud, v1, flow.delta)
    workers.run_jobs()
    recipient = copy_completes(flow, cloud, v2, flow.delta)
    workers.flush()
    real_record = latest._record

    def die(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(latest, "_record", die)
    with pytest.raises(SystemExit):
        latest.latest_move(entry_id=_entry(recipient).public_id)
    assert _entry(recipient).family_tagged_at is None  # still owed
    monkeypatch.setattr(latest, "_record", real_record)
    # The reconciler's tick, once the grace period passed, enqueues it again.
    later = timezone.now() + timedelta(hours=1)
    assert latest.latest_sweep(now=later) == 1
    workers.run_jobs()
    assert _entry(recipient).is_latest and image_tags(cloud, recipient.image_id)[LATEST_TAG] == family.name
    assert [e.details["version"] for e in _events("latest.moved")] == [1, 2]
    assert latest.latest_sweep(now=later) == 0


def test_a_throttled_cloud_leaves_the_tags_owed_until_the_sweep(flow, cloud, monkeypatch):
    family = make_family(flow)
    recipient = copy_completes(flow, cloud, version(family, 1), flow.delta)

    def busy(**kwargs):
        raise outscale.RetryLater("busy", kind="throttled", may_have_run=False)

    monkeypatch.setattr(outscale, "tag_resources", busy)
    workers.flush()
    assert latest.latest_move(entry_id=_entry(recipient).public_id) == "later"
    assert _entry(recipient).family_tagged_at is None and not _events("latest.moved")
    monkeypatch.undo()
    latest.latest_sweep(now=timezone.now() + timedelta(hours=1))
    workers.run_jobs()
    assert _entry(recipient).is_latest and len(_events("latest.moved")) == 1


def test_a_refused_tag_is_recorded_failed_and_not_retried(flow, cloud):
    family = make_family(flow)
    recipient = copy_completes(flow, cloud, version(family, 1), flow.delta)
    workers.flush()
    with cloud.world.lock:  # the copy was deleted before its tags
        del cloud.world.images[recipient.image_id]
    assert latest.latest_move(entry_id=_entry(recipient).public_id) == "failed"
    event = _events("latest.moved")[0]
    assert event.outcome == "failed" and event.details["reason"]
    assert latest.latest_sweep(now=timezone.now() + timedelta(hours=1)) == 0


def test_a_copy_of_a_plain_share_gets_no_family_tag(flow, cloud):
    recipient = copy_completes(flow, cloud, None, flow.delta)
    workers.run_jobs()
    entry = _entry(recipient)
    assert entry.family_id is None and not entry.is_latest
    assert FAMILY_TAG not in image_tags(cloud, recipient.image_id)
    assert cloud.counters(flow.delta.account_id).get("CreateTags") is None
