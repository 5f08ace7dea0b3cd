"""One launch permission, several shares: OUTSCALE keeps one permission per image and account, the
portal one grant per share and account. A share done with the permission must not take it from
another share still copying (found by bench_transfers: a removal landing between another share's
grant and its copy failed that copy), and a permission the owner gave outside the portal is not the
portal's to take back. Real sandbox over HTTP, real RQ jobs, real commits.

alpha (the source) and gamma are in eu-west-2 (tests/transfer_world.py)."""

import pytest

from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import access, approve, image_id, request_share
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import grant_releases, import_offers, methods

pytestmark = pytest.mark.django_db(transaction=True)

GAMMA = "333344445555"


def _permitted(oapi, image):
    return oapi("alpha").ReadImages(Filters={"ImageIds": [image]})["Images"][0]["PermissionsToLaunch"]["AccountIds"]


def _grant(share):
    return LaunchGrant.objects.get(share=share)


def _granted_and_offered(flow, cloud, copy_name):
    share = request_share(flow, cloud, accounts=[flow.gamma], copy_name=copy_name)
    approve(flow, share)
    workers.run_jobs(until=lambda: _grant(share).state == LaunchGrant.State.GRANTED
                     and Recipient.objects.filter(share=share, state=Recipient.State.OFFERED).exists())
    return share


def _already_permitted_share(flow, cloud, oapi):
    """A share to gamma of an image its owner already let gamma launch (outside the portal):
    gamma copies it directly; gamma's team accepts in advance."""
    source = image_id(cloud, "alpha", "alpha-web-2025.01")
    oapi("alpha").UpdateImage(ImageId=source, PermissionsToLaunch={"Additions": {"AccountIds": [GAMMA]}})
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    share = request_share(flow, cloud, accounts=[flow.gamma])
    return source, share, Recipient.objects.get(share=share)


def test_a_share_done_with_a_permission_another_share_still_needs_leaves_it_in_place(flow, cloud, oapi):
    first = _granted_and_offered(flow, cloud, "web-a")
    second = _granted_and_offered(flow, cloud, "web-b")
    # The permission in place is the portal's own (the first share's): the second grants too.
    assert Recipient.objects.get(share=second).method == Recipient.Method.LAUNCH_PERMISSION
    assert cloud.counters("111122223333").get("UpdateImage") == 2  # two additions

    # The first share ends (declined): its grant is released, the permission stays for the second.
    import_offers.recipient_decline(access=access(flow.dst_member, flow.dest),
                                    recipient=Recipient.objects.get(share=first), reason="not needed")
    workers.run_jobs(until=lambda: _grant(first).state == LaunchGrant.State.REVOKED)
    source = first.source_image_id
    assert _permitted(oapi, source) == [GAMMA]
    assert _grant(first).state_message == grant_releases.KEPT_FOR_OTHERS
    assert cloud.counters("111122223333").get("UpdateImage") == 2  # no removal sent
    released = AuditEvent.objects.get(action="grant.released")
    assert released.target_id == str(first.public_id) and released.details["grantee_account_ids"] == [GAMMA]
    assert not AuditEvent.objects.filter(action="grant.removed").exists()

    # The second copies with it, then the last grant takes it back.
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest),
                                   recipient=Recipient.objects.get(share=second))
    workers.run_jobs(until=lambda: Share.objects.get(pk=second.pk).state == Share.State.COMPLETED
                     and _grant(second).state == LaunchGrant.State.REVOKED)
    copy = cloud.world.images[Recipient.objects.get(share=second).image_id]
    assert (copy.account_id, copy.name, copy.state) == (GAMMA, "web-b", "available")
    assert _permitted(oapi, source) == []
    assert AuditEvent.objects.get(action="grant.removed").target_id == str(second.public_id)


def test_a_permission_given_outside_the_portal_is_used_and_left_in_place(flow, cloud, oapi):
    source, share, recipient = _already_permitted_share(flow, cloud, oapi)
    assert (recipient.method, recipient.method_reason) == (Recipient.Method.DIRECT, methods.REASON_ALREADY_GRANTED)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.COMPLETED)
    assert not LaunchGrant.objects.exists()
    assert cloud.counters("111122223333").get("UpdateImage") == 1  # the owner's own, outside the portal
    assert _permitted(oapi, source) == [GAMMA]
    recipient.refresh_from_db()
    assert cloud.world.images[recipient.image_id].account_id == GAMMA


def test_a_direct_copy_starts_from_the_queue_workers_take_first(flow, cloud, oapi):
    """A direct copy's start is one CreateImage whose end is near: it goes on the poll queue,
    where a burst of grant and export jobs on the default queue does not hold it back (at 19
    same-Region transfers at once, the direct copies were the slowest, their start 1.6-2 s behind
    the grant jobs)."""
    import django_rq

    _, share, recipient = _already_permitted_share(flow, cloud, oapi)
    approve(flow, share)
    start = f"import-start-{recipient.public_id}-1"
    # Accepted in advance: the approval's commit queues the start.
    assert start in django_rq.get_queue("poll").job_ids
    assert start not in django_rq.get_queue("default").job_ids
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.COMPLETED)
