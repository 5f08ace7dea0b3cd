import pytest
from django.core import mail
from django.urls import reverse

from accounts import services
from accounts.models import Membership, Role, Team, User
from accounts.selectors import team_access_for_user
from audit.models import AuditEvent
from tests.factories import PASSWORD, make_user


def _members_url(team):
    return reverse("accounts:member-list", kwargs={"team_id": team.public_id})


def _membership(team, user):
    return Membership.objects.get(team=team, user=user)


# --- Signing in -------------------------------------------------------------------------------


def test_it_signs_in_with_email_and_password_and_audits_it(world, client):
    response = client.post(reverse("login"), {"username": "member@alpha.test", "password": PASSWORD})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="auth.logged_in")
    assert event.actor_id == world.member.pk and event.outcome == "success"


def test_a_wrong_password_is_refused_with_a_message_and_audited(world, client):
    response = client.post(reverse("login"), {"username": "member@alpha.test", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct email and password" in response.content.decode()
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.outcome == "failed" and event.details == {"user_id": world.member.pk, "email": "member@alpha.test"}
    assert "wrong" not in str(event.details)


def test_repeated_failures_lock_the_user_out(world, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "member@alpha.test", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "member@alpha.test", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert AuditEvent.objects.filter(action="auth.locked_out", outcome="denied").exists()


def test_sign_out_is_post_only_and_audited(world, client):
    client.force_login(world.member)
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert AuditEvent.objects.filter(action="auth.logged_out", actor_id=world.member.pk).exists()
    assert client.get(reverse("accounts:team-list")).status_code == 302


def test_it_changes_a_password(world, client):
    client.force_login(world.member)
    response = client.post(reverse("password_change"), {
        "old_password": PASSWORD, "new_password1": "a brand new passphrase", "new_password2": "a brand new passphrase"})
    assert response.status_code == 302
    world.member.refresh_from_db()
    assert world.member.check_password("a brand new passphrase")
    assert AuditEvent.objects.filter(action="user.password_changed").exists()


def test_it_mails_a_password_reset_link(world, client):
    client.post(reverse("password_reset"), {"email": "member@alpha.test"})
    assert len(mail.outbox) == 1
    assert "/password/reset/" in mail.outbox[0].body


# --- Teams and switching ------------------------------------------------------------------------


def test_home_sends_the_user_to_their_last_team(world, client):
    team = Team.objects.create(name="Gamma")
    Membership.objects.create(team=team, user=world.member, role=Role.MEMBER)
    client.force_login(world.member)
    client.get(reverse("transfers:dashboard", kwargs={"team_id": team.public_id}))
    response = client.get(reverse("accounts:home"))
    assert response["Location"] == reverse("transfers:dashboard", kwargs={"team_id": team.public_id})


def test_the_switcher_lists_every_team_of_the_user(world, client):
    team = Team.objects.create(name="Gamma")
    Membership.objects.create(team=team, user=world.member, role=Role.AUDITOR)
    client.force_login(world.member)
    page = client.get(reverse("transfers:dashboard", kwargs={"team_id": world.alpha.public_id})).content.decode()
    assert "Gamma" in page and "Alpha" in page and "Beta" not in page


def test_a_user_without_a_team_is_told_what_to_do(db, client):
    client.force_login(make_user("new@example.com"))
    response = client.get(reverse("accounts:home"), follow=True)
    assert "You are not in a team yet" in response.content.decode()


def test_creating_a_team_makes_its_creator_admin(db, client):
    user = make_user("founder@example.com")
    client.force_login(user)
    client.post(reverse("accounts:team-list"), {"name": "Delta"})
    assert _membership(Team.objects.get(name="Delta"), user).role == Role.ADMIN
    assert AuditEvent.objects.filter(action="team.created").exists()


def test_a_duplicate_team_name_is_refused(world, client):
    client.force_login(world.member)
    response = client.post(reverse("accounts:team-list"), {"name": "alpha"})
    assert services.DUPLICATE_TEAM_MESSAGE in response.content.decode()
    assert Team.objects.count() == 2


# --- Members -------------------------------------------------------------------------------------


def test_an_admin_adds_an_existing_user_by_email(world, client):
    newcomer = make_user("newcomer@example.com")
    client.force_login(world.admin)
    response = client.post(_members_url(world.alpha), {"email": "Newcomer@Example.com", "role": "approver"})
    assert response.status_code == 302
    assert _membership(world.alpha, newcomer).role == Role.APPROVER
    event = AuditEvent.objects.get(action="membership.added")
    assert event.details["role"] == "approver" and event.team_id == world.alpha.pk


def test_an_unknown_email_gets_an_invitation(world, client, django_capture_on_commit_callbacks):
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(_members_url(world.alpha), {"email": "stranger@example.com", "role": "member"})
    user = User.objects.get(email="stranger@example.com")
    assert not user.has_usable_password()
    assert len(mail.outbox) == 1 and "Choose your password" in mail.outbox[0].body


def test_a_duplicate_membership_is_refused_and_changes_nothing(world, client):
    client.force_login(world.admin)
    response = client.post(_members_url(world.alpha), {"email": "member@alpha.test", "role": "admin"})
    assert response.status_code == 400
    assert "member@alpha.test is already a member of Alpha." in response.content.decode()
    assert _membership(world.alpha, world.member).role == Role.MEMBER


def test_an_invalid_email_is_explained(world, client):
    client.force_login(world.admin)
    response = client.post(_members_url(world.alpha), {"email": "not-an-email", "role": "member"})
    assert "Enter a valid email address." in response.content.decode()


def test_an_admin_changes_a_role(world, client):
    client.force_login(world.admin)
    m = _membership(world.alpha, world.member)
    client.post(reverse("accounts:member-role", kwargs={"team_id": world.alpha.public_id,
                                                         "membership_id": m.public_id}), {"role": "approver"})
    m.refresh_from_db()
    assert m.role == Role.APPROVER
    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.details["before"] == "member" and event.details["after"] == "approver"


def test_an_unknown_role_is_refused(world, client):
    client.force_login(world.admin)
    m = _membership(world.alpha, world.member)
    response = client.post(reverse("accounts:member-role", kwargs={
        "team_id": world.alpha.public_id, "membership_id": m.public_id}), {"role": "overlord"}, follow=True)
    assert "Choose one of the listed roles." in response.content.decode()
    m.refresh_from_db()
    assert m.role == Role.MEMBER


def test_the_last_admin_cannot_step_down(world, client):
    client.force_login(world.admin)
    m = _membership(world.alpha, world.admin)
    response = client.post(reverse("accounts:member-role", kwargs={
        "team_id": world.alpha.public_id, "membership_id": m.public_id}), {"role": "member"}, follow=True)
    assert services.LAST_ADMIN_MESSAGE in response.content.decode()
    m.refresh_from_db()
    assert m.role == Role.ADMIN


def test_the_last_admin_cannot_be_removed(world, client):
    client.force_login(world.admin)
    m = _membership(world.alpha, world.admin)
    response = client.post(reverse("accounts:member-remove", kwargs={
        "team_id": world.alpha.public_id, "membership_id": m.public_id}), follow=True)
    assert services.LAST_ADMIN_MESSAGE in response.content.decode()
    assert Membership.objects.filter(pk=m.pk).exists()


def test_an_admin_can_step_down_when_another_admin_remains(world):
    second = Membership.objects.create(team=world.alpha, user=make_user(), role=Role.ADMIN)
    access = team_access_for_user(user=world.admin, team_public_id=world.alpha.public_id)
    services.membership_change_role(access=access, membership=_membership(world.alpha, world.admin), role="member")
    assert _membership(world.alpha, world.admin).role == Role.MEMBER
    assert Membership.objects.get(pk=second.pk).role == Role.ADMIN


def test_an_admin_removes_a_member(world, client):
    client.force_login(world.admin)
    m = _membership(world.alpha, world.member)
    client.post(reverse("accounts:member-remove", kwargs={"team_id": world.alpha.public_id,
                                                           "membership_id": m.public_id}))
    assert not Membership.objects.filter(pk=m.pk).exists()
    assert AuditEvent.objects.get(action="membership.removed").details["email"] == "member@alpha.test"


def test_a_removed_member_loses_access_at_once(world, client):
    client.force_login(world.member)
    url = reverse("transfers:dashboard", kwargs={"team_id": world.alpha.public_id})
    assert client.get(url).status_code == 200
    Membership.objects.filter(team=world.alpha, user=world.member).delete()
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("field", ["team", "team_id", "user"])
def test_membership_forms_ignore_fields_they_do_not_own(world, client, field):
    client.force_login(world.admin)
    newcomer = make_user("mass@example.com")
    client.post(_members_url(world.alpha), {"email": newcomer.email, "role": "member",
                                             field: str(world.beta.pk)})
    assert not Membership.objects.filter(team=world.beta, user=newcomer).exists()
