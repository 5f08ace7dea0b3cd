"""Endpoint URLs are checked like pasted links: https only, no credentials, public addresses only (the
host resolved, every address checked, at saving and again at each delivery); a setting exempts a test
receiver. A refused URL saves nothing and says why."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import access
from tests.webhook_receiver import emit, make_share
from webhooks import services, url_checks
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

EVENTS = ["share.approved"]


def _create(world, url):
    return services.endpoint_create(access=access(world.admin, world.alpha), url=url, description="", events=EVENTS)


@pytest.mark.parametrize(("url", "message"), [
    ("http://hooks.example.com/omi", url_checks.MSG_SCHEME),
    ("ftp://hooks.example.com/omi", url_checks.MSG_SCHEME),
    ("https://user:secret@hooks.example.com/omi", url_checks.MSG_CREDENTIALS),
    ("https://token@hooks.example.com/omi", url_checks.MSG_CREDENTIALS),
    ("https://10.0.0.5/omi", "10.0.0.5 is a private address: webhooks are sent to public addresses only"),
    ("https://192.168.1.20:8443/omi", "192.168.1.20 is a private address"),
    ("https://127.0.0.1:8443/omi", "127.0.0.1 is a loopback address"),
    ("https://[::1]/omi", "::1 is a loopback address"),
    ("https://[::ffff:127.0.0.1]/omi", "is a loopback address"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("https://224.0.0.1/omi", "224.0.0.1 is a multicast address"),
    ("https://0.0.0.0/omi", "0.0.0.0 is an unspecified address"),
    ("https://100.64.0.1/omi", "100.64.0.1 is not a public address"),
    ("https://localhost/omi", "localhost resolves to"),
    ("https://2130706433/omi", "resolves to 127.0.0.1, a loopback address"),
    ("https://hooks.example.com/omi#x", url_checks.MSG_FRAGMENT),
    ("https://hooks.example.com:99999/omi", url_checks.MSG_PORT),
    ("https://hooks.example .com/omi", url_checks.MSG_BAD_CHARACTERS),
    ("https://hôoks.example.com/omi", url_checks.MSG_BAD_CHARACTERS),
    ("https:///omi", url_checks.MSG_NO_HOST),
    ("", url_checks.MSG_EMPTY),
])
def test_a_refused_url_saves_nothing_and_says_why(world, url, message):
    with pytest.raises(ValidationError) as refused:
        _create(world, url)
    assert message in refused.value.messages[0], refused.value.messages
    assert not WebhookEndpoint.objects.exists()
    assert not AuditEvent.objects.filter(action="webhook.created").exists()
    assert "secret" not in refused.value.messages[0] or message == url_checks.MSG_CREDENTIALS


def test_a_name_resolving_to_a_private_address_names_both(world):
    with pytest.raises(ValidationError) as refused:
        _create(world, "https://localhost:8443/omi")
    text = refused.value.messages[0]
    assert text.startswith("localhost resolves to ") and "a loopback address" in text


def test_the_setting_allows_the_test_receiver_over_http(world, settings):
    with pytest.raises(ValidationError):
        _create(world, "http://127.0.0.1:8025/hooks")
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1:8025"]
    endpoint, secret = _create(world, "http://127.0.0.1:8025/hooks")
    assert endpoint.url == "http://127.0.0.1:8025/hooks" and secret.startswith("whsec_")
    with pytest.raises(ValidationError):  # another port of the host is not exempt
        _create(world, "http://127.0.0.1:8026/hooks")
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["localhost"]
    assert _create(world, "http://localhost:9/hooks")[0].host == "localhost"


def test_the_page_refuses_a_private_url_with_its_reason(world, client):
    client.force_login(world.admin)
    response = client.post(reverse("webhooks:endpoint-create", kwargs={"team_id": world.alpha.public_id}),
                           {"url": "https://10.1.2.3/hooks", "description": "ci", "events": EVENTS})
    assert response.status_code == 400
    assert "10.1.2.3 is a private address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_host_that_resolves_inside_by_delivery_time_is_not_sent_to(world, settings):
    """DNS rebinding: the name was fine when saved (here: exempt then), not when the message goes."""
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["localhost"]
    endpoint, _ = _create(world, "https://localhost:9/hooks")
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = []
    workers.flush()
    emit("share.approved", [make_share(world.alpha, world.member).pk])
    workers.run_jobs(until=lambda: WebhookAttempt.objects.filter(delivery__endpoint=endpoint).exists())
    attempt = WebhookAttempt.objects.get(delivery__endpoint=endpoint)
    assert attempt.error.startswith("Not sent: localhost resolves to ") and "loopback" in attempt.error
    assert attempt.status_code is None and WebhookDelivery.objects.get(endpoint=endpoint).state == "pending"
    workers.flush()


def test_the_audit_trail_names_the_host_never_the_path(world, settings):
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    _create(world, "http://127.0.0.1:8025/hooks/tok-3f9a1c2e7b?key=s3cr3tvalue")
    event = AuditEvent.objects.get(action="webhook.created")
    assert event.details["host"] == "127.0.0.1"
    assert "tok-3f9a1c2e7b" not in str(event.details) and "s3cr3tvalue" not in str(event.details)
    assert "s3cr3tvalue" not in event.target_label
