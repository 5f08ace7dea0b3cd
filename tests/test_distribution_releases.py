"""Automatic releases: one share per version under the family's standing approval, exactly once.

Real sandbox over HTTP, real RQ jobs (a burst SimpleWorker), real database commits.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import CloudAccount
from audit.models import AuditEvent
from audit.verify import verify_chain
from distribution.models import Family, FamilyVersion, StandingApproval
from distribution.services import approvals, discovery, releases, subscriptions
from tests import workers
from tests.transfer_world import access, image_id
from transfers.models import Recipient, Share

pytestmark = pytest.mark.django_db(transaction=True)


def new_image(cloud, oapi, name: str) -> str:
    """A new version in the source account, as a release engineer makes one: a copy under a new name."""
    gw = oapi("alpha")
    made = gw.CreateImage(SourceImageId=image_id(cloud, "alpha", "alpha-web-2025.01"), SourceRegionName="eu-west-2",
                          ImageName=name)["Image"]["ImageId"]
    for _ in range(200):
        if gw.ReadImages(Filters={"ImageIds": [made]})["Images"][0]["State"] == "available":
            return made
        threading.Event().wait(0.02)
    raise AssertionError(f"{name} never became available")


@pytest.fixture
def rel(flow, cloud):
    """flow's teams (Platform publishes from alpha, Research receives), the family golden-web declared
    by Platform's member, Research subscribed with delta (us-east-2: by export) and gamma (eu-west-2:
    by launch permission). Research does not accept every incoming copy: its subscription is its yes."""
    flow.family = Family.objects.create(team=flow.source, source_account=flow.alpha, name="golden-web", match="name",
                                        name_pattern="golden-web-*", created_by=flow.src_member)
    flow.subscription = subscriptions.subscription_create(access=access(flow.dst_member, flow.dest),
                                                          family=flow.family, accounts=[flow.delta, flow.gamma])
    return flow


def sign(w, signer=None, *, days=30, most=5):
    terms = {"expires_at": (timezone.now() + timedelta(days=days)).replace(microsecond=0), "max_versions": most}
    shown = approvals.standing_approval_preview(family=w.family, group=None, **terms)
    return approvals.standing_approval_sign(access=access(signer or w.src_approver, w.source), family=w.family,
                                            group=None, digest=shown.digest, licence_confirmed=True, **terms)


def version(w, cloud, oapi, number: int) -> FamilyVersion:
    """A version as discovery records it (without its release job)."""
    name = f"golden-web-{number}"
    return FamilyVersion.objects.create(family=w.family, number=number, image_id=new_image(cloud, oapi, name),
                                        image_name=name)


def _v(version):
    return FamilyVersion.objects.get(pk=version.pk)


def test_a_version_becomes_one_share_approved_by_the_signer(rel, cloud, oapi):
    approval = sign(rel)
    v2 = version(rel, cloud, oapi, 2)
    assert releases.version_release(version_id=str(v2.public_id)) == "shared"
    v2 = _v(v2)
    share = v2.share
    assert v2.state == FamilyVersion.State.SHARED and v2.approval == approval
    assert share.requested_by == rel.src_member and share.decided_by == rel.src_approver
    assert share.state in (Share.State.APPROVED, Share.State.EXPORTING, Share.State.READY)
    assert share.decision_comment.startswith(f"Approved by standing approval {approval.pk} (signed by ")
    assert share.copy_name == "golden-web-v2" and share.source_image_id == v2.image_id
    assert share.approval_expires_at is not None
    assert sorted(share.recipients.values_list("bound_account_id", "bound_region", "method")) == [
        ("333344445555", "eu-west-2", "launch_permission"), ("444455556666", "us-east-2", "export")]
    approval.refresh_from_db()
    assert approval.versions_used == 1 and approval.state == StandingApproval.State.ACTIVE
    approved = AuditEvent.objects.get(action="share.approved", target_id=str(share.public_id))
    assert approved.actor_id is None and approved.details["standing_approval"] == f"standing approval {approval.pk}"
    assert AuditEvent.objects.get(action="share.requested", target_id=str(share.public_id)).actor_id is None
    assert AuditEvent.objects.filter(action="family_version.shared", target_id=str(v2.public_id)).count() == 1
    # The job run again (a retry, a duplicate): nothing more.
    assert releases.version_release(version_id=v2.pk) == "done"
    assert Share.objects.count() == 1 and StandingApproval.objects.get(pk=approval.pk).versions_used == 1


def test_two_jobs_at_once_make_one_share(rel, cloud, oapi, monkeypatch):
    approval = sign(rel)
    v2 = version(rel, cloud, oapi, 2)
    both_in = threading.Barrier(2, timeout=20)
    real = releases._claim

    def claim_together(version, approval):
        claim = real(version, approval)

        def claim_after_the_other(share):
            both_in.wait()  # each job has saved its share, in its own transaction; now both claim
            claim(share)
        return claim_after_the_other

    monkeypatch.setattr(releases, "_claim", claim_together)
    outcomes = []

    def job():
        try:
            outcomes.append(releases.version_release(version_id=str(v2.public_id)))
        finally:
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["done", "shared"]
    assert Share.objects.count() == 1 and _v(v2).share == Share.objects.get()
    assert StandingApproval.objects.get(pk=approval.pk).versions_used == 1
    assert AuditEvent.objects.filter(action="family_version.shared").count() == 1
    assert verify_chain().ok


def test_a_retried_job_on_the_queue_makes_one_share(rel, cloud, oapi):
    sign(rel)
    v2 = version(rel, cloud, oapi, 2)
    queue = workers.queues()[1]
    for n in range(3):  # the discovery's job, a duplicate, a retry: different job ids
        queue.enqueue("distribution.jobs.releases.release_job", str(v2.public_id), job_id=f"release-{n}")
    workers.run_jobs(until=lambda: _v(v2).state == FamilyVersion.State.SHARED and workers.pending_jobs() == 0)
    assert Share.objects.count() == 1


def test_without_an_approval_a_version_waits_and_a_signature_releases_it(rel, cloud, oapi):
    v2 = version(rel, cloud, oapi, 2)
    assert releases.version_release(version_id=v2.pk) == "waiting"
    assert _v(v2).state_message.startswith("No standing approval is active for golden-web")
    assert AuditEvent.objects.filter(action="family_version.waited").count() == 1
    assert releases.version_release(version_id=v2.pk) == "waiting"  # the same reason: not recorded again
    assert AuditEvent.objects.filter(action="family_version.waited").count() == 1
    sign(rel)  # its release is enqueued on commit
    workers.run_jobs(until=lambda: _v(v2).state == FamilyVersion.State.SHARED)
    assert Share.objects.count() == 1


def test_only_the_newest_waiting_version_is_released(rel, cloud, oapi):
    v2, v3 = version(rel, cloud, oapi, 2), version(rel, cloud, oapi, 3)
    assert releases.version_release(version_id=v3.pk) == "waiting"
    assert releases.version_release(version_id=v2.pk) == "skipped"  # v3 came before v2 was released
    assert "Version 3 was found before this one was released" in _v(v2).state_message
    sign(rel)
    workers.run_jobs(until=lambda: _v(v3).state == FamilyVersion.State.SHARED)
    assert _v(v2).state == FamilyVersion.State.SKIPPED and Share.objects.count() == 1


def test_an_approval_used_up_ends_and_the_next_version_waits(rel, cloud, oapi):
    approval = sign(rel, most=1)
    v2 = version(rel, cloud, oapi, 2)
    assert releases.version_release(version_id=v2.pk) == "shared"
    approval.refresh_from_db()
    assert approval.state == StandingApproval.State.EXHAUSTED and approval.versions_used == 1
    assert AuditEvent.objects.filter(action="standing_approval.exhausted").count() == 1
    v3 = version(rel, cloud, oapi, 3)
    assert releases.version_release(version_id=v3.pk) == "waiting"
    assert _v(v3).state_message == (f"Standing approval {approval.pk} ended (All its 1 versions were released): a new "
                                    "signature releases this version.")


def test_a_recipient_rekeyed_since_the_signature_stops_the_approval_and_the_version_waits(rel, cloud, oapi):
    approval = sign(rel)
    CloudAccount.objects.filter(pk=rel.delta.pk).update(account_id="999988887777")
    v2 = version(rel, cloud, oapi, 2)
    assert releases.version_release(version_id=v2.pk) == "waiting"
    approval.refresh_from_db()
    assert approval.state == StandingApproval.State.STOPPED
    assert "delta is now OUTSCALE account" in approval.stopped_reason
    assert "a new signature" in _v(v2).state_message and not Share.objects.exists()


def test_an_expired_approval_found_by_the_release_ends_and_the_version_waits(rel, cloud, oapi):
    approval = sign(rel)
    StandingApproval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    v2 = version(rel, cloud, oapi, 2)
    assert releases.version_release(version_id=v2.pk) == "waiting"
    assert StandingApproval.objects.get(pk=approval.pk).state == StandingApproval.State.EXPIRED
    assert "Expired on" in _v(v2).state_message


def test_a_declarer_who_left_the_team_holds_the_versions_back(rel, cloud, oapi):
    from accounts.models import Membership

    sign(rel)
    Membership.objects.filter(user=rel.src_member, team=rel.source).delete()
    v2 = version(rel, cloud, oapi, 2)
    assert releases.version_release(version_id=v2.pk) == "waiting"
    assert "can no longer ask for shares in Platform" in _v(v2).state_message


def test_a_lost_release_job_is_put_back_by_the_reconcilers_sweep(rel, cloud, oapi, settings):
    sign(rel)
    v2 = version(rel, cloud, oapi, 2)
    workers.flush()
    assert releases.releases_sweep() == 0  # within the grace: its job may still come
    FamilyVersion.objects.filter(pk=v2.pk).update(
        updated_at=timezone.now() - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS + 1))
    assert releases.releases_sweep() == 1
    workers.run_jobs(until=lambda: _v(v2).state == FamilyVersion.State.SHARED)


def _completed(share_pk):
    return lambda: Share.objects.get(pk=share_pk).state == Share.State.COMPLETED


def _released(w, number):
    found = FamilyVersion.objects.filter(family=w.family, number=number).first()
    return found is not None and found.state == FamilyVersion.State.SHARED


def test_versions_go_out_without_any_request_until_the_approval_expires(rel, cloud, oapi):
    """The proof: versions 2 and 3 arrive in the subscribed accounts with no request; version 4,
    found after the approval expired, waits until a new signature releases it."""

    def scan():
        discovery.family_scan_account(account_id=str(rel.alpha.public_id), force=True)

    new_image(cloud, oapi, "golden-web-1")
    scan()  # version 1: found before any approval, it waits
    workers.run_jobs()
    v1 = FamilyVersion.objects.get(family=rel.family, number=1)
    assert v1.state == FamilyVersion.State.WAITING
    approval = sign(rel)  # releases the waiting version 1
    workers.run_jobs(until=lambda: _released(rel, 1))
    for number in (2, 3):
        new_image(cloud, oapi, f"golden-web-{number}")
        scan()
        workers.run_jobs(until=lambda n=number: _released(rel, n))
        share = FamilyVersion.objects.get(family=rel.family, number=number).share
        workers.run_jobs(until=_completed(share.pk))
        copies = {r.target_account.label: cloud.world.images[r.image_id]
                  for r in Recipient.objects.filter(share=share).select_related("target_account")}
        assert {label: (image.name, image.state) for label, image in copies.items()} == {
            "delta": (f"golden-web-v{number}", "available"), "gamma": (f"golden-web-v{number}", "available")}
        assert copies["delta"].account_id == "444455556666" and copies["gamma"].account_id == "333344445555"
        # Nobody answered the offers: the subscription accepted them in advance.
        assert all(Recipient.objects.filter(share=share).values_list("accepted_in_advance", flat=True))
    assert Share.objects.filter(requested_by=rel.src_member).count() == 3
    assert not AuditEvent.objects.filter(action="share.requested").exclude(actor=None).exists()  # nobody asked
    assert StandingApproval.objects.get(pk=approval.pk).versions_used == 3

    StandingApproval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    releases.releases_sweep()
    new_image(cloud, oapi, "golden-web-4")
    scan()
    workers.run_jobs()
    v4 = FamilyVersion.objects.get(family=rel.family, number=4)
    assert v4.state == FamilyVersion.State.WAITING and "Expired on" in v4.state_message
    renewed = sign(rel, rel.src_admin)
    workers.run_jobs(until=lambda: _released(rel, 4))
    v4.refresh_from_db()
    assert v4.approval == renewed
    workers.run_jobs(until=_completed(v4.share_id))
    assert verify_chain().ok
