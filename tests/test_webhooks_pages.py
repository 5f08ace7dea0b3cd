"""The team's webhook pages: admins add, edit, rotate and delete endpoints (each audited), the signing secret
is shown once on a page nobody caches; every role reads the list and the delivery log; another team's
endpoint is not found."""

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from audit.models import AuditEvent
from tests.transfer_world import access
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


@pytest.fixture(autouse=True)
def _test_receiver_allowed(settings):
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]


URL = "http://127.0.0.1:8025/hooks/omi"


def _team_url(name, team, **kwargs):
    return reverse(name, kwargs={"team_id": team.public_id, **kwargs})


def _endpoint_url(name, endpoint, **kwargs):
    return reverse(name, kwargs={"team_id": endpoint.team.public_id, "endpoint_id": endpoint.public_id, **kwargs})


def _make(world, events=("share.approved", "import.completed")):
    return services.endpoint_create(access=access(world.admin, world.alpha), url=URL, description="ci",
                                    events=list(events))


def _secret_on(page: str) -> str:
    match = re.search(r'<textarea id="webhook-secret"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, "the page shows the secret in its textarea"
    return match.group(1).strip()


def test_the_list_starts_empty_and_is_in_the_team_menu(world, login):
    page = login(world.member).get(_team_url("webhooks:endpoint-list", world.alpha)).content.decode()
    assert "No webhook endpoint yet" in page and "a team admin can" in page
    assert f'href="{_team_url("webhooks:endpoint-list", world.alpha)}" aria-current="page">Webhooks</a>' in page
    assert "Add an endpoint" not in page  # a member reads; an admin manages


def test_an_admin_adds_an_endpoint_and_sees_its_secret_once(world, login):
    client = login(world.admin)
    response = client.post(_team_url("webhooks:endpoint-create", world.alpha),
                           {"url": URL, "description": "release pipeline", "events": ["share.ready", "import.failed"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "no-referrer"
    secret = _secret_on(response.content.decode())
    assert secret.startswith("whsec_")
    Webhook(secret).sign("msg_1", timezone.now(), "{}")  # the library takes it as is
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["share.ready", "import.failed"] and endpoint.description == "release pipeline"
    assert secret not in endpoint.secret_sealed and secret.removeprefix("whsec_") not in endpoint.secret_sealed
    for url in (_team_url("webhooks:endpoint-list", world.alpha), _endpoint_url("webhooks:endpoint-detail", endpoint),
                _endpoint_url("webhooks:endpoint-edit", endpoint)):
        page = client.get(url)
        assert page.status_code == 200 and secret.removeprefix("whsec_") not in page.content.decode()
    event = AuditEvent.objects.get(action="webhook.created")
    assert event.details == {"host": "127.0.0.1", "events": ["share.ready", "import.failed"],
                             "description": "release pipeline"}
    assert secret.removeprefix("whsec_") not in str(event.details)


def test_an_admin_edits_rotates_and_deletes(world, login):
    endpoint, secret = _make(world)
    client = login(world.admin)
    response = client.post(_endpoint_url("webhooks:endpoint-edit", endpoint),
                           {"url": URL, "description": "", "events": ["share.expired"]})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.events == ["share.expired"]
    changed = AuditEvent.objects.get(action="webhook.changed")
    assert changed.details["before"]["events"] == ["share.approved", "import.completed"]
    assert changed.details["after"]["events"] == ["share.expired"] and changed.details["url_changed"] is False

    rotated = client.post(_endpoint_url("webhooks:endpoint-rotate", endpoint))
    assert rotated.status_code == 200 and "no-store" in rotated["Cache-Control"]
    new = _secret_on(rotated.content.decode())
    assert new.startswith("whsec_") and new != secret
    assert AuditEvent.objects.filter(action="webhook.secret_rotated").count() == 1

    WebhookDelivery.objects.create(endpoint=endpoint, event_type="share.expired", event_key="k",
                                   subject_id=uuid.uuid4(), msg_id="msg_x", payload="{}")
    assert client.post(_endpoint_url("webhooks:endpoint-delete", endpoint)).status_code == 302
    assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
    deleted = AuditEvent.objects.get(action="webhook.deleted")
    assert deleted.details["deliveries"] == 1 and deleted.target_id == str(endpoint.public_id)


def test_a_form_without_events_is_refused(world, login):
    response = login(world.admin).post(_team_url("webhooks:endpoint-create", world.alpha),
                                       {"url": URL, "description": "", "events": []})
    assert response.status_code == 400 and "Choose at least one event to send." in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("role", ["member", "approver", "auditor"])
def test_other_roles_read_but_do_not_manage(world, login, role):
    endpoint, _ = _make(world)
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event_type="share.approved", event_key="k",
                                              subject_id=uuid.uuid4(), msg_id="msg_y", payload="{}", state="failed")
    client = login(getattr(world, role))
    assert client.get(_team_url("webhooks:endpoint-list", world.alpha)).status_code == 200
    log = client.get(_endpoint_url("webhooks:endpoint-detail", endpoint))
    assert log.status_code == 200 and "Send again" not in log.content.decode()
    assert client.get(_team_url("webhooks:endpoint-create", world.alpha)).status_code == 403
    assert client.get(_endpoint_url("webhooks:endpoint-edit", endpoint)).status_code == 403
    for name in ("webhooks:endpoint-rotate", "webhooks:endpoint-delete"):
        assert client.post(_endpoint_url(name, endpoint)).status_code == 403
    redeliver = _endpoint_url("webhooks:delivery-redeliver", endpoint, delivery_id=delivery.public_id)
    assert client.post(redeliver).status_code == 403
    assert WebhookEndpoint.objects.count() == 1 and WebhookDelivery.objects.get().state == "failed"
    assert AuditEvent.objects.filter(action="access.denied", details__reason="missing_role").exists()


def test_another_teams_endpoint_is_not_found(world, login):
    endpoint, _ = _make(world)
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event_type="share.approved", event_key="k",
                                              subject_id=uuid.uuid4(), msg_id="msg_z", payload="{}", state="failed")
    client = login(world.outsider)  # Beta's admin
    beta = {"team_id": world.beta.public_id, "endpoint_id": endpoint.public_id}
    for name in ("webhooks:endpoint-detail", "webhooks:endpoint-edit"):
        assert client.get(reverse(name, kwargs=beta)).status_code == 404
    for name in ("webhooks:endpoint-rotate", "webhooks:endpoint-delete"):
        assert client.post(reverse(name, kwargs=beta)).status_code == 404
    assert client.post(reverse("webhooks:delivery-redeliver",
                               kwargs={**beta, "delivery_id": delivery.public_id})).status_code == 404
    assert client.get(_team_url("webhooks:endpoint-list", world.alpha)).status_code == 404
    assert WebhookEndpoint.objects.count() == 1 and WebhookDelivery.objects.get().state == "failed"
    assert AuditEvent.objects.filter(action="access.denied", actor_id=world.outsider.pk).count() >= 6


def _log(endpoint, n):
    now = timezone.now()
    for i in range(n):
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event_type="share.approved", event_key=uuid.uuid4().hex, subject_id=uuid.uuid4(),
            msg_id=f"msg_{uuid.uuid4().hex}", payload="{}", state="delivered", attempt_count=2, delivered_at=now)
        WebhookAttempt.objects.create(delivery=delivery, number=1, started_at=now, duration_ms=3012,
                                      error="No answer from 127.0.0.1 within 10 s.")
        WebhookAttempt.objects.create(delivery=delivery, number=2, started_at=now, duration_ms=41, status_code=204,
                                      ok=True)


def test_the_delivery_log_shows_each_attempt_in_a_flat_number_of_queries(world, login):
    endpoint, _ = _make(world)
    client = login(world.auditor)
    url = _endpoint_url("webhooks:endpoint-detail", endpoint)
    _log(endpoint, 2)
    client.get(url)  # the session's first request writes what later ones only read
    with CaptureQueriesContext(connection) as few:
        page = client.get(url).content.decode()
    assert "No answer from 127.0.0.1 within 10 s." in page and "3012 ms" in page
    assert '<span class="mono" data-field="status">204</span>' in page
    _log(endpoint, 40)
    with CaptureQueriesContext(connection) as many:
        page = client.get(url).content.decode()
    assert page.count('data-delivery="') == 25 and "Page 1 of 2" in page
    print(f"delivery log: {len(few)} queries for 2 messages, {len(many)} for 25 of 42")
    assert len(many) == len(few), "\n".join(q["sql"][:150] for q in many.captured_queries)
