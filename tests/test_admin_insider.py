"""The admin site cannot undo the portal's controls (INS-05, and the admin's share of AUD-14).

Each test is the attempt of an insider with staff access: signed in to the admin with a password and
a TOTP code, holding every model permission Django has (not a superuser unless said). Each shows the
attempt refused and nothing changed, or the change made and recorded in the trail with before/after.
"""

from base64 import b32encode
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import CloudAccount, Membership, Team, User
from audit.models import AuditEvent
from audit.recorder import record
from tests import factories
from tests.test_twofactor import code_for, enrol


@pytest.fixture
def admin_client(clock):
    """Signs ``user`` in through the admin's own sign-in form, with password and TOTP code."""

    def sign_in(user) -> Client:
        device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or enrol(user, clock)
        clock.now += 30  # a step not used yet
        client = Client()
        response = client.post(reverse("admin:login"), {
            "username": user.email, "password": factories.PASSWORD, "otp_device": device.persistent_id,
            "otp_token": code_for(device, clock.now), "next": "/admin/"})
        assert response.status_code == 302, "the admin sign-in with a code should succeed"
        return client

    return sign_in


@pytest.fixture
def insider(world, admin_client):
    """Staff, not a superuser, with every model permission there is."""
    user = factories.make_user("ops@alpha.test", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    return SimpleNamespace(user=user, client=admin_client(user))


@pytest.fixture
def approver_device(world, clock):
    return enrol(world.approver, clock)


def _admin(name, *args):
    return reverse(f"admin:{name}", args=args)


def _events(action, **filters):
    return AuditEvent.objects.filter(action=action, **filters)


# --- Second factors ----------------------------------------------------------------------------------


def test_it_never_shows_a_totp_secret_or_qr_code(insider, approver_device):
    secrets = (approver_device.key, b32encode(approver_device.bin_key).decode(), "otpauth://")
    pk = approver_device.pk
    for url in (_admin("otp_totp_totpdevice_changelist"), _admin("otp_totp_totpdevice_change", pk)):
        response = insider.client.get(url)
        assert response.status_code == 200
        assert not any(secret in response.content.decode() for secret in secrets)
    for url in (_admin("otp_totp_totpdevice_config", pk), _admin("otp_totp_totpdevice_qrcode", pk),
                _admin("otp_totp_totpdevice_add")):
        assert insider.client.get(url).status_code == 403


def test_it_cannot_give_a_device_a_key_it_knows(insider, approver_device):
    known = "00" * 20
    response = insider.client.post(_admin("otp_totp_totpdevice_change", approver_device.pk), {
        "user": approver_device.user_id, "name": "mine", "confirmed": "on", "key": known, "step": 30, "t0": 0,
        "digits": 6, "tolerance": 1, "drift": 0, "throttling_failure_count": 0})
    assert response.status_code == 403
    assert TOTPDevice.objects.get(pk=approver_device.pk).key == approver_device.key
    added = insider.client.post(_admin("otp_totp_totpdevice_add"), {
        "user": approver_device.user_id, "name": "mine", "confirmed": "on", "key": known, "step": 30, "t0": 0,
        "digits": 6, "tolerance": 1, "drift": 0, "throttling_failure_count": 0})
    assert added.status_code == 403
    assert not TOTPDevice.objects.filter(key=known).exists()


def test_it_removes_a_lost_device_and_the_trail_says_who_and_whose(insider, world, approver_device):
    response = insider.client.post(_admin("otp_totp_totpdevice_delete", approver_device.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(pk=approver_device.pk).exists()
    event = _events("twofactor.removed", actor_id=insider.user.pk).get()
    assert (event.target_type, event.target_id) == ("accounts.user", str(world.approver.pk))
    assert event.details["via"] == "admin"


def test_it_records_each_device_removed_in_bulk(insider, world, clock):
    devices = [enrol(world.approver, clock), enrol(world.admin, clock)]
    response = insider.client.post(_admin("otp_totp_totpdevice_changelist"), {
        "action": "delete_selected", "_selected_action": [d.pk for d in devices], "post": "yes"})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(pk__in=[d.pk for d in devices]).exists()
    whose = set(_events("twofactor.removed", actor_id=insider.user.pk).values_list("target_id", flat=True))
    assert whose == {str(world.approver.pk), str(world.admin.pk)}


# --- Credentials ---------------------------------------------------------------------------------------


def test_it_cannot_reach_the_password_change_view_for_an_approver(insider, world):
    url = _admin("auth_user_password_change", world.approver.pk)
    before = User.objects.get(pk=world.approver.pk).password
    assert insider.client.get(url).status_code == 403
    response = insider.client.post(url, {"password1": "insider chosen pass", "password2": "insider chosen pass",
                                         "usable_password": "true"})
    assert response.status_code == 403
    assert User.objects.get(pk=world.approver.pk).password == before
    denied = _events("access.denied", outcome="denied", actor_id=insider.user.pk,
                     details__reason="admin_password_change")
    assert denied.count() == 2


def test_the_user_page_has_no_password_hash_and_no_link_to_change_it(insider, world):
    page = insider.client.get(_admin("accounts_user_change", world.approver.pk)).content.decode()
    assert world.approver.password not in page
    assert "password/" not in page


def test_even_a_superuser_cannot_set_someone_elses_password(world, admin_client):
    boss = factories.make_user("root@alpha.test", is_staff=True, is_superuser=True)
    client = admin_client(boss)
    url = _admin("auth_user_password_change", world.approver.pk)
    before = User.objects.get(pk=world.approver.pk).password
    assert client.post(url, {"password1": "root chosen pass", "password2": "root chosen pass"}).status_code == 403
    assert User.objects.get(pk=world.approver.pk).password == before


def test_the_admins_own_password_page_sends_staff_to_the_portals_audited_one(insider):
    response = insider.client.get(reverse("admin:password_change"))
    assert response.status_code == 302 and response["Location"] == reverse("password_change")


def test_it_cannot_add_a_user_with_a_password(insider):
    response = insider.client.post(_admin("accounts_user_add"), {
        "email": "puppet@insider.test", "password1": "insider chosen pass", "password2": "insider chosen pass"})
    assert response.status_code == 403
    assert not User.objects.filter(email="puppet@insider.test").exists()


def _user_form(user, **changes):
    data = {flag: "on" for flag in ("is_active", "is_staff", "is_superuser", "is_compliance_officer")
            if getattr(user, flag)}
    data |= {"email": user.email, "full_name": user.full_name}
    for key, value in changes.items():
        if value is False:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_it_cannot_change_an_approvers_email_or_give_anyone_groups_or_permissions(insider, world):
    group = Group.objects.create(name="everything")
    group.permissions.set(Permission.objects.all())
    response = insider.client.post(_admin("accounts_user_change", world.approver.pk), _user_form(
        world.approver, email="insider@evil.test", full_name="Renamed",
        groups=[group.pk], user_permissions=list(Permission.objects.values_list("pk", flat=True))))
    assert response.status_code == 302
    approver = User.objects.get(pk=world.approver.pk)
    assert (approver.email, approver.full_name) == (world.approver.email, world.approver.full_name)
    assert not approver.groups.exists() and not approver.user_permissions.exists()
    # Nor through the group: its permissions are shown, never changed.
    empty = Group.objects.create(name="insiders")
    insider.user.groups.add(empty)
    assert insider.client.post(_admin("auth_group_change", empty.pk), {
        "name": "insiders", "permissions": [p.pk for p in Permission.objects.all()]}).status_code == 403
    assert insider.client.post(_admin("auth_group_add"), {"name": "more"}).status_code == 403
    assert not empty.permissions.exists() and not Group.objects.filter(name="more").exists()


# --- Access flags --------------------------------------------------------------------------------------


def test_flag_changes_are_recorded_with_before_and_after(insider, world):
    response = insider.client.post(_admin("accounts_user_change", world.member.pk), _user_form(
        world.member, is_compliance_officer="on", is_staff="on"))
    assert response.status_code == 302
    member = User.objects.get(pk=world.member.pk)
    assert member.is_compliance_officer and member.is_staff
    event = _events("user.access_changed", actor_id=insider.user.pk).get()
    assert event.target_id == str(world.member.pk)
    assert event.details["before"] == {"is_staff": False, "is_compliance_officer": False}
    assert event.details["after"] == {"is_staff": True, "is_compliance_officer": True}


def test_deactivating_someone_is_recorded(insider, world):
    insider.client.post(_admin("accounts_user_change", world.approver.pk), _user_form(world.approver,
                                                                                      is_active=False))
    assert not User.objects.get(pk=world.approver.pk).is_active
    event = _events("user.access_changed", target_id=str(world.approver.pk)).get()
    assert (event.details["before"], event.details["after"]) == ({"is_active": True}, {"is_active": False})


def test_saving_without_a_change_records_nothing(insider, world):
    insider.client.post(_admin("accounts_user_change", world.member.pk), _user_form(world.member))
    assert not _events("user.access_changed").exists()


def test_staff_cannot_make_themselves_superuser(insider):
    response = insider.client.post(_admin("accounts_user_change", insider.user.pk),
                                   _user_form(insider.user, is_superuser="on"))
    assert response.status_code == 302
    assert not User.objects.get(pk=insider.user.pk).is_superuser
    assert not _events("user.access_changed").exists()


def test_staff_cannot_touch_a_superusers_account(insider):
    boss = factories.make_user("root@alpha.test", is_staff=True, is_superuser=True)
    response = insider.client.post(_admin("accounts_user_change", boss.pk), _user_form(boss, is_active=False))
    assert response.status_code == 403
    assert User.objects.get(pk=boss.pk).is_active


def test_a_superuser_makes_another_and_it_is_recorded(world, admin_client):
    boss = factories.make_user("root@alpha.test", is_staff=True, is_superuser=True)
    admin_client(boss).post(_admin("accounts_user_change", world.admin.pk),
                            _user_form(world.admin, is_superuser="on", is_staff="on"))
    assert User.objects.get(pk=world.admin.pk).is_superuser
    event = _events("user.access_changed", actor_id=boss.pk).get()
    assert event.details["after"] == {"is_staff": True, "is_superuser": True}


def test_users_are_not_deleted_in_the_admin(insider, world):
    response = insider.client.post(_admin("accounts_user_delete", world.approver.pk), {"post": "yes"})
    assert response.status_code == 403
    assert Membership.objects.filter(user=world.approver).exists()


# --- Teams, memberships, cloud accounts -----------------------------------------------------------------


def _team_form(team, membership, **changes):
    return {"name": team.name, "require_approval_for_own_accounts": "", "request_expiry_days": 365,
            "approval_lifetime_days": 3650, "auto_accept_incoming": "on", "cleanup_exports": "",
            "require_two_factor_for_privileged": "",
            "memberships-TOTAL_FORMS": 1, "memberships-INITIAL_FORMS": 1, "memberships-MIN_NUM_FORMS": 0,
            "memberships-MAX_NUM_FORMS": 1000, "memberships-0-id": membership.pk,
            "memberships-0-team": team.pk, "memberships-0-user": membership.user_id, "memberships-0-role": "admin",
            **changes}


def test_it_cannot_change_team_settings_or_a_membership_role(insider, world):
    world.alpha.require_two_factor_for_privileged = True
    world.alpha.save()
    before = Team.objects.filter(pk=world.alpha.pk).values().get()
    membership = Membership.objects.get(team=world.alpha, user=world.member)
    response = insider.client.post(_admin("accounts_team_change", world.alpha.pk),
                                   _team_form(world.alpha, membership))
    assert response.status_code == 403
    assert Team.objects.filter(pk=world.alpha.pk).values().get() == before
    assert Membership.objects.get(pk=membership.pk).role == "member"
    # The page shows the settings and memberships, read-only.
    page = insider.client.get(_admin("accounts_team_change", world.alpha.pk))
    assert page.status_code == 200 and world.member.email in page.content.decode()
    assert 'name="require_two_factor_for_privileged"' not in page.content.decode()


def test_it_cannot_add_or_delete_a_team(insider, world):
    assert insider.client.post(_admin("accounts_team_add"), {"name": "Shadow"}).status_code == 403
    assert insider.client.post(_admin("accounts_team_delete", world.beta.pk), {"post": "yes"}).status_code == 403
    assert not Team.objects.filter(name="Shadow").exists() and Team.objects.filter(pk=world.beta.pk).exists()


def test_cloud_accounts_are_read_only_and_stay(insider, world):
    account = factories.make_cloud_account(world.alpha, label="alpha-prod")
    assert insider.client.post(_admin("accounts_cloudaccount_change", account.pk), {
        "label": "renamed", "export_bucket": "insider-bucket"}).status_code == 403
    assert insider.client.post(_admin("accounts_cloudaccount_delete", account.pk), {"post": "yes"}).status_code == 403
    assert CloudAccount.objects.filter(pk=account.pk, label="alpha-prod", export_bucket="exports").exists()


def test_sign_in_lockouts_cannot_be_lifted_in_the_admin(insider, world, client):
    from axes.models import AccessAttempt

    for _ in range(2):
        client.post(reverse("login"), {"username": world.approver.email, "password": "wrong"})
    attempt = AccessAttempt.objects.get()
    assert insider.client.get(_admin("axes_accessattempt_change", attempt.pk)).status_code == 200
    assert insider.client.post(_admin("axes_accessattempt_delete", attempt.pk), {"post": "yes"}).status_code == 403
    assert insider.client.post(_admin("axes_accessattempt_changelist"), {
        "action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"}).status_code in (200, 302)
    assert AccessAttempt.objects.filter(pk=attempt.pk, failures_since_start=2).exists()


# --- The audit trail in the admin (AUD-14) ------------------------------------------------------------------


@pytest.fixture
def event(world):
    return record(action="share.requested", actor=world.member, team=world.alpha)


@pytest.mark.parametrize("superuser", [False, True], ids=["staff", "superuser"])
def test_the_audit_admin_is_403_for_staff_who_are_not_compliance_officers(superuser, world, event, admin_client):
    staff = factories.make_user("ops@alpha.test", is_staff=True, is_superuser=superuser)
    staff.user_permissions.set(Permission.objects.all())
    client = admin_client(staff)
    assert client.get(_admin("audit_auditevent_changelist")).status_code == 403
    assert client.get(_admin("audit_auditevent_change", event.pk)).status_code == 403
    assert client.get(_admin("audit_auditevent_history", event.pk)).status_code == 403
    assert "auditevent" not in client.get(_admin("index")).content.decode()
    assert not _events("audit.read").exists()
    assert _events("access.denied", actor_id=staff.pk, details__reason="not_compliance_officer").count() == 3


def test_compliance_officers_read_the_trail_in_the_admin_and_the_read_is_recorded(world, event, admin_client):
    officer = world.compliance
    officer.is_staff = True
    officer.save()
    officer.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = admin_client(officer)
    listing = client.get(_admin("audit_auditevent_changelist"), {"outcome__exact": "success", "q": "share"})
    assert listing.status_code == 200 and "share.requested" in listing.content.decode()
    read = _events("audit.read", actor_id=officer.pk).get()
    assert read.details == {"view": "admin-list", "filters": {"outcome__exact": "success", "q": "share"}}
    assert client.get(_admin("audit_auditevent_change", event.pk)).status_code == 200
    detail = _events("audit.read", actor_id=officer.pk, details__view="admin-event").get()
    assert (detail.target_id, detail.team_id, detail.details["seq"]) == (str(event.public_id), world.alpha.pk,
                                                                        event.seq)
