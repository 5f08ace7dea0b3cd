"""The API's base: tokens authenticate, tenancy holds, errors are problems, uses are attributed."""

import pytest
from django.utils import timezone

from api.models import ApiToken
from audit.models import AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def test_no_token_is_a_401_problem(client):
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert body["code"] == "not_authenticated" and body["status"] == 401


def test_a_wrong_revoked_or_expired_token_is_refused(api, world):
    client = api.client(world.member)
    assert client.get("/api/v1/accounts/").status_code == 200
    ApiToken.objects.filter(pk=client.token.pk).update(expires_at=timezone.now())
    assert client.get("/api/v1/accounts/").status_code == 401
    ApiToken.objects.filter(pk=client.token.pk).update(expires_at=timezone.now() + timezone.timedelta(days=1),
                                                       revoked_at=timezone.now())
    assert client.get("/api/v1/accounts/").status_code == 401
    forged = client.raw[:-4] + "AAAA"
    response = client._client.get("/api/v1/accounts/", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_only_the_digest_is_stored(api, world):
    client = api.client(world.member)
    row = ApiToken.objects.get(pk=client.token.pk)
    stored = " ".join(str(getattr(row, f.attname)) for f in ApiToken._meta.concrete_fields)
    assert client.raw not in stored and client.raw.split("_")[-1] not in stored


def test_accounts_list_is_the_teams_own_and_never_shows_keys(api, world):
    own = factories.make_cloud_account(world.alpha, label="prod", access_key="AKIAOWNKEY0000000001")
    factories.make_cloud_account(world.beta, label="theirs")
    response = api.client(world.member).get("/api/v1/accounts/")
    assert response.status_code == 200
    body = response.json()
    assert [a["id"] for a in body["results"]] == [str(own.public_id)]
    assert "AKIA" not in response.content.decode() and "access_key" not in response.content.decode()


def test_another_teams_account_is_a_recorded_404_naming_the_token(api, world):
    theirs = factories.make_cloud_account(world.beta, label="theirs")
    client = api.client(world.member)
    response = client.get(f"/api/v1/accounts/{theirs.public_id}/")
    assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "not_found"
    event = AuditEvent.objects.filter(action="access.denied").latest("seq")
    assert event.actor_id == world.member.pk
    assert event.details["via"]["id"] == str(client.token.public_id)
    assert event.details["via"]["prefix"] == f"omi_{client.token.prefix}"


def test_a_demoted_person_s_token_loses_the_role(api, world):
    client = api.client(world.approver)
    assert client.token.role == "approver"
    from accounts.models import Membership

    Membership.objects.filter(user=world.approver, team=world.alpha).update(role="auditor")
    from api.access import token_access

    access = token_access(ApiToken.objects.select_related("team", "user").get(pk=client.token.pk))
    assert not access.can_approve and not access.can_request


def test_a_token_of_someone_who_left_the_team_stops_working(api, world):
    client = api.client(world.member)
    from accounts.models import Membership

    Membership.objects.filter(user=world.member, team=world.alpha).delete()
    assert client.get("/api/v1/accounts/").status_code == 401


def test_the_schema_is_served_and_valid(client):
    response = client.get("/api/v1/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/accounts/" in schema["paths"]


def test_the_reference_page_is_served_by_the_portal(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
