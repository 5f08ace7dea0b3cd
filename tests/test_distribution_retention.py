"""Retention (issue 18): a recipient team's rule for a family's copies; a run proposes, an approver
who did not set the rule confirms, and only then is each copy deleted, exactly once.

Real copies in the sandbox: the recipient account (gamma, of the team "Research") copies a public
image under the family's copy names with its own keys and tags them as the portal does; the
inventory rows are made here, so nothing waits for the inventory's own refresh.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from accounts.models import Membership, Role
from audit.models import AuditEvent
from distribution.models import (
    FAMILY_TAG,
    LATEST_TAG,
    Family,
    FamilyVersion,
    InventoryEntry,
    RetentionItem,
    RetentionPolicy,
    RetentionRun,
    Subscription,
)
from distribution.selectors import retention as selectors
from distribution.services import retention, retention_deletes
from tests import factories, workers
from tests.transfer_world import access, image_id, make_transfer_world
from transfers.models import LaunchGrant, Share

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "Ubuntu-24.04-2025.01.15-0"  # gamma's Region: copied under each version's copy name
State = RetentionItem.State


class WorkerDied(BaseException):
    """A worker killed in the middle of its job (nothing after it runs, no except clause catches it)."""


@pytest.fixture
def w(cloud, settings, wait_for):
    settings.OMIPORTAL_SWEEP_MIN_SECONDS = 0.05
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 0.2
    workers.flush()
    w = make_transfer_world(cloud)
    w.cloud, w.wait_for = cloud, wait_for
    w.family = Family.objects.create(team=w.source, source_account=w.alpha, name="golden-web", match="name",
                                     name_pattern="golden-web-*", created_by=w.src_member)
    Subscription.objects.create(family=w.family, team=w.dest, created_by=w.dst_member).accounts.add(w.gamma)
    w.versions = [FamilyVersion.objects.create(family=w.family, number=n, image_id=f"ami-0000000{n}",
                                               image_name=f"golden-web-{n}", state="shared") for n in (1, 2, 3)]
    w.copies = [make_copy(w, version, latest=version.number == 2) for version in w.versions[:2]]
    yield w
    workers.flush()


def make_copy(w, version, *, account=None, latest=False, pinned=False) -> InventoryEntry:
    """Copy a public image into the recipient account under the version's copy name, with its keys,
    tagged as the portal tags its copies; and its inventory row."""
    account = account or w.gamma
    creds = credentials_for(account, purpose="tests")
    name = f"{w.family.name}-v{version.number}"
    copy = outscale.copy_image(creds=creds, source_image_id=image_id(w.cloud, account.label, PUBLIC), name=name)
    tags = {FAMILY_TAG: w.family.name, "omiportal:source-image": version.image_id}
    if latest:
        tags[LATEST_TAG] = w.family.name
    if pinned:
        tags[selectors.PINNED_TAG] = "yes"
    outscale.tag_resources(creds=creds, resource_ids=[copy.image_id], tags=tags)
    w.wait_for(lambda: outscale.read_images(creds=creds, account_id=account.account_id, image_ids=[copy.image_id]),
               lambda seen: seen[copy.image_id].state == "available")
    return InventoryEntry.objects.create(team=account.team, account=account, image_id=copy.image_id, image_name=name,
                                         source_image_id=version.image_id, family=w.family, version=version,
                                         cloud_state="available", is_latest=latest, pinned=pinned)


def set_rule(w, *, keep_last=1, end_of_life=False, by=None) -> RetentionPolicy:
    return retention.policy_set(access=access(by or w.dst_admin, w.dest), family=w.family, keep_last=keep_last,
                                delete_after_end_of_life=end_of_life)


def propose(w, policy, by=None) -> RetentionRun:
    return retention.retention_propose(policy=policy, access=access(by or w.dst_approver, w.dest))


def confirm(w, run, by=None) -> RetentionRun:
    return retention.run_confirm(access=access(by or w.dst_approver, w.dest), run=run)


def in_cloud(w, entry) -> bool:
    creds = credentials_for(entry.account, purpose="tests")
    return entry.image_id in outscale.read_images(creds=creds, account_id=entry.account.account_id,
                                                  image_ids=[entry.image_id])


def deletes(w) -> int:
    """DeleteImage calls the recipient account's keys made (those the cloud ran: a throttled one did not)."""
    return w.cloud.counters(w.gamma.account_id).get("DeleteImage", 0)


def delete_now(run) -> None:
    retention_deletes.retention_delete(run_id=run.public_id)


# --- proposing and confirming ---------------------------------------------------------------------

def test_it_deletes_the_older_copy_only_after_confirmation(w):
    old, newest = w.copies
    run = propose(w, set_rule(w, keep_last=1))
    item = run.items.get()
    assert item.entry == old and item.state == State.PROPOSED
    assert "Older than the 1 newest version in gamma" in item.reason
    delete_now(run)  # not confirmed: the job finds nothing to do
    assert deletes(w) == 0 and in_cloud(w, old)

    confirm(w, run)
    workers.run_jobs()  # the deletion job, queued on commit
    item.refresh_from_db()
    assert item.state == State.DELETED and item.cloud_request_ids
    assert deletes(w) == 1 and not in_cloud(w, old) and in_cloud(w, newest)
    assert InventoryEntry.objects.get(pk=old.pk).cloud_state == "deleted"
    run.refresh_from_db()
    assert run.state == RetentionRun.State.DONE and run.confirmed_by == w.dst_approver
    event = AuditEvent.objects.get(action="retention.copy_deleted")
    assert event.cloud_request_ids == item.cloud_request_ids and event.details["image_id"] == old.image_id
    assert list(AuditEvent.objects.filter(action__startswith="retention.").order_by("seq")
                .values_list("action", flat=True)) == ["retention.policy_created", "retention.proposed",
                                                       "retention.confirmed", "retention.copy_deleted",
                                                       "retention.completed"]


def test_it_never_proposes_a_pinned_copy(w):
    pinned, v2 = w.copies
    outscale.tag_resources(creds=credentials_for(w.gamma, purpose="tests"), resource_ids=[pinned.image_id],
                           tags={selectors.PINNED_TAG: "ops"})
    InventoryEntry.objects.filter(pk=pinned.pk).update(pinned=True)  # as the inventory's refresh records it
    v3 = make_copy(w, w.versions[2], latest=True)
    InventoryEntry.objects.filter(pk=v2.pk).update(is_latest=False)
    policy = set_rule(w, keep_last=1)
    held = {c.entry.pk: c.held for c in selectors.retention_candidates(policy=policy)}
    assert held == {pinned.pk: selectors.HELD_PINNED, v2.pk: ""}
    run = propose(w, policy)
    assert list(run.items.values_list("entry_id", flat=True)) == [v2.pk]
    confirm(w, run)
    workers.run_jobs()
    assert in_cloud(w, pinned) and in_cloud(w, v3) and not in_cloud(w, v2) and deletes(w) == 1
    assert not RetentionItem.objects.filter(entry=pinned).exists()


def test_copies_in_use_are_held_back_with_the_reason(w):
    old = w.copies[0]
    share = Share.objects.create(team=w.dest, source_account=w.gamma, source_image_id=old.image_id,
                                 source_image_name="golden-web-v1", source_image_relation="owned", copy_name="onward",
                                 reason="tests", licence_confirmed_at=timezone.now(), requested_by=w.dst_member,
                                 approval_required=True, digest="0" * 64)
    policy = set_rule(w, keep_last=1)
    (candidate,) = selectors.retention_candidates(policy=policy)
    assert candidate.held == selectors.HELD_SHARE.format(share=share.public_id, state="requested")
    with pytest.raises(ValidationError, match="Nothing to delete"):
        propose(w, policy)
    Share.objects.filter(pk=share.pk).update(state=Share.State.COMPLETED)
    LaunchGrant.objects.create(share=share, account=w.gamma, image_id=old.image_id, grantee_account_id="111122223333",
                               state=LaunchGrant.State.GRANTED)
    (candidate,) = selectors.retention_candidates(policy=policy)
    assert candidate.held == selectors.HELD_GRANT.format(share=share.public_id)
    assert retention_deletes.retention_sweep(now=timezone.now()) == 0
    assert not RetentionRun.objects.exists()


def test_what_changed_since_the_proposal_is_checked_again_right_before_deleting(w):
    v3 = make_copy(w, w.versions[2], latest=True)
    InventoryEntry.objects.filter(pk=w.copies[1].pk).update(is_latest=False)
    run = propose(w, set_rule(w, keep_last=1))
    assert run.items.count() == 2
    confirm(w, run)
    # Meanwhile: v1 is shared on; v2 is tagged pinned in the cloud (the inventory has not seen it yet).
    Share.objects.create(team=w.dest, source_account=w.gamma, source_image_id=w.copies[0].image_id,
                         source_image_name="v1", source_image_relation="owned", copy_name="onward", reason="tests",
                         licence_confirmed_at=timezone.now(), requested_by=w.dst_member, approval_required=True,
                         digest="0" * 64)
    outscale.tag_resources(creds=credentials_for(w.gamma, purpose="tests"), resource_ids=[w.copies[1].image_id],
                           tags={selectors.PINNED_TAG: "ops"})
    delete_now(run)
    states = dict(run.items.values_list("entry_id", "state"))
    assert states == {w.copies[0].pk: State.KEPT, w.copies[1].pk: State.KEPT}
    assert deletes(w) == 0 and in_cloud(w, w.copies[0]) and in_cloud(w, w.copies[1]) and in_cloud(w, v3)
    assert RetentionItem.objects.get(entry=w.copies[1]).message == retention_deletes.PINNED_SINCE
    assert InventoryEntry.objects.get(pk=w.copies[1].pk).pinned
    assert AuditEvent.objects.filter(action="retention.copy_kept").count() == 2
    assert RetentionRun.objects.get(pk=run.pk).state == RetentionRun.State.DONE


def test_end_of_life_is_set_by_the_source_team_and_lets_the_copies_go_the_day_after(w):
    v1 = w.versions[0]
    with pytest.raises(ValidationError, match="Only the team that publishes"):  # the recipient team cannot
        retention.version_set_end_of_life(access=access(w.dst_admin, w.dest), version=v1, end_of_life=None)
    policy = set_rule(w, keep_last=None, end_of_life=True)
    today = timezone.now().date()
    retention.version_set_end_of_life(access=access(w.src_member, w.source), version=v1, end_of_life=today)
    assert selectors.retention_candidates(policy=policy) == []  # not before the day after
    retention.version_set_end_of_life(access=access(w.src_member, w.source), version=v1,
                                      end_of_life=today - timedelta(days=1))
    (candidate,) = selectors.retention_candidates(policy=policy)
    assert candidate.entry == w.copies[0] and "reached its end of life" in candidate.reason
    event = AuditEvent.objects.filter(action="retention.end_of_life_set").latest("seq")
    assert event.details["after"] == (today - timedelta(days=1)).isoformat()
    # The latest copy stays even past its end of life: consumers would lose the image they look up.
    retention.version_set_end_of_life(access=access(w.src_member, w.source), version=w.versions[1],
                                      end_of_life=today - timedelta(days=1))
    held = {c.entry.pk: c.held for c in selectors.retention_candidates(policy=policy)}
    assert held == {w.copies[0].pk: "", w.copies[1].pk: selectors.HELD_LATEST}


# --- four eyes ------------------------------------------------------------------------------------

def test_whoever_set_the_rule_cannot_confirm_its_runs(w):
    run = propose(w, set_rule(w, keep_last=1, by=w.dst_approver), by=w.dst_approver)
    with pytest.raises(ValidationError, match="You set this rule"):
        confirm(w, run, by=w.dst_approver)
    denied = AuditEvent.objects.get(action="retention.confirmed", outcome="denied")
    assert denied.details["reason"] == "set_the_rule" and denied.actor_id == w.dst_approver.pk
    with pytest.raises(PermissionDenied):  # a member has no APPROVE
        confirm(w, run, by=w.dst_member)
    # An approver whose role the rule's setter gave, or given after the rule: refused too.
    late = factories.add_member(w.dest, factories.make_user("late@dst.test"), Role.APPROVER,
                                granted_by=w.dst_approver).user
    with pytest.raises(ValidationError, match="given by the person who set this rule"):
        confirm(w, run, by=late)
    Membership.objects.filter(user=late).update(role_granted_by=None)
    with pytest.raises(ValidationError, match="given after this rule was set"):
        confirm(w, run, by=late)
    assert RetentionRun.objects.get(pk=run.pk).state == RetentionRun.State.PROPOSED and deletes(w) == 0
    confirm(w, run, by=w.dst_admin)
    assert RetentionRun.objects.get(pk=run.pk).state == RetentionRun.State.CONFIRMED


def test_a_changed_rule_cancels_the_run_proposed_under_the_old_one(w):
    policy = set_rule(w, keep_last=1)
    run = propose(w, policy)
    set_rule(w, keep_last=2, by=w.dst_approver)
    run.refresh_from_db()
    assert run.state == RetentionRun.State.CANCELLED and run.cancelled_by == w.dst_approver
    with pytest.raises(ValidationError, match="no longer waiting"):
        confirm(w, run, by=w.dst_admin)
    # Now the approver set it: the admin confirms, not the approver.
    set_rule(w, keep_last=1, by=w.dst_approver)
    run = propose(w, RetentionPolicy.objects.get(pk=policy.pk))
    with pytest.raises(ValidationError, match="You set this rule"):
        confirm(w, run, by=w.dst_approver)


# --- the sweep ------------------------------------------------------------------------------------

def test_the_sweep_proposes_once_and_not_again_what_was_cancelled(w):
    policy = set_rule(w, keep_last=1)
    now = timezone.now()
    assert retention_deletes.retention_sweep(now=now) == 1
    assert retention_deletes.retention_sweep(now=now) == 0  # one open run per rule
    run = RetentionRun.objects.get()
    assert run.proposed_by is None and run.items.count() == 1
    with pytest.raises(ValidationError, match="already open"):
        propose(w, policy)
    retention.run_cancel(access=access(w.dst_approver, w.dest), run=run)
    assert retention_deletes.retention_sweep(now=now) == 0  # the same copy someone just cancelled
    make_copy(w, w.versions[2], latest=True)  # v3: v2 may go too now
    InventoryEntry.objects.filter(pk=w.copies[1].pk).update(is_latest=False)
    assert retention_deletes.retention_sweep(now=now) == 1
    assert RetentionRun.objects.get(state="proposed").items.count() == 2
    assert deletes(w) == 0


def test_a_run_the_rules_change_cancelled_is_proposed_again_by_the_sweep(w):
    policy = set_rule(w, keep_last=1)
    propose(w, policy)
    set_rule(w, keep_last=1, end_of_life=True, by=w.dst_approver)  # cancels the run, same copy under the new rule
    assert retention_deletes.retention_sweep(now=timezone.now()) == 1
    assert RetentionRun.objects.get(state="proposed").items.get().entry == w.copies[0]


def test_two_sweeps_at_once_make_one_run(w):
    set_rule(w, keep_last=1)
    barrier, results = threading.Barrier(2), []

    def sweep():
        try:
            barrier.wait()
            results.append(retention_deletes.retention_sweep(now=timezone.now()))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1] and RetentionRun.objects.count() == 1


# --- exactly one DeleteImage ----------------------------------------------------------------------

def confirmed_run(w) -> RetentionRun:
    run = propose(w, set_rule(w, keep_last=1))
    with workers_paused():
        confirm(w, run)
    return run


class workers_paused:
    """Confirm without running the queued job: the test runs the deletions itself."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        workers.flush()


def test_a_retried_job_makes_one_delete_image(w):
    run = confirmed_run(w)
    delete_now(run)
    delete_now(run)  # the same job again (rq retried it, or the reconciler re-enqueued it)
    assert deletes(w) == 1
    assert run.items.get().state == State.DELETED
    assert AuditEvent.objects.filter(action="retention.copy_deleted").count() == 1
    assert AuditEvent.objects.filter(action="retention.completed").count() == 1


def test_a_second_job_while_the_first_is_inside_delete_image_makes_no_call(w, monkeypatch):
    run = confirmed_run(w)
    real, second = outscale.delete_image, []

    def delete_image(**kwargs):
        if not second:  # the first job is inside its call: a second job runs now, in another worker
            thread = threading.Thread(target=lambda: (delete_now(run), second.append(deletes(w)), connection.close()))
            thread.start()
            thread.join()
        return real(**kwargs)

    monkeypatch.setattr(outscale, "delete_image", delete_image)
    delete_now(run)
    assert second == [0] and deletes(w) == 1
    assert run.items.get().state == State.DELETED


def test_two_jobs_at_once_make_one_delete_image(w):
    run = confirmed_run(w)
    barrier = threading.Barrier(2)

    def job():
        try:
            barrier.wait()
            delete_now(run)
        finally:
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert deletes(w) == 1 and run.items.get().state == State.DELETED
    assert AuditEvent.objects.filter(action="retention.copy_deleted").count() == 1


@pytest.mark.parametrize("called", [False, True], ids=["before-the-call", "after-the-call"])
def test_a_worker_dying_after_its_claim_is_resumed_after_the_lease_without_a_second_delete(w, monkeypatch, called):
    run = confirmed_run(w)
    real = outscale.delete_image

    def dies(**kwargs):
        if called:
            real(**kwargs)  # OUTSCALE deleted it; the worker died before writing it down
        raise WorkerDied

    monkeypatch.setattr(outscale, "delete_image", dies)
    with pytest.raises(WorkerDied):
        delete_now(run)
    monkeypatch.setattr(outscale, "delete_image", real)
    item = run.items.get()
    assert item.state == State.DELETING and item.claimed_at is not None
    # Within the lease nobody takes it back: a slow worker may still be inside its call.
    retention_deletes.retention_sweep(now=timezone.now())
    delete_now(run)
    assert RetentionItem.objects.get(pk=item.pk).state == State.DELETING
    # Past the lease the reconciler re-enqueues the run; the job looks the image up first.
    past = timezone.now() - timedelta(seconds=retention_deletes.lease_seconds() + 1)
    RetentionItem.objects.filter(pk=item.pk).update(claimed_at=past)
    workers.flush()
    assert retention_deletes.retention_sweep(now=timezone.now()) == 1
    workers.run_jobs()
    item.refresh_from_db()
    assert item.state == (State.GONE if called else State.DELETED)
    assert deletes(w) == 1 and not in_cloud(w, w.copies[0]) and in_cloud(w, w.copies[1])
    assert RetentionRun.objects.get(pk=run.pk).state == RetentionRun.State.DONE


def test_throttling_waits_and_then_deletes_once(w):
    run = confirmed_run(w)
    w.cloud.faults.configure(throttle_rate=1.0, actions={"DeleteImage"})
    delete_now(run)
    item = run.items.get()
    assert item.state == State.DELETING and item.claimed_at is None  # let go: the next run takes it at once
    assert item.message.startswith("Waiting for OUTSCALE") and deletes(w) == 0
    w.cloud.faults.reset()
    workers.run_jobs()  # the retry the job queued for itself
    item.refresh_from_db()
    assert item.state == State.DELETED and deletes(w) == 1
    assert len(item.cloud_request_ids) >= 2  # the throttled attempts' and the delete's


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_a_lost_answer_is_looked_up_and_never_deleted_twice(w, mode):
    run = confirmed_run(w)
    w.cloud.faults.configure(lost_response_rate=1.0, actions={"DeleteImage"}, lost_response_mode=mode)
    delete_now(run)
    w.cloud.faults.reset()
    delete_now(run)
    item = run.items.get()
    assert item.state == State.GONE and item.message == retention_deletes.LOST_ANSWER_GONE
    assert deletes(w) == 1 and not in_cloud(w, w.copies[0]) and in_cloud(w, w.copies[1])
    assert InventoryEntry.objects.get(pk=w.copies[0].pk).cloud_state == "deleted"


def test_a_copy_deleted_behind_the_portals_back_is_gone_without_a_call(w):
    run = confirmed_run(w)
    outscale.delete_image(creds=credentials_for(w.gamma, purpose="tests"), image_id=w.copies[0].image_id)
    delete_now(run)
    assert run.items.get().state == State.GONE and deletes(w) == 1  # only the one made behind its back


# --- the pages ------------------------------------------------------------------------------------

def url(name, team, **kwargs):
    return reverse(f"distribution:{name}", kwargs={"team_id": team.public_id, **kwargs})


def test_the_pages_walk_a_rule_from_setting_to_deletion(w, client):
    fam = {"family_id": w.family.public_id}
    client.force_login(w.dst_member)
    page = client.get(url("retention-list", w.dest))
    assert page.status_code == 200 and b"golden-web" in page.content and b"No rule: every copy stays" in page.content
    assert b"Set a rule" not in client.get(url("retention-family", w.dest, **fam)).content  # a member reads only

    client.force_login(w.dst_admin)
    response = client.post(url("retention-rule", w.dest, **fam), {"keep_last": "1"}, follow=True)
    assert b"Retention rule for golden-web saved." in response.content
    assert b"What a run would propose now" in response.content and b"Propose now" in response.content
    response = client.post(url("retention-propose", w.dest, **fam), follow=True)
    assert b"1 copy of golden-web proposed for deletion" in response.content
    run = RetentionRun.objects.get()
    # The admin set the rule: no confirm button, the reason instead; the approver gets the button.
    page = client.get(url("retention-run", w.dest, run_id=run.public_id))
    assert b"You set this rule" in page.content and b"Confirm: delete" not in page.content
    client.force_login(w.dst_approver)
    page = client.get(url("retention-family", w.dest, **fam))
    assert b"Confirm: delete 1 copy" in page.content and w.copies[0].image_id.encode() in page.content
    response = client.post(url("retention-confirm", w.dest, run_id=run.public_id), follow=True)
    assert b"Confirmed: 1 copy of golden-web will be deleted now." in response.content
    workers.run_jobs()
    page = client.get(url("retention-run", w.dest, run_id=run.public_id))
    assert b'data-state="deleted"' in page.content and b"RequestId" in page.content
    assert deletes(w) == 1 and not in_cloud(w, w.copies[0])
    history = client.get(url("retention-family", w.dest, **fam))
    assert b"confirmed by" in history.content and b"Nothing: the rule keeps every copy" in history.content


def test_cancel_from_the_page_deletes_nothing(w, client):
    run = propose(w, set_rule(w, keep_last=1))
    client.force_login(w.dst_approver)
    response = client.post(url("retention-cancel", w.dest, run_id=run.public_id), follow=True)
    assert b"Run cancelled: nothing was deleted." in response.content
    assert RetentionRun.objects.get(pk=run.pk).state == RetentionRun.State.CANCELLED and deletes(w) == 0
    response = client.post(url("retention-confirm", w.dest, run_id=run.public_id), follow=True)
    assert b"no longer waiting for confirmation" in response.content


def test_the_source_team_sets_a_versions_end_of_life_on_its_page(w, client):
    client.force_login(w.src_member)
    page = client.get(url("retention-end-of-life", w.source, family_id=w.family.public_id))
    assert page.status_code == 200 and b'data-end-of-life="3"' in page.content
    v1 = w.versions[0]
    response = client.post(url("retention-end-of-life-set", w.source, version_id=v1.public_id),
                           {"end_of_life": "2025-06-30"}, follow=True)
    assert b"End of life of golden-web v1 set to 2025-06-30." in response.content
    assert str(FamilyVersion.objects.get(pk=v1.pk).end_of_life) == "2025-06-30"
    client.post(url("retention-end-of-life-set", w.source, version_id=v1.public_id), {"end_of_life": ""})
    assert FamilyVersion.objects.get(pk=v1.pk).end_of_life is None
    # The same form on each row of the family's own page, which it comes back to.
    detail = url("family-detail", w.source, family_id=w.family.public_id)
    assert b'data-end-of-life="1"' in client.get(detail).content
    response = client.post(url("retention-end-of-life-set", w.source, version_id=v1.public_id),
                           {"end_of_life": "2026-01-31", "next": "family"})
    assert response.status_code == 302 and response["Location"] == detail
    # The recipient team reaches neither the page nor the version: not its family.
    client.force_login(w.dst_admin)
    assert client.get(url("retention-end-of-life", w.dest, family_id=w.family.public_id)).status_code == 404
    assert client.post(url("retention-end-of-life-set", w.dest, version_id=v1.public_id),
                       {"end_of_life": "2025-06-30"}).status_code == 404


def test_the_family_page_reads_in_a_few_queries_whatever_the_copies(w, client, django_assert_max_num_queries):
    set_rule(w, keep_last=1)
    more = [FamilyVersion.objects.create(family=w.family, number=n, image_id=f"ami-1{n:07d}", image_name=f"g-{n}")
            for n in range(4, 24)]
    InventoryEntry.objects.bulk_create([InventoryEntry(team=w.dest, account=w.gamma, image_id=f"ami-2{v.number:07d}",
                                                       family=w.family, version=v, cloud_state="available")
                                        for v in more])
    client.force_login(w.dst_approver)
    with django_assert_max_num_queries(20):
        page = client.get(url("retention-family", w.dest, family_id=w.family.public_id))
    assert page.status_code == 200 and page.content.count(b"data-candidate=") == 21
    run = propose(w, RetentionPolicy.objects.get())
    with django_assert_max_num_queries(20):
        page = client.get(url("retention-run", w.dest, run_id=run.public_id))
    assert page.content.count(b"data-item=") == 20  # v2 carries the latest tag: held back


def test_a_worker_killed_inside_delete_image_leaves_one_delete(w):
    """A real `manage.py rqworker` killed with SIGKILL while OUTSCALE holds its DeleteImage (applied
    after the worker died): a second worker's reconciler takes the copy back once its lease ran out,
    looks it up, finds it gone, and calls DeleteImage no more."""
    run = confirmed_run(w)
    env = dict(OMIPORTAL_SWEEP_MIN_SECONDS=0.2, OMIPORTAL_SWEEP_MAX_SECONDS=0.5, OMIPORTAL_RECONCILE_GRACE_SECONDS=1,
               OMIPORTAL_RECONCILE_EVERY_SECONDS=1, OMIPORTAL_OUTSCALE_READ_TIMEOUT=5,
               OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT=1, OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS=1, OMIPORTAL_SWEEP_CONCURRENCY=1,
               OMIPORTAL_OUTSCALE_CALLS_PER_SECOND=100, OMIPORTAL_SWEEP_BUDGET_SECONDS=0.5)
    w.cloud.faults.configure(hold_seconds=3, hold_actions={"DeleteImage"})
    retention.enqueue_deletes(run)  # outside a transaction: sent at once
    item = run.items.get()
    first = workers.start_worker(workers.worker_env(w.cloud, **env))
    try:
        w.wait_for(lambda: RetentionItem.objects.get(pk=item.pk).state, lambda state: state == State.DELETING,
                   timeout=60)
        time.sleep(1.0)  # inside DeleteImage, held by OUTSCALE
    finally:
        workers.kill_tree(first)
    w.wait_for(lambda: deletes(w), lambda n: n == 1, timeout=10)  # OUTSCALE went on without the worker
    w.cloud.faults.reset()
    assert RetentionItem.objects.get(pk=item.pk).state == State.DELETING
    second = workers.start_worker(workers.worker_env(w.cloud, **env))
    try:
        w.wait_for(lambda: RetentionItem.objects.get(pk=item.pk).state, lambda state: state == State.GONE,
                   timeout=90, interval=0.2)
        # The run closes in its own transaction after its last copy's end: wait for it too
        # (asserting at once raced the job under load).
        w.wait_for(lambda: RetentionRun.objects.get(pk=run.pk).state,
                   lambda state: state == RetentionRun.State.DONE, timeout=30, interval=0.2)
    finally:
        workers.kill_tree(second)
    assert deletes(w) == 1 and not in_cloud(w, w.copies[0]) and in_cloud(w, w.copies[1])
