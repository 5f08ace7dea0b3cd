"""No single person approves alone, tried as an insider would (INS-02, INS-03, APR-05).

A team admin registers an outside account as the team's own, appoints a sock-puppet approver,
promotes someone after asking, or uses a session signed in long ago: each attempt is refused by the
service, changes nothing, and is in the trail as ``denied``.
"""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts import services as account_services
from accounts.models import CloudAccount, Membership, Role, Team
from accounts.twofactor.enforcement import VERIFIED_AT_SESSION_KEY
from audit.models import AuditEvent
from tests import factories
from tests.test_twofactor import code_for, enrol, verify
from tests.transfer_world import access, confirm_own, make_transfer_world, request_share
from transfers import errors
from transfers.models import Share
from transfers.services import requests as share_requests


@pytest.fixture
def w(cloud, db):
    return make_transfer_world(cloud)




def _denied(action, reason):
    return AuditEvent.objects.filter(action=action, outcome="denied", details__reason=reason)


def _register_outside_account(w, cloud, name="epsilon", *, by=None):
    """The admin registers keys of an account of their choosing as the team's (through the services)."""
    entry = cloud.account(name)
    admin = access(by or w.src_admin, w.source)
    account = account_services.cloud_account_create(
        access=admin, label=name, region=entry["region"], access_key=entry["access_key"],
        secret_key=entry["secret_key"], export_bucket=entry["bucket"])
    return account_services.cloud_account_validate(access=admin, account=account)


# --- Own accounts (INS-02) --------------------------------------------------------------------------------


def test_it_needs_approval_for_an_account_the_admin_registered_even_with_the_setting_off(w, cloud):
    account_services.team_settings_change(access=access(w.src_admin, w.source), require_approval_for_own_accounts=False)
    outside = _register_outside_account(w, cloud)
    assert outside.registered_by == w.src_admin and not outside.ownership_confirmed

    share = request_share(w, cloud, accounts=[outside], copy_name="own-copy", requester=w.src_admin)

    assert share.state == Share.State.REQUESTED and share.approval_required
    with pytest.raises(errors.ShareError, match="someone else must approve"):
        share_requests.share_approve(access=access(w.src_admin, w.source), share=share, digest=share.digest)


def test_it_refuses_the_admin_confirming_their_own_registration(w, cloud):
    outside = _register_outside_account(w, cloud)

    with pytest.raises(account_services.TeamError) as info:
        account_services.cloud_account_confirm_ownership(access=access(w.src_admin, w.source), account=outside)

    assert account_services.OWN_REGISTRATION_MESSAGE.format(label="epsilon") in info.value.messages
    outside.refresh_from_db()
    assert not outside.ownership_confirmed and outside.ownership_confirmed_by is None
    assert _denied("cloud_account.ownership_confirmed", "registered_by_confirmer").get().actor_id == w.src_admin.pk
    assert not AuditEvent.objects.filter(action="cloud_account.ownership_confirmed", outcome="success").exists()


def test_it_refuses_a_confirmer_the_registrant_appointed(w, cloud):
    outside = _register_outside_account(w, cloud)
    puppet = account_services.membership_add(access=access(w.src_admin, w.source), email="puppet@src.test",
                                             role=Role.APPROVER)

    with pytest.raises(account_services.TeamError, match="gave you your role"):
        account_services.cloud_account_confirm_ownership(access=access(puppet.user, w.source), account=outside)

    outside.refresh_from_db()
    assert not outside.ownership_confirmed
    assert _denied("cloud_account.ownership_confirmed", "role_granted_by_registrant").exists()


def test_a_second_person_confirms_and_only_then_the_setting_applies(w, cloud):
    outside = _register_outside_account(w, cloud)
    # On by default: even a confirmed own account needs an approver.
    assert Team._meta.get_field("require_approval_for_own_accounts").default is True

    confirmed = account_services.cloud_account_confirm_ownership(access=access(w.src_approver, w.source),
                                                                 account=outside)

    assert confirmed.ownership_confirmed and confirmed.ownership_confirmed_by == w.src_approver
    event = AuditEvent.objects.get(action="cloud_account.ownership_confirmed", outcome="success")
    assert event.actor_id == w.src_approver.pk
    assert event.details["account_id"] == cloud.account("epsilon")["account_id"]
    assert event.details["registered_by"] == w.src_admin.email
    assert request_share(w, cloud, accounts=[confirmed], copy_name="own-copy-1").state == Share.State.REQUESTED
    account_services.team_settings_change(access=access(w.src_admin, w.source), require_approval_for_own_accounts=False)
    w.source.refresh_from_db()
    share = request_share(w, cloud, accounts=[confirmed], copy_name="own-copy-2")
    assert share.state == Share.State.EXPORTING and not share.approval_required


def test_an_account_registered_before_the_change_can_be_confirmed_by_any_admin_or_approver(w, cloud):
    legacy = factories.make_cloud_account(w.source, label="legacy", validation_status="valid",
                                          account_id="123412341234")
    assert legacy.registered_by is None
    account_services.cloud_account_confirm_ownership(access=access(w.src_admin, w.source), account=legacy)
    legacy.refresh_from_db()
    assert legacy.ownership_confirmed_by == w.src_admin


def test_a_member_cannot_confirm_and_an_unchecked_account_cannot_be_confirmed(w, cloud):
    unchecked = factories.make_cloud_account(w.source, label="unchecked")
    with pytest.raises(account_services.TeamError, match="Check unchecked's keys first"):
        account_services.cloud_account_confirm_ownership(access=access(w.src_approver, w.source), account=unchecked)
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        account_services.cloud_account_confirm_ownership(access=access(w.src_member, w.source), account=unchecked)
    assert not CloudAccount.objects.filter(ownership_confirmed_at__isnull=False).exists()


@pytest.mark.parametrize("change", ["keys", "region"])
def test_re_keying_or_moving_an_account_clears_its_confirmation(w, cloud, change):
    outside = _register_outside_account(w, cloud)
    account_services.cloud_account_confirm_ownership(access=access(w.src_approver, w.source), account=outside)
    other = cloud.account("gamma")
    changes = ({"access_key": other["access_key"], "secret_key": other["secret_key"]} if change == "keys"
               else {"region": "us-east-2"})

    account = account_services.cloud_account_update(access=access(w.src_admin, w.source), account=outside, **changes)

    account.refresh_from_db()
    assert not account.ownership_confirmed and account.ownership_confirmed_by is None
    event = AuditEvent.objects.filter(action="cloud_account.changed").latest("seq")
    assert event.details["ownership_confirmation_cleared"] is True


def test_the_accounts_page_shows_who_confirmed_and_offers_the_button_to_others_only(w, cloud, client):
    outside = _register_outside_account(w, cloud)
    url = reverse("accounts:account-list", kwargs={"team_id": w.source.public_id})
    confirm = reverse("accounts:account-confirm-ownership",
                      kwargs={"team_id": w.source.public_id, "account_id": outside.public_id})

    client.force_login(w.src_admin)
    page = client.get(url).content.decode()
    assert "Awaiting confirmation by another admin or approver" in page and confirm not in page
    response = client.post(confirm, follow=True)  # the registrant posts anyway
    assert escape(account_services.OWN_REGISTRATION_MESSAGE.format(label="epsilon")) in response.content.decode()

    client.force_login(w.src_approver)
    assert confirm in client.get(url).content.decode()
    response = client.post(confirm)
    assert response.status_code == 302
    outside.refresh_from_db()
    assert outside.ownership_confirmed_by == w.src_approver
    page = client.get(url).content.decode()
    assert f"Confirmed by {w.src_approver.display_name}" in page
    assert f"on {outside.ownership_confirmed_at:%Y-%m-%d}" in page


def test_the_share_form_says_which_own_accounts_still_need_approval(w, cloud, client):
    unconfirmed = _register_outside_account(w, cloud)
    confirmed = confirm_own(w, _register_outside_account(w, cloud, "beta"), approval_off=False)
    client.force_login(w.src_member)
    url = reverse("transfers:share-new", kwargs={"team_id": w.source.public_id}) + f"?account={w.alpha.public_id}"
    rows = {line for line in client.get(url).content.decode().splitlines() if "(your team" in line}
    row_of = {account.label: next(row for row in rows if f">{account.label}</label>" in row)
              for account in (unconfirmed, confirmed)}
    note = "not confirmed as its own yet, so a copy needs approval"
    assert note in row_of["epsilon"] and note not in row_of["beta"]


def test_seed_demo_registers_by_one_admin_and_confirms_by_another_person(cloud, db, tmp_path):
    describe = tmp_path / "sandbox.json"
    describe.write_text(json.dumps(cloud.describe()))
    call_command("seed_demo", sandbox=describe, stdout=io.StringIO())
    accounts = CloudAccount.objects.select_related("registered_by", "ownership_confirmed_by")
    assert accounts.count() == 5
    for account in accounts:
        assert account.registered_by.email.startswith("admin@")
        assert account.ownership_confirmed_by.email.startswith("approver@")


# --- Sock puppets (INS-03) --------------------------------------------------------------------------------


def _untouched(share):
    current = Share.objects.get(pk=share.pk)
    return current.state == Share.State.REQUESTED and current.decided_by_id is None and current.decided_at is None


def test_it_refuses_an_approver_the_requester_appointed(w, cloud):
    puppet = account_services.membership_add(access=access(w.src_admin, w.source), email="puppet@src.test",
                                             role=Role.APPROVER).user
    share = request_share(w, cloud, requester=w.src_admin)

    for decide in (share_requests.share_approve, share_requests.share_reject):
        with pytest.raises(errors.ShareError) as info:
            decide(access=access(puppet, w.source), share=share, digest=share.digest)
        assert errors.ROLE_GRANTED_BY_REQUESTER.format(requester=w.src_admin.display_name) in info.value.messages

    assert _untouched(share)
    assert _denied("share.approved", "role_granted_by_requester").get().actor_id == puppet.pk
    assert _denied("share.rejected", "role_granted_by_requester").exists()


def test_the_approval_email_goes_only_to_approvers_who_may_decide(w, cloud, mailoutbox):
    from transfers import notifications

    account_services.membership_add(access=access(w.src_admin, w.source), email="puppet@src.test",
                                    role=Role.APPROVER)
    share = request_share(w, cloud, requester=w.src_admin)
    mailoutbox.clear()
    notifications.send("approval_needed", [share.pk])
    told = {m.to[0] for m in mailoutbox}
    assert w.src_approver.email in told
    assert "puppet@src.test" not in told and w.src_admin.email not in told


def test_it_refuses_a_member_the_requester_promoted_long_before(w, cloud):
    admin = access(w.src_admin, w.source)
    member = Membership.objects.get(team=w.source, user=w.src_member)
    account_services.membership_change_role(access=admin, membership=member, role=Role.APPROVER)
    Membership.objects.filter(pk=member.pk).update(role_granted_at=timezone.now() - timedelta(days=300))
    share = request_share(w, cloud, requester=w.src_admin)

    with pytest.raises(errors.ShareError, match="gave you your role"):
        share_requests.share_approve(access=access(w.src_member, w.source), share=share, digest=share.digest)
    assert _untouched(share)


def test_it_refuses_an_approver_promoted_after_the_request(w, cloud):
    share = request_share(w, cloud)  # by the member
    newcomer = factories.add_member(w.source, factories.make_user("new@src.test"), Role.MEMBER,
                                    granted_at=timezone.now() - timedelta(days=30))
    account_services.membership_change_role(access=access(w.src_admin, w.source), membership=newcomer,
                                            role=Role.APPROVER)

    with pytest.raises(errors.ShareError) as info:
        share_requests.share_approve(access=access(newcomer.user, w.source), share=share, digest=share.digest)

    assert errors.ROLE_GRANTED_AFTER_REQUEST in info.value.messages
    assert _untouched(share)
    assert _denied("share.approved", "role_granted_after_request").get().actor_id == newcomer.user_id


def test_it_refuses_an_approver_added_to_the_team_after_the_request(w, cloud):
    share = request_share(w, cloud)
    late = account_services.membership_add(access=access(w.src_admin, w.source), email="late@src.test",
                                           role=Role.APPROVER).user
    with pytest.raises(errors.ShareError, match="after this copy was requested"):
        share_requests.share_approve(access=access(late, w.source), share=share, digest=share.digest)
    assert _untouched(share)


def test_it_refuses_an_approver_demoted_and_promoted_again_after_the_request(w, cloud):
    share = request_share(w, cloud)
    admin = access(w.src_admin, w.source)
    approver = Membership.objects.get(team=w.source, user=w.src_approver)
    account_services.membership_change_role(access=admin, membership=approver, role=Role.MEMBER)
    account_services.membership_change_role(access=admin, membership=approver, role=Role.APPROVER)

    with pytest.raises(errors.ShareError, match="after this copy was requested"):
        share_requests.share_approve(access=access(w.src_approver, w.source), share=share, digest=share.digest)
    assert _untouched(share)


def test_it_allows_an_approver_promoted_by_someone_else_before_the_request(w, cloud):
    member = factories.add_member(w.source, factories.make_user("second@src.test"), Role.MEMBER)
    account_services.membership_change_role(access=access(w.src_admin, w.source), membership=member,
                                            role=Role.APPROVER)
    share = request_share(w, cloud)  # by the member, not by the admin who promoted

    approved = share_requests.share_approve(access=access(member.user, w.source), share=share, digest=share.digest)

    assert approved.state == Share.State.EXPORTING and approved.decided_by == member.user


def test_the_approval_pages_say_why_instead_of_offering_a_failing_button(w, cloud, client):
    share = request_share(w, cloud)
    late = account_services.membership_add(access=access(w.src_admin, w.source), email="late@src.test",
                                           role=Role.APPROVER).user
    client.force_login(late)
    listing = client.get(reverse("transfers:approval-list", kwargs={"team_id": w.source.public_id}))
    assert "after this copy was requested" in listing.content.decode()
    detail = client.get(reverse("transfers:share-detail",
                                kwargs={"team_id": w.source.public_id, "share_id": share.public_id}))
    body = detail.content.decode()
    assert "after this copy was requested" in body
    assert reverse("transfers:share-approve", kwargs={"team_id": w.source.public_id,
                                                      "share_id": share.public_id}) not in body
    # The approver who held the role before still gets the form.
    client.force_login(w.src_approver)
    detail = client.get(reverse("transfers:share-detail",
                                kwargs={"team_id": w.source.public_id, "share_id": share.public_id}))
    assert detail.context["can_decide"] and not detail.context["cannot_decide"]


# --- Step-up for approval (APR-05) -------------------------------------------------------------------------


@pytest.fixture
def strict(w):
    Team.objects.filter(pk=w.source.pk).update(require_two_factor_for_privileged=True)
    w.source.refresh_from_db()
    return w


@pytest.mark.parametrize(("age", "reason"), [(None, "step_up_missing"), (301, "step_up_stale")])
def test_the_service_refuses_a_decision_without_a_recent_code(strict, cloud, age, reason):
    share = request_share(strict, cloud)
    verified_at = None if age is None else timezone.now() - timedelta(seconds=age)

    for decide in (share_requests.share_approve, share_requests.share_reject):
        with pytest.raises(errors.StepUpRequired):
            decide(access=access(strict.src_approver, strict.source), share=share, digest=share.digest,
                   verified_at=verified_at)

    assert _untouched(share)
    assert _denied("share.approved", reason).exists() and _denied("share.rejected", reason).exists()
    fresh = timezone.now() - timedelta(seconds=10)
    approved = share_requests.share_approve(access=access(strict.src_approver, strict.source), share=share,
                                            digest=share.digest, verified_at=fresh)
    assert approved.state == Share.State.EXPORTING


def test_the_window_is_a_setting(strict, cloud, settings):
    settings.OMIPORTAL_APPROVAL_STEP_UP_SECONDS = 30
    share = request_share(strict, cloud)
    with pytest.raises(errors.StepUpRequired):
        share_requests.share_approve(access=access(strict.src_approver, strict.source), share=share,
                                     digest=share.digest, verified_at=timezone.now() - timedelta(seconds=60))
    assert _untouched(share)




def test_a_stale_session_is_sent_to_verify_and_back_then_a_fresh_code_approves(strict, cloud, client, clock,
                                                                               settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # the refused reused code below would otherwise delay the next one
    share = request_share(strict, cloud)
    device = enrol(strict.src_approver, clock)
    client.force_login(strict.src_approver)
    verify(client, device, clock)
    session = client.session
    session[VERIFIED_AT_SESSION_KEY] = (timezone.now() - timedelta(seconds=600)).timestamp()  # signed in long ago
    session.save()
    kwargs = {"team_id": strict.source.public_id, "share_id": share.public_id}
    detail = reverse("transfers:share-detail", kwargs=kwargs)

    response = client.post(reverse("transfers:share-approve", kwargs=kwargs), {"digest": share.digest})

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:twofactor-verify')}?next={detail.replace('/', '%2F')}"
    assert _untouched(share)
    assert _denied("share.approved", "step_up_stale").exists()
    # The verify page asks for a code even though the session is verified (it is too old to approve).
    assert client.get(response["Location"]).status_code == 200
    # The code that signed in cannot be used again for the step-up.
    reused = client.post(reverse("accounts:twofactor-verify"), {"code": code_for(device, clock.now), "next": detail})
    assert reused.status_code == 400
    back = verify(client, device, clock, next_url=detail)
    assert back["Location"] == detail
    response = client.post(reverse("transfers:share-approve", kwargs=kwargs), {"digest": share.digest})
    assert response["Location"] == detail
    assert Share.objects.get(pk=share.pk).state == Share.State.EXPORTING


def test_a_fresh_sign_in_code_is_enough(strict, cloud, client, clock):
    share = request_share(strict, cloud)
    device = enrol(strict.src_approver, clock)
    client.force_login(strict.src_approver)
    verify(client, device, clock)
    kwargs = {"team_id": strict.source.public_id, "share_id": share.public_id}
    client.post(reverse("transfers:share-reject", kwargs=kwargs), {"digest": share.digest, "comment": "no"})
    assert Share.objects.get(pk=share.pk).state == Share.State.REJECTED


def test_teams_that_do_not_require_two_factor_need_no_step_up(w, cloud):
    share = request_share(w, cloud)
    approved = share_requests.share_approve(access=access(w.src_approver, w.source), share=share, digest=share.digest)
    assert approved.state == Share.State.EXPORTING


def test_own_account_helper_needs_both_confirmation_and_setting(w, cloud):
    # tests/transfer_world.confirm_own is what other tests use to get an unapproved own-account copy.
    own = confirm_own(w, _register_outside_account(w, cloud), approval_off=False)
    assert request_share(w, cloud, accounts=[own], copy_name="own-a").state == Share.State.REQUESTED
    confirm_own(w, own)
    assert request_share(w, cloud, accounts=[own], copy_name="own-b").state == Share.State.EXPORTING
