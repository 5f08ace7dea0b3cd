"""Production error pages show a request id and nothing else."""

from django.test import Client
from django.urls import reverse

from accounts import selectors


def test_a_crash_shows_a_generic_page_with_the_request_id(world, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("secret internals: DATABASE password=hunter2")

    monkeypatch.setattr(selectors, "memberships_for_user", crash)
    client = Client(raise_request_exception=False)
    client.force_login(world.member)
    response = client.get(reverse("accounts:team-list"))
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in page
    assert response["X-Request-ID"] in page
    assert "hunter2" not in page and "Traceback" not in page and "SECRET_KEY" not in page


def test_not_found_uses_the_portal_layout(world, client):
    client.force_login(world.member)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "There is nothing here" in response.content.decode()


def test_a_crash_under_the_api_is_a_problem_with_the_request_id(api, world, monkeypatch):
    from accounts import selectors as account_selectors

    def crash(**kwargs):
        raise RuntimeError("secret internals: DATABASE password=hunter2")

    monkeypatch.setattr(account_selectors, "cloud_account_list_for_team", crash)
    client = api.client(world.member)
    client._client.raise_request_exception = False
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "server_error" and response["X-Request-ID"] in body["detail"]
    assert "hunter2" not in response.content.decode() and "Traceback" not in response.content.decode()
