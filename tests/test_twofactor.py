"""Two-factor sign-in: enrolment, the second sign-in step, removal, team enforcement and the admin.

Covers APR-05 (step-up before approving, reused codes), WEB-04 (session key rotates) and WEB-12 (admin, RQ).
"""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import Membership, Role
from accounts.twofactor import services
from audit.models import AuditEvent
from tests import factories
from tests.test_authz import _share
from transfers.models import Share


def code_for(device, at):
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = at
    return f"{totp.token():06d}"


def enrol(user, clock) -> TOTPDevice:
    """An active device, confirmed with the code of the current step (the step then counts as used)."""
    device = services.twofactor_start(user=user)
    services.twofactor_confirm(user=user, code=code_for(device, clock.now))
    return TOTPDevice.objects.get(pk=device.pk)


def verify(client, device, clock, next_url=""):
    clock.now += 30  # a new step: the one used to confirm cannot be used again
    return client.post(reverse("accounts:twofactor-verify"), {"code": code_for(device, clock.now), "next": next_url})


def actions(user):
    return list(AuditEvent.objects.filter(actor_id=user.pk, action__startswith="twofactor.")
                .order_by("seq").values_list("action", "outcome"))


# --- Enrolment -------------------------------------------------------------------------------


def test_it_shows_a_secret_until_a_valid_code_confirms_it(world, client, clock):
    client.force_login(world.member)
    page = client.get(reverse("accounts:twofactor"))
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=world.member)
    secret = services.secret_base32(device)
    assert not device.confirmed
    assert secret in page.content.decode() and "otpauth://totp/" in page.content.decode()
    assert page.context["qr"].startswith("data:image/svg+xml;base64,")
    assert page["Cache-Control"].startswith("max-age=0")

    response = client.post(reverse("accounts:twofactor-confirm"), {"code": code_for(device, clock.now)})
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    after = client.get(reverse("accounts:twofactor"))
    assert secret not in after.content.decode() and "otpauth://" not in after.content.decode()
    assert actions(world.member) == [("twofactor.enrolled", "success")]


def test_it_refuses_to_confirm_with_a_wrong_code(world, client, clock):
    client.force_login(world.member)
    client.get(reverse("accounts:twofactor"))
    device = TOTPDevice.objects.get(user=world.member)
    wrong = f"{(int(code_for(device, clock.now)) + 1) % 1_000_000:06d}"
    response = client.post(reverse("accounts:twofactor-confirm"), {"code": wrong})
    assert response.status_code == 400
    assert services.WRONG_CODE_MESSAGE in response.content.decode()
    device.refresh_from_db()
    assert not device.confirmed
    assert actions(world.member) == [("twofactor.failed", "failed")]


def test_it_rejects_get_on_actions(world, client):
    client.force_login(world.member)
    for name in ("accounts:twofactor-confirm", "accounts:twofactor-remove"):
        assert client.get(reverse(name)).status_code == 405


# --- Signing in ---------------------------------------------------------------------------------


def test_a_user_with_a_device_needs_a_code_after_the_password(world, clock):
    device = enrol(world.member, clock)
    client = Client()
    response = client.post(reverse("login"), {"username": world.member.email, "password": factories.PASSWORD})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:twofactor-verify"))
    # Password only: every page leads back to the code.
    page = client.get(reverse("accounts:team-list"))
    assert page.status_code == 302 and page["Location"].startswith(reverse("accounts:twofactor-verify"))

    key_before = client.session.session_key
    response = verify(client, device, clock, next_url=reverse("accounts:team-list"))
    assert response.status_code == 302 and response["Location"] == reverse("accounts:team-list")
    assert client.session.session_key != key_before  # WEB-04
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert client.get(reverse("accounts:team-list")).status_code == 200
    assert ("twofactor.verified", "success") in actions(world.member)


def test_a_user_without_a_device_signs_in_with_the_password(world):
    client = Client()
    response = client.post(reverse("login"), {"username": world.member.email, "password": factories.PASSWORD})
    assert response.status_code == 302 and not response["Location"].startswith("/two-factor/")
    assert client.get(reverse("accounts:team-list")).status_code == 200


def test_a_reused_code_is_refused(world, client, clock):
    device = enrol(world.member, clock)
    client.force_login(world.member)
    clock.now += 30
    code = code_for(device, clock.now)
    assert client.post(reverse("accounts:twofactor-verify"), {"code": code}).status_code == 302
    other = Client()
    other.force_login(world.member)
    clock.now += 5  # same 30-second step
    response = other.post(reverse("accounts:twofactor-verify"), {"code": code})
    assert response.status_code == 400
    assert services.WRONG_CODE_MESSAGE in response.content.decode()
    assert DEVICE_ID_SESSION_KEY not in other.session
    assert actions(world.member)[-1] == ("twofactor.failed", "failed")


def test_the_code_used_to_confirm_cannot_sign_in(world, client, clock):
    device = services.twofactor_start(user=world.member)
    code = code_for(device, clock.now)
    services.twofactor_confirm(user=world.member, code=code)
    client.force_login(world.member)
    assert client.post(reverse("accounts:twofactor-verify"), {"code": code}).status_code == 400


def test_wrong_codes_are_throttled(world, client, clock):
    device = enrol(world.member, clock)
    client.force_login(world.member)
    clock.now += 30
    right = code_for(device, clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert client.post(reverse("accounts:twofactor-verify"), {"code": wrong}).status_code == 400
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    # Even the right code waits until the delay (1 second, doubling with each failure) has passed.
    response = client.post(reverse("accounts:twofactor-verify"), {"code": right})
    assert response.status_code == 400
    assert "Too many wrong codes" in response.content.decode()
    assert AuditEvent.objects.filter(action="twofactor.failed", details__reason="throttled").exists()
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=device.throttling_failure_timestamp - timedelta(seconds=10))
    assert client.post(reverse("accounts:twofactor-verify"), {"code": right}).status_code == 302
    device.refresh_from_db()
    assert device.throttling_failure_count == 0


def test_the_verify_step_only_follows_local_next_urls(world, client, clock):
    device = enrol(world.member, clock)
    client.force_login(world.member)
    response = verify(client, device, clock, next_url="https://evil.example/")
    assert response.status_code == 302 and response["Location"] == reverse("accounts:home")


def test_signing_out_from_the_verify_step_works(world, clock):
    enrol(world.member, clock)
    client = Client()
    client.post(reverse("login"), {"username": world.member.email, "password": factories.PASSWORD})
    assert client.post(reverse("logout")).status_code == 302
    assert "_auth_user_id" not in client.session


# --- Removal -------------------------------------------------------------------------------------


def test_it_removes_the_device_with_a_current_code(world, client, clock):
    device = enrol(world.member, clock)
    client.force_login(world.member)
    verify(client, device, clock)
    wrong = client.post(reverse("accounts:twofactor-remove"), {"code": code_for(device, clock.now)})  # reused
    assert wrong.status_code == 400 and TOTPDevice.objects.filter(user=world.member).exists()
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0, throttling_failure_timestamp=None)
    clock.now += 30
    response = client.post(reverse("accounts:twofactor-remove"), {"code": code_for(device, clock.now)})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=world.member).exists()
    assert actions(world.member)[-1] == ("twofactor.removed", "success")
    # Signing in again needs only the password.
    client = Client()
    response = client.post(reverse("login"), {"username": world.member.email, "password": factories.PASSWORD})
    assert not response["Location"].startswith(reverse("accounts:twofactor-verify"))


# --- Team enforcement (APR-05) -------------------------------------------------------------------


@pytest.fixture
def strict(world):
    world.alpha.require_two_factor_for_privileged = True
    world.alpha.save()
    return world


def _team_url(name, team, **kwargs):
    return reverse(name, kwargs={"team_id": team.public_id, **kwargs})


def test_an_unenrolled_approver_is_sent_to_enrol_first(strict, client):
    client.force_login(strict.approver)
    url = _team_url("transfers:approval-list", strict.alpha)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:twofactor") + "?next=")
    assert AuditEvent.objects.filter(action="access.denied", details__reason="two_factor_required").exists()
    # Pages every role may see stay open.
    assert client.get(_team_url("transfers:dashboard", strict.alpha)).status_code == 200


def test_an_approver_is_allowed_after_verifying(strict, client, clock):
    device = enrol(strict.approver, clock)
    client.force_login(strict.approver)
    url = _team_url("transfers:approval-list", strict.alpha)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:twofactor-verify"))
    response = verify(client, device, clock, next_url=url)
    assert response["Location"] == url
    assert client.get(url).status_code == 200


def test_approving_a_share_needs_a_verified_session(strict, client, clock):
    account = factories.make_cloud_account(strict.alpha)
    share = _share(strict.alpha, account, strict.member)
    url = _team_url("transfers:share-approve", strict.alpha, share_id=share.public_id)
    client.force_login(strict.approver)
    response = client.post(url, {"digest": share.digest})
    assert response.status_code == 302 and response["Location"].startswith("/two-factor/")
    assert Share.objects.get(pk=share.pk).state == share.state


def test_an_unverified_admin_cannot_manage_the_team(strict, client, clock):
    client.force_login(strict.admin)
    assert client.get(_team_url("accounts:team-settings", strict.alpha)).status_code == 302
    # Adding a member is a privileged action on a page every role may see.
    response = client.post(_team_url("accounts:member-list", strict.alpha),
                           {"email": "new@alpha.test", "role": "member"})
    assert response.status_code == 302 and response["Location"].startswith("/two-factor/")
    assert not Membership.objects.filter(user__email="new@alpha.test").exists()
    device = enrol(strict.admin, clock)
    verify(client, device, clock)
    assert client.get(_team_url("accounts:team-settings", strict.alpha)).status_code == 200


def test_members_are_not_asked_for_a_code(strict, client):
    client.force_login(strict.member)
    assert client.get(_team_url("transfers:share-list", strict.alpha)).status_code == 200
    assert client.get(_team_url("transfers:approval-list", strict.alpha)).status_code == 403


def test_without_the_setting_approvers_need_no_code(world, client):
    client.force_login(world.approver)
    assert client.get(_team_url("transfers:approval-list", world.alpha)).status_code == 200


def test_the_setting_of_one_team_does_not_reach_another(strict, client):
    client.force_login(strict.outsider)  # admin of Beta, which does not ask
    assert client.get(_team_url("accounts:team-settings", strict.beta)).status_code == 200


# --- Team settings page ---------------------------------------------------------------------------


def test_an_admin_changes_the_team_settings_and_it_is_audited(world, client):
    client.force_login(world.admin)
    url = _team_url("accounts:team-settings", world.alpha)
    assert client.get(url).status_code == 200
    response = client.post(url, {"request_expiry_days": "14", "approval_lifetime_days": "30", "cleanup_exports": "on",
                                 "export_disk_format": "qcow2",  # the select posts its value
                                 "require_approval_for_own_accounts": "on",  # the default, kept
                                 "require_two_factor_for_privileged": "on"})
    assert response.status_code == 302
    world.alpha.refresh_from_db()
    assert world.alpha.require_two_factor_for_privileged and world.alpha.request_expiry_days == 14
    event = AuditEvent.objects.get(action="team.settings_changed")
    assert event.details["before"] == {"request_expiry_days": 7, "require_two_factor_for_privileged": False}
    assert event.details["after"] == {"request_expiry_days": 14, "require_two_factor_for_privileged": True}


def test_team_settings_reject_a_bad_expiry(world, client):
    client.force_login(world.admin)
    response = client.post(_team_url("accounts:team-settings", world.alpha), {"request_expiry_days": "0"})
    assert response.status_code == 400
    world.alpha.refresh_from_db()
    assert world.alpha.request_expiry_days == 7


def test_an_approver_cannot_change_team_settings(world, client):
    client.force_login(world.approver)
    response = client.post(_team_url("accounts:team-settings", world.alpha), {"request_expiry_days": "1"})
    assert response.status_code == 403


# --- Django admin and the RQ dashboard (WEB-12) -----------------------------------------------------


@pytest.fixture
def staff(db):
    user = factories.make_user("ops@example.test", is_staff=True, is_superuser=True)
    factories.add_member(factories.make_team("Ops"), user, Role.ADMIN)
    return user


@pytest.mark.parametrize("path", ["/admin/", "/admin/accounts/user/", "/admin/rq/"])
def test_a_password_only_staff_session_gets_no_admin(staff, client, path):
    client.force_login(staff)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("path", ["/admin/", "/admin/accounts/user/", "/admin/rq/"])
def test_a_verified_staff_session_gets_the_admin(staff, client, clock, path):
    device = enrol(staff, clock)
    client.force_login(staff)
    verify(client, device, clock)
    assert client.get(path).status_code == 200


def test_a_verified_non_staff_user_gets_no_rq_dashboard(world, client, clock):
    device = enrol(world.member, clock)
    client.force_login(world.member)
    verify(client, device, clock)
    assert client.get("/admin/rq/").status_code == 302


def test_the_admin_sign_in_asks_for_a_code(staff, clock):
    device = enrol(staff, clock)
    client = Client()
    login = reverse("admin:login")
    without = client.post(login, {"username": staff.email, "password": factories.PASSWORD, "next": "/admin/"})
    assert without.status_code == 200 and not without.wsgi_request.user.is_authenticated
    clock.now += 30
    with_code = client.post(login, {"username": staff.email, "password": factories.PASSWORD,
                                    "otp_device": device.persistent_id, "otp_token": code_for(device, clock.now),
                                    "next": "/admin/"})
    assert with_code.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_device_removed_elsewhere_does_not_lock_other_sessions_out(world, clock):
    enrol(world.member, clock)
    other = Client()
    other.post(reverse("login"), {"username": world.member.email, "password": factories.PASSWORD})
    TOTPDevice.objects.filter(user=world.member).delete()
    response = other.get(reverse("accounts:team-list"), follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("accounts:twofactor"))
    assert other.get(reverse("accounts:team-list")).status_code == 200
