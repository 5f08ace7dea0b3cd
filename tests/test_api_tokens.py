"""The API token pages and a token's life: made and shown once, used, expired, revoked, outgrown."""

import hashlib
import json
import logging
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Role
from api import tokens
from api.access import token_access
from api.models import ApiToken
from api.views import token_pages
from audit.models import AuditEvent
from tests import factories
from tests.fixtures_api import ApiClient

pytestmark = pytest.mark.django_db

RAW = re.compile(r"omi_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
ACCOUNTS = "/api/v1/accounts/"


def _url(name, team, **kwargs):
    return reverse(f"api:{name}", kwargs={"team_id": team.public_id, **kwargs})


def _create(client, team, **fields):
    data = {"name": "packer pipeline", "kind": "personal", "role": "member", "days": 90,
            "once": uuid.uuid4().hex, **fields}
    return client.post(_url("token-create", team), data)


def _raw_of(response) -> str:
    found = RAW.findall(response.content.decode())
    assert len(set(found)) == 1, found
    return found[0]


def _denials(user, reason="missing_role"):
    return AuditEvent.objects.filter(action="access.denied", outcome="denied", actor_id=user.pk,
                                     details__reason=reason)


# --- Making a token ------------------------------------------------------------------------------------------


def test_it_shows_a_new_token_once_and_stores_only_its_digest(login, world, caplog):
    client = login(world.member)
    before = timezone.now()
    with caplog.at_level(logging.DEBUG):
        response = _create(client, world.alpha, name="  packer pipeline  ", days=30)
    assert response.status_code == 200
    raw = _raw_of(response)
    assert "will not be shown again" in response.content.decode()
    # Never cached, and no referrer carries the page's address (the token is in its body only).
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"
    assert raw not in caplog.text

    token = ApiToken.objects.get()
    secret = raw.split("_", 2)[2]
    # Every column, so that a new one has to be thought about here.
    assert {f.attname for f in ApiToken._meta.concrete_fields} == {
        "id", "public_id", "team_id", "user_id", "kind", "name", "role", "prefix", "digest", "created_at",
        "expires_at", "last_used_at", "revoked_at", "revoked_by_id"}
    assert (token.team_id, token.user_id, token.kind, token.name, token.role) == (
        world.alpha.pk, world.member.pk, "personal", "packer pipeline", "member")
    assert raw == f"omi_{token.prefix}_{secret}" and len(token.prefix) == 12
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert before <= token.created_at <= timezone.now()
    assert token.expires_at - token.created_at == pytest.approx(timedelta(days=30), abs=timedelta(seconds=5))
    assert (token.last_used_at, token.revoked_at, token.revoked_by_id) == (None, None, None)
    stored = " ".join(str(getattr(token, f.attname)) for f in ApiToken._meta.concrete_fields)
    assert secret not in stored

    event = AuditEvent.objects.get(action="api_token.created")
    assert (event.actor_id, event.team_id, event.target_type, event.target_id) == (
        world.member.pk, world.alpha.pk, "api.apitoken", str(token.public_id))
    assert event.details == {"kind": "personal", "role": "member", "prefix": f"omi_{token.prefix}",
                             "expires_at": token.expires_at.isoformat()}
    assert secret not in json.dumps(list(AuditEvent.objects.values()), default=str)
    # Nothing kept it for later: not the session (no message carries it).
    assert not any(secret in s.session_data or secret in json.dumps(s.get_decoded())
                   for s in Session.objects.all())

    # It works, and the list shows its prefix, never the token again.
    assert ApiClient(raw, token).get(ACCOUNTS).status_code == 200
    page = client.get(_url("token-list", world.alpha)).content.decode()
    assert f"omi_{token.prefix}…" in page and secret not in page


def test_reloading_the_page_that_showed_it_makes_no_second_token(login, world):
    client = login(world.member)
    once = uuid.uuid4().hex
    first = _create(client, world.alpha, once=once)
    secret = _raw_of(first).split("_", 2)[2]
    again = _create(client, world.alpha, once=once)  # what the browser sends on reload
    assert again.status_code == 302 and again["Location"] == _url("token-list", world.alpha)
    assert ApiToken.objects.count() == 1
    page = client.get(again["Location"]).content.decode()
    assert "already made a token, which is not shown again" in page and secret not in page


def test_the_form_offers_only_the_roles_a_person_may_give(login, world):
    def offered(user):
        page = login(user).get(_url("token-list", world.alpha)).content.decode()
        role = re.search(r'<select name="role".*?</select>', page, re.S).group(0)
        kind = re.search(r'<select name="kind".*?</select>', page, re.S).group(0)
        return re.findall(r'value="(\w+)"', role), re.findall(r'value="(\w+)"', kind)

    assert offered(world.admin) == (["member", "approver", "admin", "auditor"], ["personal", "service"])
    assert offered(world.approver) == (["member", "approver"], ["personal"])
    assert offered(world.member) == (["member"], ["personal"])
    assert offered(world.auditor) == (["auditor"], ["personal"])


def test_a_member_cannot_make_a_service_token(login, world):
    response = _create(login(world.member), world.alpha, kind="service", role="member")
    assert response.status_code == 403
    assert not ApiToken.objects.exists()
    assert _denials(world.member).get().details["needs"] == "manage_team"


@pytest.mark.parametrize(("person", "role"), [("member", "approver"), ("member", "auditor"),
                                              ("approver", "admin"), ("auditor", "member"),
                                              ("compliance", "member")])
def test_a_token_never_has_a_role_above_its_maker_s(login, world, person, role):
    user = getattr(world, person)
    response = _create(login(user), world.alpha, role=role)
    assert response.status_code == 403
    assert not ApiToken.objects.exists()
    assert _denials(user).get().details == {"reason": "missing_role", "needs": f"token role {role}",
                                            "role": person}


@pytest.mark.parametrize(("person", "role"), [("approver", "approver"), ("approver", "member"),
                                              ("auditor", "auditor"), ("admin", "admin"),
                                              ("compliance", "auditor")])
def test_a_person_makes_personal_tokens_up_to_their_role(login, world, person, role):
    response = _create(login(getattr(world, person)), world.alpha, role=role)
    assert response.status_code == 200
    assert ApiToken.objects.get().role == role


def test_an_admin_makes_service_tokens_that_never_approve(login, world):
    client = login(world.admin)
    refused = _create(client, world.alpha, kind="service", role="approver")
    assert refused.status_code == 400 and tokens.SERVICE_ROLES in refused.content.decode()
    assert not ApiToken.objects.exists()
    for role in ("member", "auditor"):
        assert _create(client, world.alpha, kind="service", role=role).status_code == 200
    assert sorted(ApiToken.objects.values_list("kind", "role")) == [("service", "auditor"), ("service", "member")]


@pytest.mark.parametrize("days", [0, 366, -1, "x"])
def test_a_token_lasts_one_to_365_days(login, world, days):
    response = _create(login(world.member), world.alpha, days=days)
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_the_form_proposes_90_days(login, world):
    page = login(world.member).get(_url("token-list", world.alpha)).content.decode()
    assert '<input type="number" name="days" value="90" min="1" max="365"' in page


def test_a_team_requiring_two_factor_asks_an_approver_for_a_code_first(login, world):
    world.alpha.require_two_factor_for_privileged = True
    world.alpha.save()
    response = _create(login(world.approver), world.alpha, role="approver")
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:twofactor"))
    assert not ApiToken.objects.exists()
    assert _denials(world.approver, "two_factor_required").exists()


# --- Using it ------------------------------------------------------------------------------------------------


def test_an_expired_token_answers_401(api, world):
    client = api.client(world.member)
    assert client.get(ACCOUNTS).status_code == 200
    ApiToken.objects.filter(pk=client.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(ACCOUNTS)
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_last_used_is_written_at_most_once_a_minute(api, world):
    client = api.client(world.member)
    assert ApiToken.objects.get(pk=client.token.pk).last_used_at is None

    def updates(context):
        return [q for q in context.captured_queries if q["sql"].startswith('UPDATE "api_apitoken"')]

    with CaptureQueriesContext(connection) as two_calls:
        assert client.get(ACCOUNTS).status_code == 200
        assert client.get(ACCOUNTS).status_code == 200
    assert len(updates(two_calls)) == 1
    used = ApiToken.objects.get(pk=client.token.pk).last_used_at
    assert timezone.now() - used < timedelta(seconds=5)

    ApiToken.objects.filter(pk=client.token.pk).update(last_used_at=used - tokens.LAST_USED_GRANULARITY)
    with CaptureQueriesContext(connection) as later:
        assert client.get(ACCOUNTS).status_code == 200
    assert len(updates(later)) == 1
    assert ApiToken.objects.get(pk=client.token.pk).last_used_at > used


def test_a_demoted_approver_s_token_no_longer_approves(api, world):
    client = api.client(world.approver)
    token = ApiToken.objects.select_related("team", "user").get(pk=client.token.pk)
    assert token.role == "approver" and token_access(token).can_approve
    Membership.objects.filter(user=world.approver, team=world.alpha).update(role=Role.MEMBER)
    access = token_access(ApiToken.objects.select_related("team", "user").get(pk=client.token.pk))
    assert not access.can_approve and access.can_request
    assert client.get(ACCOUNTS).status_code == 200


def test_a_token_of_someone_removed_from_the_team_answers_401(api, world):
    client = api.client(world.member)
    Membership.objects.filter(user=world.member, team=world.alpha).delete()
    assert client.get(ACCOUNTS).status_code == 401


# --- Listing --------------------------------------------------------------------------------------------------


def test_the_list_shows_each_person_what_they_may_see(api, login, world):
    mine = api.client(world.member, name="member's laptop").token
    approvers = api.client(world.approver, name="approver's script").token
    service = api.client(world.admin, kind="service", name="packer").token
    theirs = api.client(world.outsider, name="beta's token").token

    def listed(user):
        page = login(user).get(_url("token-list", world.alpha)).content.decode()
        return set(re.findall(r'data-token="([0-9a-f-]+)"', page))

    assert listed(world.member) == {str(mine.public_id), str(service.public_id)}
    assert listed(world.approver) == {str(approvers.public_id), str(service.public_id)}
    assert listed(world.admin) == {str(t.public_id) for t in (mine, approvers, service)}
    assert str(theirs.public_id) not in listed(world.admin)


def test_the_list_shows_state_prefix_and_times(api, login, world):
    active = api.client(world.member, name="active").token
    expired = api.client(world.member, name="expired").token
    revoked = api.client(world.member, name="revoked").token
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now(), revoked_by=world.admin)
    page = login(world.member).get(_url("token-list", world.alpha)).content.decode()
    for token, state in ((active, "active"), (expired, "expired"), (revoked, "revoked")):
        row = re.search(rf'data-token="{token.public_id}".*?</tr>', page, re.S).group(0)
        assert f'data-state="{state}"' in row and f"omi_{token.prefix}…" in row
        assert ("Revoke</a>" in row) == (state == "active")
    assert "never" in page and world.admin.display_name in page


def test_an_empty_list_says_what_tokens_are_for(login, world):
    page = login(world.member).get(_url("token-list", world.alpha)).content.decode()
    assert "No API token yet" in page and 'href="/api/v1/docs/"' in page


def test_the_team_navigation_links_the_token_pages(login, world):
    page = login(world.auditor).get(reverse("transfers:dashboard", kwargs={"team_id": world.alpha.public_id}))
    assert f'href="{_url("token-list", world.alpha)}"' in page.content.decode()


# --- Revoking -------------------------------------------------------------------------------------------------


def test_the_owner_revokes_their_token_and_it_stops_at_once(api, login, world):
    client = api.client(world.member)
    assert client.get(ACCOUNTS).status_code == 200
    browser = login(world.member)
    url = _url("token-revoke", world.alpha, token_id=client.token.public_id)
    confirm = browser.get(url)
    assert confirm.status_code == 200 and "Revoke token" in confirm.content.decode()
    response = browser.post(url)
    assert response.status_code == 302
    token = ApiToken.objects.get(pk=client.token.pk)
    assert token.revoked_at is not None and token.revoked_by_id == world.member.pk
    assert client.get(ACCOUNTS).status_code == 401
    event = AuditEvent.objects.get(action="api_token.revoked")
    assert (event.actor_id, event.target_id) == (world.member.pk, str(token.public_id))
    assert event.details == {"kind": "personal", "role": "member", "prefix": f"omi_{token.prefix}",
                             "owner": world.member.email}
    assert client.raw.split("_", 2)[2] not in json.dumps(event.details)
    page = browser.get(response["Location"]).content.decode()
    assert token_pages.REVOKED.format(name=token.name, prefix=f"omi_{token.prefix}") in page


def test_a_second_revoke_says_so_and_changes_nothing(api, login, world):
    token = api.client(world.member).token
    browser = login(world.member)
    url = _url("token-revoke", world.alpha, token_id=token.public_id)
    browser.post(url)
    first = ApiToken.objects.get(pk=token.pk).revoked_at
    response = browser.post(url, follow=True)
    assert tokens.ALREADY_REVOKED in response.content.decode()
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first
    assert AuditEvent.objects.filter(action="api_token.revoked").count() == 1
    assert "is revoked" in browser.get(url).content.decode()


def test_an_admin_revokes_service_tokens_and_members_personal_ones(api, login, world):
    other_admin = factories.add_member(world.alpha, factories.make_user("admin2@alpha.test"), Role.ADMIN).user
    service = api.client(other_admin, kind="service").token
    personal = api.client(world.member).token
    browser = login(world.admin)
    for token in (service, personal):
        assert browser.post(_url("token-revoke", world.alpha, token_id=token.public_id)).status_code == 302
        assert ApiToken.objects.get(pk=token.pk).revoked_by_id == world.admin.pk
    owners = sorted(AuditEvent.objects.filter(action="api_token.revoked").values_list("details__owner", flat=True))
    assert owners == sorted([other_admin.email, world.member.email])


def test_a_member_cannot_revoke_the_team_s_service_token(api, login, world):
    service = api.client(world.admin, kind="service").token
    browser = login(world.member)
    url = _url("token-revoke", world.alpha, token_id=service.public_id)
    assert browser.get(url).status_code == 403
    assert browser.post(url).status_code == 403
    assert ApiToken.objects.get(pk=service.pk).revoked_at is None
    assert _denials(world.member).filter(target_id=str(service.public_id)).count() == 2


def test_someone_else_s_personal_token_is_not_found_for_a_non_admin(api, login, world):
    token = api.client(world.member).token
    response = login(world.approver).post(_url("token-revoke", world.alpha, token_id=token.public_id))
    assert response.status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    assert _denials(world.approver, "not_found_in_team").get().target_id == str(token.public_id)


def test_another_team_s_token_is_a_recorded_404(api, login, world):
    theirs = api.client(world.outsider).token
    browser = login(world.admin)
    for method in (browser.get, browser.post):
        assert method(_url("token-revoke", world.alpha, token_id=theirs.public_id)).status_code == 404
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is None
    assert _denials(world.admin, "not_found_in_team").filter(target_id=str(theirs.public_id)).count() == 2
    # And another team's pages are not found at all.
    outsider = login(world.outsider)
    assert outsider.get(_url("token-list", world.alpha)).status_code == 404
    assert _create(outsider, world.alpha).status_code == 404
    assert not ApiToken.objects.filter(team=world.alpha).exists()


def test_the_list_reads_a_flat_number_of_queries(api, login, world):
    def queries():
        client = login(world.admin)
        with CaptureQueriesContext(connection) as context:
            assert client.get(_url("token-list", world.alpha)).status_code == 200
        return len(context.captured_queries)

    api.client(world.member)
    queries()  # the first visit also remembers the team in the session
    few = queries()
    for n in range(20):
        maker = world.admin if n % 2 else world.member
        token = api.client(maker, kind="service" if maker == world.admin and n % 3 else "personal").token
        if n % 4 == 0:
            ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now(), revoked_by=world.approver)
    assert queries() == few <= 8


def test_the_token_pages_are_not_in_the_api_schema(client):
    schema = client.get("/api/v1/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}).json()
    assert not [path for path in schema["paths"] if "api-tokens" in path]
