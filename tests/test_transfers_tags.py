"""Provenance tags written many at once: the copies from one source account that a look sees
available together get one CreateTags, whatever image each came from (each names its own in its
Description, beside the portal's mark); a tag call that fails or whose answer is lost leaves them importing
for the next look, which tags and completes each exactly once; two sweeps of the account running
at the same time (two workers) tag and complete each copy once. Real sandbox over HTTP."""

import threading
import time
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from audit.verify import verify_chain
from outscale import marks
from tests.transfer_world import imports_started
from transfers.models import Recipient
from transfers.services import import_sweeps

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = "444455556666"


def _all_available_and_due(cloud, rows) -> None:
    with cloud.world.lock:
        for recipient in rows:
            cloud.world.images[recipient.image_id].ready_at = time.monotonic()
    Recipient.objects.filter(pk__in=[r.pk for r in rows]).update(next_poll_at=timezone.now())


def _tags(cloud, image_id: str) -> dict:
    with cloud.world.lock:
        return {t["Key"]: t["Value"] for t in cloud.world.images[image_id].tags}


def _completions() -> Counter:
    return Counter(AuditEvent.objects.filter(action="import.completed").values_list("details__recipient", flat=True))


def test_copies_of_one_source_seen_together_are_tagged_in_one_call(flow, cloud):
    rows = imports_started(flow, cloud, 4)
    _all_available_and_due(cloud, rows)
    before = cloud.counters(DELTA).get("CreateTags", 0)

    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    assert cloud.counters(DELTA)["CreateTags"] == before + 1
    assert set(Recipient.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"completed"}
    expected = {"omiportal:recipient": str(flow.delta.public_id),
                "omiportal:source-account": rows[0].share.source_account.account_id}
    for recipient in rows:
        assert _tags(cloud, recipient.image_id) == expected
    # Which share and recipient each copy belongs to is in its own completion event.
    events = {e.details["recipient"]: e for e in AuditEvent.objects.filter(action="import.completed")}
    assert set(events) == {str(r.public_id) for r in rows}
    for recipient in rows:
        event = events[str(recipient.public_id)]
        assert event.details["image_id"] == recipient.image_id and event.details["tags"] == expected
        assert event.target_id == str(recipient.share.public_id)
    assert verify_chain().ok


def test_copies_of_different_sources_seen_together_are_tagged_in_one_call_and_each_names_its_source(flow, cloud):
    rows = imports_started(flow, cloud, 4, images=("alpha-web-2025.01", "alpha-db-base"))
    assert len({r.share.source_image_id for r in rows}) == 2
    _all_available_and_due(cloud, rows)
    before = cloud.counters(DELTA).get("CreateTags", 0)

    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    # One call for the four: the tags say the source account, not the image (a value per image
    # would be a call per image); each copy's Description names its own source beside the mark.
    assert cloud.counters(DELTA)["CreateTags"] == before + 1
    assert set(Recipient.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"completed"}
    for recipient in rows:
        assert "omiportal:source-image" not in _tags(cloud, recipient.image_id)
        with cloud.world.lock:
            description = cloud.world.images[recipient.image_id].description
        assert marks.source_of(description) == recipient.share.source_image_id
    assert verify_chain().ok


@pytest.mark.parametrize("fault", [{"throttle_rate": 1.0}, {"lost_response_rate": 1.0, "lost_response_mode": "500"}])
def test_a_failed_tag_call_leaves_the_copies_for_the_next_look_which_tags_and_completes_each_once(
        flow, cloud, fault):
    rows = imports_started(flow, cloud, 3)
    _all_available_and_due(cloud, rows)
    cloud.faults.configure(actions={"CreateTags"}, **fault)

    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    # Not complete without its tags (a lost answer may have tagged them: the next call sets the same).
    assert set(Recipient.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"importing"}
    assert not _completions()
    cloud.faults.reset()
    cloud.faults.configure(latency=0)
    Recipient.objects.filter(pk__in=[r.pk for r in rows]).update(next_poll_at=timezone.now())
    before = cloud.counters(DELTA).get("CreateTags", 0)

    import_sweeps.import_sweep(account_id=flow.delta.public_id)

    # A lost answer's call did tag them: the look reads the tags on the images and needs no call.
    assert cloud.counters(DELTA)["CreateTags"] == before + (0 if fault.get("lost_response_rate") else 1)
    assert set(Recipient.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"completed"}
    expected = {"omiportal:recipient": str(flow.delta.public_id),
                "omiportal:source-account": rows[0].share.source_account.account_id}
    assert all(_tags(cloud, r.image_id) == expected for r in rows)
    assert _completions() == Counter({str(r.public_id): 1 for r in rows})
    assert verify_chain().ok


def test_two_workers_sweeping_the_account_at_once_tag_and_complete_each_copy_once(flow, cloud):
    rows = imports_started(flow, cloud, 6)
    _all_available_and_due(cloud, rows)
    cloud.faults.configure(latency=0.2)  # both sweeps are inside their calls at the same time
    before = cloud.counters(DELTA).get("CreateTags", 0)
    start, errors = threading.Barrier(2, timeout=10), []

    def worker():
        try:
            start.wait()
            import_sweeps.import_sweep(account_id=flow.delta.public_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert set(Recipient.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"completed"}
    assert _completions() == Counter({str(r.public_id): 1 for r in rows})
    # One call per sweep that held rows at most (each row belongs to one sweep), never one per copy.
    assert 1 <= cloud.counters(DELTA)["CreateTags"] - before <= 2
    assert all(_tags(cloud, r.image_id)["omiportal:recipient"] == str(flow.delta.public_id) for r in rows)
    assert verify_chain().ok
