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
