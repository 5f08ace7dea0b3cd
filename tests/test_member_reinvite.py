"""An invitation that expired can be sent again, to people who never chose a password only."""

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from accounts import services
from accounts.models import Membership, Role, User
from accounts.selectors import team_access_for_user
from audit.models import AuditEvent
from tests import factories


def _invited(team, email="invited@example.com"):
    user = User.objects.create_user(email=email, password=None)
    return factories.add_member(team, user, Role.APPROVER)


def _url(membership):
    return reverse("accounts:member-reinvite", kwargs={"team_id": membership.team.public_id,
                                                       "membership_id": membership.public_id})


def test_it_mails_a_fresh_link_and_records_it(world, client, django_capture_on_commit_callbacks):
    invited = _invited(world.alpha)
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url(invited))
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["invited@example.com"]
    assert "Choose your password" in mail.outbox[0].body
    token = mail.outbox[0].body.rstrip("/\n").rsplit("/", 1)[-1]
    assert default_token_generator.check_token(invited.user, token)
    event = AuditEvent.objects.get(action="membership.reinvited")
    assert (event.actor_id, event.team_id, event.outcome) == (world.admin.pk, world.alpha.pk, "success")
    assert event.details == {"email": "invited@example.com"}


def test_it_refuses_someone_who_has_a_password(world, client, django_capture_on_commit_callbacks):
    # A "set your password" link for an approver with a password would let an admin take the account.
    membership = Membership.objects.get(team=world.alpha, user=world.approver)
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url(membership), follow=True)
    assert services.ALREADY_HAS_PASSWORD_MESSAGE.format(email="approver@alpha.test") in response.content.decode()
    assert mail.outbox == []
    assert not AuditEvent.objects.filter(action="membership.reinvited").exists()


def test_the_service_needs_the_manage_team_capability(world):
    invited = _invited(world.alpha)
    access = team_access_for_user(user=world.approver, team_public_id=world.alpha.public_id)
    with pytest.raises(PermissionDenied):
        services.membership_reinvite(access=access, membership=invited, site_url="http://testserver/")
    assert mail.outbox == []
    assert not AuditEvent.objects.filter(action="membership.reinvited").exists()


def test_it_rejects_get(world, client):
    client.force_login(world.admin)
    assert client.get(_url(_invited(world.alpha))).status_code == 405


def test_admins_see_the_action_only_for_people_without_a_password(world, client):
    invited = _invited(world.alpha)
    client.force_login(world.admin)
    page = client.get(reverse("accounts:member-list", kwargs={"team_id": world.alpha.public_id})).content.decode()
    assert page.count("Send the invitation again") == 1
    assert _url(invited) in page
    client.force_login(world.member)
    page = client.get(reverse("accounts:member-list", kwargs={"team_id": world.alpha.public_id})).content.decode()
    assert "Send the invitation again" not in page
