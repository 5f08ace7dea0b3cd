"""The request context: id, client IP, user agent and actor reach the events a request records."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth import login
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import path

from accounts.models import User
from audit.models import AuditEvent
from audit.recorder import AuditTarget, record
from review.admin import AuditEventAdmin
from tests import factories

pytestmark = pytest.mark.usefixtures("test_only_actions")  # made-up actions (tests/fixtures_audit.py)


def _recording_view(request):
    event = record(action="page.viewed", target=AuditTarget("test.page", "1", "page"))
    return HttpResponse(str(event.seq))


def _quiet_view(request):
    return HttpResponse("nothing recorded")


def _sign_in_view(request):
    login(request, User.objects.get(email=request.GET["email"]), backend=MODEL_BACKEND)
    return HttpResponse("signed in")


urlpatterns = [path("record/", _recording_view), path("quiet/", _quiet_view), path("sign-in/", _sign_in_view)]

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture
def urls(settings):
    settings.ROOT_URLCONF = __name__


@pytest.fixture
def user(db):
    return factories.make_user("viewer@example.com", full_name="Vera Viewer")


def _event_for(response):
    return AuditEvent.objects.get(seq=int(response.content))


def test_it_attaches_request_id_ip_user_agent_and_user(client, urls, user):
    client.force_login(user, backend=MODEL_BACKEND)
    response = client.get("/record/", REMOTE_ADDR="203.0.113.7", HTTP_USER_AGENT="Firefox/140")
    event = _event_for(response)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    assert event.request_id == response["X-Request-ID"]
    assert (event.ip, event.user_agent) == ("203.0.113.7", "Firefox/140")
    assert (event.actor_id, event.actor_name) == (user.pk, "Vera Viewer")


def test_it_records_anonymous_requests_as_the_system(client, urls, db):
    event = _event_for(client.get("/record/"))
    assert (event.actor_id, event.actor_name, event.ip) == (None, "", "127.0.0.1")


def test_it_ignores_forwarded_for_and_client_request_ids(client, urls, db):
    response = client.get("/record/", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="198.51.100.1",
                          HTTP_X_REQUEST_ID="chosen-by-client")
    event = _event_for(response)
    assert event.ip == "203.0.113.7"
    assert event.request_id != "chosen-by-client" and response["X-Request-ID"] == event.request_id


def test_it_strips_control_characters_from_the_user_agent(client, urls, db):
    event = _event_for(client.get("/record/", HTTP_USER_AGENT="Evil\r\nX-Injected: 1\x1b[31m\x00\x7f\x85" + "A" * 600))
    assert event.user_agent.startswith("EvilX-Injected: 1[31m")
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in event.user_agent)
    assert len(event.user_agent) == 512


def test_it_keeps_a_missing_or_bogus_address_out(db):
    from audit.context import client_ip, normalise_ip

    assert client_ip(RequestFactory().get("/", REMOTE_ADDR="not-an-ip")) is None
    assert normalise_ip("::FFFF:1.2.3.4") == "::ffff:1.2.3.4"
    assert normalise_ip("2001:DB8:0:0::1") == "2001:db8::1"


def test_every_response_gets_a_fresh_request_id(client, urls, db):
    first, second = client.get("/quiet/"), client.get("/missing/")
    assert second.status_code == 404
    assert first["X-Request-ID"] != second["X-Request-ID"]
    assert not AuditEvent.objects.exists()


def test_the_context_ends_with_the_request(client, urls, db):
    client.get("/record/")
    assert record(action="a.created").request_id == ""


def test_events_from_auth_signals_carry_the_request_context(client, urls, user):
    # accounts' user_logged_in receiver records with an explicit actor; the request
    # id and address still come from this middleware.
    response = client.get("/sign-in/", {"email": user.email}, REMOTE_ADDR="198.51.100.23")
    event = AuditEvent.objects.get(action="auth.logged_in")
    assert (event.request_id, event.ip, event.actor_id) == (response["X-Request-ID"], "198.51.100.23", user.pk)


def test_the_admin_shows_events_read_only(rf):
    model_admin = AuditEventAdmin(AuditEvent, admin.site)
    request = rf.get("/admin/audit/auditevent/")
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert admin.site.is_registered(AuditEvent)
