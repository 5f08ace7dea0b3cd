"""The same-Region fast path, end to end: grant → copy → revoke. Real sandbox over HTTP (the
official SDK reads the source image's permissions back), real RQ jobs, real database commits.

alpha (the source) and gamma are in eu-west-2, delta in us-east-2 (tests/transfer_world.py)."""

import threading

import pytest
from django.db import connections

from audit.models import AuditEvent
from audit.verify import verify_chain
from outscale import marks
from tests import workers
from tests.transfer_world import access, approve, image_id, request_share
from transfers.models import Export, LaunchGrant, Recipient, Share
from transfers.services import grant_releases, grants, import_offers, import_starts, import_sweeps, methods, reconcile
from transfers.services import requests as share_requests

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, GAMMA, DELTA = "111122223333", "333344445555", "444455556666"


def _state(share):
    return Share.objects.get(pk=share.pk).state


def _permitted(oapi, image):
    """Who may launch the source image, as its owner's keys read it with the official SDK."""
    return oapi("alpha").ReadImages(Filters={"ImageIds": [image]})["Images"][0]["PermissionsToLaunch"]["AccountIds"]


def _actions(name):
    return AuditEvent.objects.filter(action=name)


def _auto_accept(flow):
    flow.dest.auto_accept_incoming = True
    flow.dest.save()


def test_a_share_to_one_account_in_the_region_and_one_outside_makes_one_export_one_grant_and_one_revoke(
        flow, cloud, oapi):
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    gamma_in = Recipient.objects.get(share=share, target_account=flow.gamma)
    delta_in = Recipient.objects.get(share=share, target_account=flow.delta)
    assert (gamma_in.method, gamma_in.method_reason) == (Recipient.Method.LAUNCH_PERMISSION,
                                                         methods.REASON_LAUNCH_PERMISSION)
    assert delta_in.method == Recipient.Method.EXPORT and "us-east-2" in delta_in.method_reason
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    for recipient in Recipient.objects.filter(share=share, state=Recipient.State.OFFERED):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED
                     and not LaunchGrant.objects.filter(share=share).exclude(state="revoked").exists())

    source = image_id(cloud, "alpha", "alpha-web-2025.01")
    counters = cloud.counters(ALPHA)
    assert counters.get("CreateImageExportTask") == 1  # for delta alone
    assert Export.objects.filter(shares=share).count() == 1
    assert counters.get("UpdateImage") == 2  # one grant, one revoke
    grant = LaunchGrant.objects.get(share=share)
    assert (grant.grantee_account_id, grant.state, grant.keep) == (GAMMA, LaunchGrant.State.REVOKED, False)
    added, removed = _actions("grant.added").get(), _actions("grant.removed").get()
    assert added.details["grantee_account_ids"] == [GAMMA] and added.cloud_request_ids
    assert removed.details["grantee_account_ids"] == [GAMMA] and removed.cloud_request_ids
    assert _permitted(oapi, source) == []  # no recipient is left on the source image
    # gamma's copy: made by its own keys from the source image, with the portal's mark for it.
    gamma_in.refresh_from_db()
    copy = cloud.world.images[gamma_in.image_id]
    assert (copy.account_id, copy.name, copy.state) == (GAMMA, "web-copy", "available")
    assert marks.is_marked(copy.description, subject=import_starts.image_subject(gamma_in))
    assert cloud.counters(GAMMA).get("CreateImage") == 1
    assert cloud.created(GAMMA)["CreateImage"] == {"web-copy": 1}
    assert cloud.counters(DELTA).get("CreateImage") == 1
    assert not cloud.counters(GAMMA).get("CreateImageExportTask")
    # The grant and the revoke are on the share's timeline, after the copy's start and end.
    order = list(AuditEvent.objects.filter(target_id=str(share.public_id)).order_by("seq")
                 .values_list("action", flat=True))
    assert order.index("grant.added") < order.index("import.started") < order.index("grant.removed")
    assert verify_chain().ok


def test_a_share_with_only_same_region_recipients_makes_no_export(flow, cloud, oapi):
    _auto_accept(flow)
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED
                     and LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    share.refresh_from_db()
    assert share.export is None and not Export.objects.exists()
    counters = cloud.counters(ALPHA)
    assert not counters.get("CreateImageExportTask") and counters.get("UpdateImage") == 2
    assert not cloud.counters(ALPHA, service="oos").get("PutObject")
    purposes = set(AuditEvent.objects.filter(action="credential.used").values_list("details__purpose", flat=True))
    assert "sign manifest link" not in purposes and "start export" not in purposes
    assert _permitted(oapi, share.source_image_id) == []
    assert _actions("import.auto_accepted").count() == 1


def test_a_crash_between_grant_and_copy_still_ends_with_the_grant_removed(flow, cloud, oapi, settings, monkeypatch):
    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0
    _auto_accept(flow)
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)

    def worker_dies(**_):
        raise SystemExit("killed")

    # The grant job records its grant and goes on to the copy in the same job: the worker dies
    # in between (after the grant's commit, before the copy's claim).
    monkeypatch.setattr(import_starts, "copies_start", worker_dies)
    with pytest.raises(SystemExit):
        grants.grants_add(share_id=share.public_id)
    monkeypatch.undo()
    assert _permitted(oapi, share.source_image_id) == [GAMMA]
    workers.flush()  # whatever else was queued is gone with it
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.IMPORTING and not recipient.image_id and recipient.start_tries == 0
    reconcile.reconcile()  # puts the start back
    workers.run_jobs(until=lambda: LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.COMPLETED
    assert _permitted(oapi, share.source_image_id) == []
    assert cloud.counters(GAMMA).get("CreateImage") == 1 and cloud.counters(ALPHA).get("UpdateImage") == 2


def _copied_not_revoked(flow, cloud, oapi, wait_for):
    """A share whose copy completed, its grant still in place: the worker died after the copy,
    before the removal's job ran. Each step is run by hand, as a worker would."""
    _auto_accept(flow)
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    grants.grants_add(share_id=share.public_id)  # the grant, and in the same job the copy by gamma's keys
    recipient = Recipient.objects.get(share=share)
    copy_id = Recipient.objects.get(pk=recipient.pk).image_id
    assert copy_id
    wait_for(lambda: oapi("gamma").ReadImages(Filters={"ImageIds": [copy_id]})["Images"][0]["State"],
             lambda state: state == "available")
    import_sweeps.import_sweep(account_id=flow.gamma.public_id)
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.COMPLETED
    workers.flush()  # the removal's job is gone with the worker
    assert LaunchGrant.objects.get(share=share).state == LaunchGrant.State.GRANTED
    assert _permitted(oapi, share.source_image_id) == [GAMMA]
    return share


def test_a_crash_after_the_copy_leaves_the_grant_to_the_reconciler(flow, cloud, oapi, settings, wait_for):
    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0
    share = _copied_not_revoked(flow, cloud, oapi, wait_for)
    assert reconcile.reconcile()["grants"] == 1
    workers.run_jobs()
    assert LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED
    assert _permitted(oapi, share.source_image_id) == []
    assert cloud.counters(ALPHA).get("UpdateImage") == 2
    assert reconcile.reconcile()["grants"] == 0  # nothing left to do


def _release_jobs(share) -> list[str]:
    return [job_id for q in workers.queues() for job_id in q.job_ids
            if job_id.startswith(f"grant-release-{share.public_id}-")]


def test_a_release_still_queued_behind_a_backlog_is_not_queued_again_and_a_lost_one_is_once(
        flow, cloud, oapi, settings, wait_for):
    """A grant's release had no time of its own: every tick of the reconciler queued it again while
    the first job waited in a backed-up queue (4,203 release jobs for 327 shares in the two-host
    fault run). It now notes when its job should have run, and is judged as a start is."""
    import time

    from transfers import scheduling
    from transfers.services import grant_state

    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0.3
    share = _copied_not_revoked(flow, cloud, oapi, wait_for)  # its release job lost with the worker
    scheduling.enqueue("transfers.jobs.export_start_job", "00000000-0000-0000-0000-000000000000",
                       job_id="backlog-head")  # does nothing when it runs
    time.sleep(0.05)
    grant_state.release_later(share.public_id)  # queued again (a retry), behind the head
    for _ in range(4):
        time.sleep(0.4)  # each tick, more than a grace period after the job went in
        reconcile.reconcile()
    assert len(_release_jobs(share)) == 1  # still waiting behind the head: left alone

    for q in workers.queues():  # this one is lost too, and the queue moves on past it
        for job_id in _release_jobs(share):
            q.remove(job_id)
    workers.run_jobs()
    time.sleep(0.4)
    reconcile.reconcile()
    reconcile.reconcile()
    assert len(_release_jobs(share)) == 1  # queued again, once
    workers.run_jobs()
    assert LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED
    assert cloud.counters(ALPHA).get("UpdateImage") == 2  # the grant and its one removal


def test_two_workers_racing_the_revoke_make_one_call(flow, cloud, oapi, wait_for):
    share = _copied_not_revoked(flow, cloud, oapi, wait_for)
    # The first removal is held in the cloud while the second worker tries: the first one's claim holds.
    cloud.faults.configure(hold_seconds=1.0, hold_actions={"UpdateImage"})
    start = threading.Barrier(2)

    def release():
        try:
            start.wait()
            grant_releases.grants_release(share_id=share.public_id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=release) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cloud.faults.reset()
    assert cloud.counters(ALPHA).get("UpdateImage") == 2  # the grant, and one removal
    assert LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED
    assert _actions("grant.removed").count() == 1
    assert _permitted(oapi, share.source_image_id) == []


def test_removing_a_grant_that_is_already_gone_is_a_success(flow, cloud, oapi, wait_for):
    share = _copied_not_revoked(flow, cloud, oapi, wait_for)
    oapi("alpha").UpdateImage(ImageId=share.source_image_id,
                              PermissionsToLaunch={"Removals": {"AccountIds": [GAMMA]}})  # by hand, meanwhile
    grant_releases.grants_release(share_id=share.public_id)
    assert LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED
    assert _actions("grant.removed").get().outcome == "success"
    assert _permitted(oapi, share.source_image_id) == []


def test_a_failed_copy_is_revoked_and_a_retry_grants_again(flow, cloud, oapi):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    cloud.faults.fail_import("web-copy", comment="the copy broke")
    recipient = Recipient.objects.get(share=share)
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    recipient.refresh_from_db()
    assert recipient.state == Recipient.State.FAILED and "broke" in recipient.state_message
    assert _permitted(oapi, share.source_image_id) == []
    cloud.faults.reset()
    import_offers.recipient_retry(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == Recipient.State.COMPLETED
                     and LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    assert Recipient.objects.get(pk=recipient.pk).image_name == "web-copy (retry 2)"
    assert _actions("grant.added").count() == 2 and _actions("grant.removed").count() == 2
    assert cloud.counters(ALPHA).get("UpdateImage") == 4
    assert _permitted(oapi, share.source_image_id) == []
    assert _state(share) == Share.State.COMPLETED


def test_a_declined_offer_removes_its_grant(flow, cloud, oapi):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    assert _permitted(oapi, share.source_image_id) == [GAMMA]
    import_offers.recipient_decline(access=access(flow.dst_member, flow.dest),
                                    recipient=Recipient.objects.get(share=share), reason="not needed")
    workers.run_jobs(until=lambda: LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    assert _permitted(oapi, share.source_image_id) == []
    assert not cloud.counters(GAMMA).get("CreateImage")


def test_a_public_image_is_copied_directly_without_grant_or_export(flow, cloud):
    _auto_accept(flow)
    share = request_share(flow, cloud, image="Ubuntu-24.04-2025.01.15-0", accounts=[flow.gamma],
                          copy_name="ubuntu-copy")
    recipient = Recipient.objects.get(share=share)
    assert recipient.method == Recipient.Method.DIRECT
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)
    assert not LaunchGrant.objects.exists() and not Export.objects.exists()
    assert not cloud.counters(ALPHA).get("UpdateImage") and not cloud.counters(ALPHA).get("CreateImage")
    recipient.refresh_from_db()
    assert cloud.world.images[recipient.image_id].account_id == GAMMA


def test_launch_permission_only_grants_and_copies_nothing_until_the_source_team_revokes(flow, cloud, oapi):
    share = share_requests.share_request(
        access=access(flow.src_member, flow.source), source_account=flow.alpha,
        image_id=image_id(cloud, "alpha", "alpha-web-2025.01"), accounts=[flow.gamma, flow.delta], externals=[],
        copy_name="web-launch", description="", reason="run it there", licence_confirmed=True,
        launch_permission_only=True)
    methods_of = dict(Recipient.objects.filter(share=share).values_list("target_account", "method"))
    assert methods_of == {flow.gamma.pk: Recipient.Method.PERMISSION_ONLY, flow.delta.pk: Recipient.Method.EXPORT}
    approve(flow, share)
    gamma_in = Recipient.objects.get(share=share, target_account=flow.gamma)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=gamma_in.pk).state == Recipient.State.COMPLETED)
    grant = LaunchGrant.objects.get(share=share)
    assert grant.keep and grant.state == LaunchGrant.State.GRANTED
    assert not cloud.counters(GAMMA).get("CreateImage")
    # gamma sees the image as shared with it, and may launch it.
    seen = oapi("gamma").ReadImages(Filters={"PermissionsToLaunchAccountIds": [GAMMA]})["Images"]
    assert share.source_image_id in {i["ImageId"] for i in seen}
    workers.run_jobs()
    reconcile.reconcile()
    workers.run_jobs()
    assert LaunchGrant.objects.get(pk=grant.pk).state == LaunchGrant.State.GRANTED  # kept
    grant_releases.grant_revoke(access=access(flow.src_member, flow.source), grant=grant)
    grant.refresh_from_db()
    assert grant.state == LaunchGrant.State.REVOKED and grant.revoked_by == flow.src_member
    assert _permitted(oapi, share.source_image_id) == []
    assert _actions("grant.removed").get().actor_id == flow.src_member.pk


def test_launch_permission_only_needs_an_owned_image_and_a_recipient_in_the_region(flow, cloud):
    def ask(image, accounts):
        return share_requests.share_request(
            access=access(flow.src_member, flow.source), source_account=flow.alpha,
            image_id=image_id(cloud, "alpha", image), accounts=accounts, externals=[], copy_name="web-launch",
            description="", reason="run it there", licence_confirmed=True, launch_permission_only=True)

    with pytest.raises(share_requests.errors.ShareError) as raised:
        ask("alpha-web-2025.01", [flow.delta])
    assert raised.value.messages == [methods.PERMISSION_ONLY_NEEDS_RECIPIENT.format(region="eu-west-2")]
    with pytest.raises(share_requests.errors.ShareError) as raised:
        ask("Ubuntu-24.04-2025.01.15-0", [flow.gamma])
    assert "owns" in raised.value.messages[0]
    assert not Share.objects.exists()


def test_the_approver_signs_the_methods(flow, cloud):
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    # The method changed after the request: the approval is refused (the digest no longer matches).
    Recipient.objects.filter(share=share, target_account=flow.gamma).update(method=Recipient.Method.EXPORT)
    with pytest.raises(share_requests.errors.ShareError):
        approve(flow, share)
    assert _state(share) == Share.State.REQUESTED and not LaunchGrant.objects.exists()


def test_an_offer_nobody_accepts_expires_with_the_approval_and_its_grant_goes(flow, cloud, oapi):
    from datetime import timedelta

    from django.utils import timezone

    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    assert reconcile.reconcile()["grants"] == 0  # the approval still runs: the offer stays
    assert _permitted(oapi, share.source_image_id) == [GAMMA]
    Share.objects.filter(pk=share.pk).update(approval_expires_at=timezone.now() - timedelta(seconds=1))
    assert reconcile.reconcile()["grants"] >= 1
    workers.run_jobs()
    recipient = Recipient.objects.get(share=share)
    assert recipient.state == Recipient.State.EXPIRED and "approval ended" in recipient.state_message
    assert LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED
    assert _permitted(oapi, share.source_image_id) == []
    assert _actions("import.expired").count() == 1
