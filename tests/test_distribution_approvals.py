"""Standing approvals: who may sign, what a signature binds, and what stops it."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from accounts.models import Membership, Role, Team
from audit.models import AuditEvent
from distribution.models import Family, StandingApproval, Subscription
from distribution.services import approval_binding, approvals, releases, subscriptions
from tests import factories
from tests.transfer_world import access
from transfers.errors import StepUpRequired

pytestmark = pytest.mark.django_db


def _account(team, label, region, account_id, *, incoming=True):
    return factories.make_cloud_account(team, label=label, region=region, validation_status="valid",
                                        account_id=account_id, accepts_incoming_shares=incoming)


@pytest.fixture
def dist(db):
    """Platform publishes the family golden-web from alpha (declared by its member); Research
    subscribes it with delta. Every role was given before the family was declared."""
    earlier = timezone.now() - timedelta(days=30)
    source, dest = factories.make_team("Platform"), factories.make_team("Research")
    w = SimpleNamespace(source=source, dest=dest)
    for team, prefix in ((source, "src"), (dest, "dst")):
        for role in (Role.ADMIN, Role.APPROVER, Role.MEMBER):
            user = factories.make_user(f"{role.value}@{prefix}.test")
            factories.add_member(team, user, role, granted_at=earlier)
            setattr(w, f"{prefix}_{role.value}", user)
    w.alpha = _account(source, "alpha", "eu-west-2", "111122223333", incoming=False)
    w.delta = _account(dest, "delta", "us-east-2", "444455556666")
    w.gamma = _account(dest, "gamma", "eu-west-2", "333344445555")
    w.family = Family.objects.create(team=source, source_account=w.alpha, name="golden-web", match="name",
                                     name_pattern="golden-web-*", created_by=w.src_member)
    w.subscription = subscriptions.subscription_create(access=access(w.dst_member, dest), family=w.family,
                                                       accounts=[w.delta])
    return w


def _terms(days=30, most=5):
    return {"expires_at": (timezone.now() + timedelta(days=days)).replace(microsecond=0), "max_versions": most}


def sign(w, signer=None, *, group=None, digest=None, verified_at=None, **terms):
    terms = {**_terms(), **terms}
    signer = signer or w.src_approver
    if digest is None:
        digest = approvals.standing_approval_preview(family=w.family, group=group, **terms).digest
    return approvals.standing_approval_sign(access=access(signer, w.family.team), family=w.family, group=group,
                                            digest=digest, licence_confirmed=True, verified_at=verified_at, **terms)


def _denied(reason):
    return AuditEvent.objects.filter(action="standing_approval.signed", outcome="denied",
                                     details__reason=reason).exists()


def test_an_approver_signs_for_the_subscribed_accounts_as_they_are(dist):
    approval = sign(dist, max_versions=3)
    assert approval.state == StandingApproval.State.ACTIVE and approval.signed_by == dist.src_approver
    assert [(r.account, r.bound_account_id, r.bound_region) for r in approval.recipients.all()] == [
        (dist.delta, "444455556666", "us-east-2")]
    event = AuditEvent.objects.get(action="standing_approval.signed", outcome="success")
    assert event.details["recipients"] == [["delta", "Research", "444455556666", "us-east-2"]]
    assert event.details["max_versions"] == 3 and event.details["digest"] == approval.digest
    assert approval_binding.drift(approval) == ""


def test_the_person_who_declared_the_family_cannot_sign(dist):
    Membership.objects.filter(user=dist.src_member).update(role=Role.APPROVER)
    with pytest.raises(approvals.ApprovalError, match="You declared this family"):
        sign(dist, dist.src_member)
    assert _denied("declared_family") and not StandingApproval.objects.exists()


def test_whoever_set_up_a_covered_subscription_cannot_sign(dist):
    # An approver of Platform who also belongs to Research set up Research's subscription.
    both = dist.src_approver
    factories.add_member(dist.dest, both, Role.MEMBER)
    Subscription.objects.filter(pk=dist.subscription.pk).update(created_by=both)
    with pytest.raises(approvals.ApprovalError, match="You set up or last changed Research's subscription"):
        sign(dist)
    assert _denied("set_up_subscription")


def test_whoever_last_changed_a_covered_subscription_cannot_sign(dist):
    both = dist.src_approver
    factories.add_member(dist.dest, both, Role.MEMBER)
    subscriptions.subscription_change(access=access(both, dist.dest), subscription=dist.subscription,
                                      accounts=[dist.delta, dist.gamma])
    with pytest.raises(approvals.ApprovalError, match="last changed"):
        sign(dist)
    sign(dist, dist.src_admin)  # another approver may


def test_an_approver_whose_role_came_from_the_declarer_or_after_the_family_cannot_sign(dist):
    appointed = factories.make_user("appointed@src.test")
    factories.add_member(dist.source, appointed, Role.APPROVER, granted_by=dist.src_member,
                         granted_at=timezone.now() - timedelta(days=60))
    with pytest.raises(approvals.ApprovalError, match="gave you your role"):
        sign(dist, appointed)
    newcomer = factories.add_member(dist.source, factories.make_user("new@src.test"), Role.APPROVER).user
    with pytest.raises(approvals.ApprovalError, match="after this family was declared"):
        sign(dist, newcomer)
    assert _denied("role_granted_by_declarer") and _denied("role_granted_after_family")


def test_a_member_cannot_sign(dist):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        sign(dist, dist.src_member)


def test_a_page_shown_before_the_list_changed_cannot_be_signed(dist):
    terms = _terms()
    shown = approvals.standing_approval_preview(family=dist.family, group=None, **terms)
    subscriptions.subscription_change(access=access(dist.dst_member, dist.dest), subscription=dist.subscription,
                                      accounts=[dist.delta, dist.gamma])
    with pytest.raises(approvals.ApprovalConflict, match="changed since the page was shown"):
        sign(dist, digest=shown.digest, **terms)
    assert _denied("stale_digest") and not StandingApproval.objects.exists()
    # Other terms than the page showed are another digest too.
    shown = approvals.standing_approval_preview(family=dist.family, group=None, **terms)
    with pytest.raises(approvals.ApprovalConflict):
        sign(dist, digest=shown.digest, **{**terms, "max_versions": terms["max_versions"] + 1})


def test_nothing_is_signed_for_nobody_or_for_an_account_that_cannot_receive(dist):
    subscriptions.subscription_end(access=access(dist.dst_member, dist.dest), subscription=dist.subscription)
    with pytest.raises(approvals.ApprovalError, match="Nobody receives this family yet"):
        sign(dist)
    Subscription.objects.create(family=dist.family, team=dist.dest, created_by=dist.dst_member).accounts.set(
        [dist.delta])
    dist.delta.validation_status = "invalid"
    dist.delta.save()
    with pytest.raises(approvals.ApprovalError, match="delta has no validated keys"):
        sign(dist)


def test_the_terms_are_bounded(dist, settings):
    settings.OMIPORTAL_STANDING_APPROVAL_MAX_DAYS = 180
    settings.OMIPORTAL_STANDING_APPROVAL_MAX_VERSIONS = 10
    with pytest.raises(approvals.ApprovalError, match="at most 180 days"):
        sign(dist, expires_at=timezone.now() + timedelta(days=181))
    with pytest.raises(approvals.ApprovalError, match="in the future"):
        sign(dist, expires_at=timezone.now() - timedelta(minutes=1))
    for most in (0, 11):
        with pytest.raises(approvals.ApprovalError, match="between 1 and 10"):
            sign(dist, max_versions=most)


def test_a_team_that_requires_two_factor_needs_a_fresh_code(dist, settings):
    Team.objects.filter(pk=dist.source.pk).update(require_two_factor_for_privileged=True)
    dist.family.team.refresh_from_db()
    with pytest.raises(StepUpRequired):
        sign(dist)
    stale = timezone.now() - timedelta(seconds=settings.OMIPORTAL_APPROVAL_STEP_UP_SECONDS + 5)
    with pytest.raises(StepUpRequired):
        sign(dist, verified_at=stale)
    assert _denied("step_up_missing") and _denied("step_up_stale")
    assert sign(dist, verified_at=timezone.now()).state == StandingApproval.State.ACTIVE


def test_a_new_signature_stops_the_old_one(dist):
    first = sign(dist)
    second = sign(dist, dist.src_admin)
    first.refresh_from_db()
    assert first.state == StandingApproval.State.STOPPED and f"standing approval {second.pk}" in first.stopped_reason
    assert StandingApproval.objects.filter(family=dist.family, state="active").get() == second
    assert AuditEvent.objects.filter(action="standing_approval.stopped", target_id=str(first.public_id)).exists()


def test_an_approver_stops_it_once(dist):
    approval = sign(dist)
    approvals.standing_approval_stop(access=access(dist.src_admin, dist.source), approval=approval)
    approval.refresh_from_db()
    assert approval.state == "stopped" and approval.stopped_by == dist.src_admin
    with pytest.raises(approvals.ApprovalConflict, match="no longer active"):
        approvals.standing_approval_stop(access=access(dist.src_admin, dist.source), approval=approval)


@pytest.mark.parametrize("change", ["subscribed", "changed", "ended"])
def test_a_change_of_the_subscriptions_stops_it(dist, change):
    approval = sign(dist)
    if change == "subscribed":  # another team subscribes
        other = factories.make_team("Data")
        user = factories.add_member(other, factories.make_user("m@data.test"), Role.MEMBER).user
        subscriptions.subscription_create(access=access(user, other), family=dist.family,
                                          accounts=[_account(other, "epsilon", "us-west-1", "555566667777")])
    elif change == "changed":
        subscriptions.subscription_change(access=access(dist.dst_member, dist.dest), subscription=dist.subscription,
                                          accounts=[dist.gamma])
    else:
        subscriptions.subscription_end(access=access(dist.dst_member, dist.dest), subscription=dist.subscription)
    approval.refresh_from_db()
    assert approval.state == StandingApproval.State.STOPPED and "a new signature is needed" in approval.stopped_reason
    assert AuditEvent.objects.filter(action="standing_approval.stopped", target_id=str(approval.public_id)).exists()


def test_a_rekeyed_moved_or_retired_account_no_longer_matches(dist):
    approval = sign(dist)
    dist.delta.account_id = "999988887777"
    dist.delta.save()
    assert "now OUTSCALE account 999988887777" in approval_binding.drift(approval)
    dist.delta.account_id, dist.delta.region = "444455556666", "us-west-1"
    dist.delta.save()
    assert "in us-west-1, signed as 444455556666 in us-east-2" in approval_binding.drift(approval)
    dist.delta.region, dist.delta.retired_at = "us-east-2", timezone.now()
    dist.delta.save()
    assert approval_binding.drift(approval) == "delta was retired"
    # The portal stops it when it looks (releases look before every share).
    assert approvals.approvals_stop_for_change(dist.family, "") == 1


def test_an_account_signed_for_is_retired_not_deleted_and_its_retirement_stops_the_approval(dist):
    from accounts import services as account_services

    approval = sign(dist)
    assert account_services.cloud_account_has_history(dist.gamma) is False
    assert account_services.cloud_account_has_history(dist.delta) is True
    account_services.cloud_account_retire(access=access(dist.dst_admin, dist.dest), account=dist.delta)
    assert approval_binding.drift(approval) == "delta was retired"
    assert approvals.approvals_stop_for_change(dist.family, "") == 1
    assert "delta was retired" in StandingApproval.objects.get(pk=approval.pk).stopped_reason


def test_expired_approvals_end_on_the_reconcilers_tick(dist):
    approval = sign(dist)
    StandingApproval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert releases.releases_sweep() == 1
    approval.refresh_from_db()
    assert approval.state == StandingApproval.State.EXPIRED and approval.stopped_reason.startswith("Expired on")
    assert AuditEvent.objects.filter(action="standing_approval.expired").count() == 1
    assert releases.releases_sweep() == 0


def test_a_signer_who_is_no_longer_an_approver_ends_it(dist):
    approval = sign(dist)
    Membership.objects.filter(user=dist.src_approver, team=dist.source).update(role=Role.MEMBER)
    found, why = releases.usable_approval(dist.family)
    assert found is None and "is no longer an approver" in why
    approval.refresh_from_db()
    assert approval.state == StandingApproval.State.STOPPED


def test_a_group_is_resolved_at_signing_and_keeps_its_list(dist):
    from distribution.services import groups

    owner = access(dist.src_admin, dist.source)
    group = groups.group_create(access=owner, name="production")
    groups.group_member_invite(access=owner, group=group, accounts=[dist.delta])
    member = group.members.get(account=dist.delta)
    groups.group_member_answer(access=access(dist.dst_admin, dist.dest), member=member, accept=True)
    approval = sign(dist, group=group)
    assert [r.account for r in approval.recipients.all()] == [dist.delta]
    # gamma joins later: not covered, and the approval goes on.
    groups.group_member_invite(access=owner, group=group, accounts=[dist.gamma])
    groups.group_member_answer(access=access(dist.dst_admin, dist.dest), member=group.members.get(account=dist.gamma),
                               accept=True)
    assert approval_binding.drift(approval) == "" and approval_binding.current_accounts(approval) == [dist.delta]
    # A subscription changing does not touch a group's approval.
    subscriptions.subscription_change(access=access(dist.dst_member, dist.dest), subscription=dist.subscription,
                                      accounts=[dist.gamma])
    approval.refresh_from_db()
    assert approval.state == StandingApproval.State.ACTIVE
    # delta leaves: the list would shrink, so the approval stops rather than go on without it.
    groups.group_member_leave(access=access(dist.dst_admin, dist.dest), member=member)
    assert "no longer a member of the group production" in approval_binding.drift(approval)


def test_the_groups_creator_cannot_sign_for_it(dist):
    from distribution.services import groups

    group = groups.group_create(access=access(dist.src_approver, dist.source), name="production")
    with pytest.raises(approvals.ApprovalError, match="You created the recipient group production"):
        sign(dist, group=group)


# --- The pages ----------------------------------------------------------------------------------------


def _urls(w, approval=None):
    from django.urls import reverse

    team, family = w.source.public_id, w.family.public_id
    urls = {"list": reverse("distribution:approval-list", kwargs={"team_id": team, "family_id": family}),
            "sign": reverse("distribution:approval-sign", kwargs={"team_id": team, "family_id": family})}
    if approval is not None:
        urls["stop"] = reverse("distribution:approval-stop",
                               kwargs={"team_id": team, "approval_id": approval.public_id})
    return urls


def _review(day=None, most=4):
    day = day or (timezone.now() + timedelta(days=30)).date()
    return {"group": "", "expires_on": day.isoformat(), "max_versions": str(most)}


def test_the_sign_page_shows_exactly_the_accounts_and_signs_what_it_showed(dist, client):
    client.force_login(dist.src_approver)
    page = client.get(_urls(dist)["sign"])
    assert page.status_code == 200 and b"data-review" not in page.content
    review = client.get(_urls(dist)["sign"], _review())
    html = review.content.decode()
    assert review.status_code == 200 and "data-sign-form" in html
    assert all(text in html for text in ("delta", "Research", "444455556666", "us-east-2"))
    digest = review.context["proposal"].digest
    assert f'value="{digest}"' in html
    signed = client.post(_urls(dist)["sign"], {**_review(), "digest": digest, "licence_confirmed": "on"}, follow=True)
    approval = StandingApproval.objects.get()
    assert approval.digest == digest and approval.max_versions == 4
    assert approval.expires_at.hour == 0 and approval.expires_at.date() == (timezone.now() + timedelta(days=31)).date()
    assert f"Standing approval {approval.pk} signed" in signed.content.decode()
    listing = client.get(_urls(dist)["list"]).content.decode()
    assert "0 of 4 released" in listing and "data-stop" in listing


def test_a_page_signed_after_the_list_changed_shows_the_new_list(dist, client):
    client.force_login(dist.src_approver)
    digest = client.get(_urls(dist)["sign"], _review()).context["proposal"].digest
    subscriptions.subscription_change(access=access(dist.dst_member, dist.dest), subscription=dist.subscription,
                                      accounts=[dist.delta, dist.gamma])
    answer = client.post(_urls(dist)["sign"], {**_review(), "digest": digest, "licence_confirmed": "on"})
    assert answer.status_code == 400 and not StandingApproval.objects.exists()
    html = answer.content.decode()
    assert approvals.STALE in html and "333344445555" in html  # gamma, now listed, to review again


def test_the_declarer_sees_why_they_cannot_sign_instead_of_a_button(dist, client):
    Membership.objects.filter(user=dist.src_member).update(role=Role.APPROVER)
    client.force_login(dist.src_member)
    html = client.get(_urls(dist)["sign"], _review()).content.decode()
    assert "data-cannot-sign" in html and "data-sign-form" not in html


def test_members_read_the_list_and_approvers_stop(dist, client):
    approval = sign(dist)
    client.force_login(dist.src_member)
    html = client.get(_urls(dist)["list"]).content.decode()
    assert "data-active-approval" in html and "data-stop" not in html and "444455556666" in html
    assert client.post(_urls(dist, approval)["stop"]).status_code == 403
    client.force_login(dist.src_approver)
    client.post(_urls(dist, approval)["stop"])
    assert StandingApproval.objects.get(pk=approval.pk).state == "stopped"


def test_the_list_says_which_version_waits_and_why(dist, client):
    from distribution.models import FamilyVersion

    FamilyVersion.objects.create(family=dist.family, number=3, image_id="ami-00000003", image_name="golden-web-3",
                                 state="waiting", state_message="No standing approval is active for golden-web.")
    client.force_login(dist.src_approver)
    html = client.get(_urls(dist)["list"]).content.decode()
    assert "data-waiting" in html and "Version 3 (golden-web-3) is waiting: No standing approval" in html
    assert "data-no-active" in html and "data-sign-link" in html


def test_the_list_says_when_what_it_covers_changed(dist, client):
    sign(dist)
    dist.delta.account_id = "999988887777"
    dist.delta.save()
    client.force_login(dist.src_approver)
    html = client.get(_urls(dist)["list"]).content.decode()
    assert "data-drift" in html and "now OUTSCALE account 999988887777" in html


def test_another_teams_family_and_approval_are_not_found(dist, client):
    approval = sign(dist)
    client.force_login(dist.dst_admin)
    from django.urls import reverse

    for url in _urls(dist).values():
        other = url.replace(str(dist.source.public_id), str(dist.dest.public_id))
        assert client.get(other).status_code == 404
    stop = reverse("distribution:approval-stop", kwargs={"team_id": dist.dest.public_id,
                                                         "approval_id": approval.public_id})
    assert client.post(stop).status_code == 404
    assert StandingApproval.objects.get(pk=approval.pk).state == "active"
