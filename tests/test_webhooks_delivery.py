"""Delivering webhooks: a real receiver on 127.0.0.1 that checks every signature, real RQ jobs on a real
Redis, real database commits. Retries with backoff, one-click redelivery, exactly once, the sweep after a
flushed Redis, the lease between two workers, secret rotation."""

import base64
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership
from accounts.selectors import TeamAccess
from audit.models import AuditEvent
from tests import workers
from tests.webhook_receiver import Receiver, emit, make_share
from transfers import events
from transfers.models import Recipient
from transfers.services import reconcile
from webhooks import delivery as webhook_delivery
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)

K1 = f"w1:{base64.b64encode(b'1' * 32).decode()}"
K2 = f"w2:{base64.b64encode(b'2' * 32).decode()}"
BACKOFF = [0.3, 0.6, 1.2]  # the tests' retry schedule (production: 10 s, 1 min, 5 min, 30 min, 2 h, 6 h)


@pytest.fixture
def receiver(settings):
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    settings.OMIPORTAL_WEBHOOK_RETRY_SECONDS = BACKOFF
    settings.OMIPORTAL_WEBHOOK_TIMEOUT_SECONDS = 3.0
    print(f"webhook retry schedule in these tests: {BACKOFF} s (± {webhook_delivery.JITTER:.0%})")
    workers.flush()
    server = Receiver().start()
    yield server
    server.stop()
    workers.flush()


def _access(user, team) -> TeamAccess:
    return TeamAccess(user=user, team=team, membership=Membership.objects.get(user=user, team=team))


def _endpoint(world, receiver, *, events_=("share.requested",), team=None, user=None, path="/hooks/omi"):
    endpoint, secret = services.endpoint_create(access=_access(user or world.admin, team or world.alpha),
                                                url=receiver.url(path), description="ci", events=list(events_))
    receiver.secret = receiver.secret or secret
    return endpoint, secret


def _delivery(endpoint) -> WebhookDelivery:
    return WebhookDelivery.objects.get(endpoint=endpoint)


def _delivered(endpoint, count=1):
    return lambda: WebhookDelivery.objects.filter(endpoint=endpoint, state="delivered").count() >= count


def test_a_message_is_signed_and_delivered_once(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    share = make_share(world.alpha, world.member)
    emit("share.requested", [share.pk])
    workers.run_jobs(until=_delivered(endpoint))
    [message] = receiver.messages
    assert message.verified, message.error
    assert message.type == "share.requested" and message.json["data"]["share"]["id"] == str(share.public_id)
    assert message.webhook_id == _delivery(endpoint).msg_id and message.path == "/hooks/omi"
    assert abs(int(message.headers["webhook-timestamp"]) - time.time()) < 30
    [attempt] = WebhookAttempt.objects.filter(delivery__endpoint=endpoint)
    assert attempt.ok and attempt.status_code == 200 and attempt.number == 1 and not attempt.error


def test_a_500_is_retried_with_backoff_and_delivered_once_with_the_same_webhook_id(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    receiver.script = [500]
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.run_jobs(until=_delivered(endpoint), timeout=20)
    first, second = receiver.messages
    assert [first.status, second.status] == [500, 200]
    assert first.webhook_id == second.webhook_id and first.body == second.body
    assert first.verified and second.verified
    waited = second.at - first.at
    print(f"second attempt {waited:.2f} s after the first (schedule {BACKOFF[0]} s ± 20%)")
    assert waited >= BACKOFF[0] * (1 - webhook_delivery.JITTER) - 0.05
    attempts = list(WebhookAttempt.objects.filter(delivery__endpoint=endpoint).order_by("number"))
    assert [(a.number, a.status_code, a.ok) for a in attempts] == [(1, 500, False), (2, 200, True)]
    assert attempts[0].error == "The receiver answered 500 Internal Server Error."
    delivery = _delivery(endpoint)
    assert (delivery.state, delivery.attempt_count, delivery.last_status) == ("delivered", 2, 200)
    time.sleep(BACKOFF[1])  # nothing more comes: a delivered message is not sent again
    workers.run_jobs()
    assert len(receiver.messages) == 2


def test_a_receiver_that_keeps_failing_fails_the_delivery_after_the_schedule(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    receiver.script = [503] * 10
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.run_jobs(until=lambda: _delivery(endpoint).state == "failed", timeout=20)
    assert len(receiver.messages) == len(BACKOFF) + 1  # the first try and one per wait
    assert len({m.webhook_id for m in receiver.messages}) == 1


def test_one_click_redelivery_sends_the_same_webhook_id_as_a_new_attempt(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.run_jobs(until=_delivered(endpoint))
    delivery = _delivery(endpoint)
    client = Client()
    client.force_login(world.admin)
    url = reverse("webhooks:delivery-redeliver", kwargs={"team_id": world.alpha.public_id,
                                                          "endpoint_id": endpoint.public_id,
                                                          "delivery_id": delivery.public_id})
    response = client.post(url)
    assert response.status_code == 302
    # Asked twice before it went: the second is refused, the message is sent once more, not twice.
    assert _delivery(endpoint).state == "pending"
    client.post(url)
    workers.run_jobs(until=lambda: len(receiver.messages) == 2 and _delivery(endpoint).state == "delivered")
    first, again = receiver.messages
    assert first.webhook_id == again.webhook_id == delivery.msg_id and first.body == again.body
    assert again.verified
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.redelivery) for a in attempts] == [(1, False), (2, True)]
    event = AuditEvent.objects.get(action="webhook.redelivery_requested")
    assert event.actor_id == world.admin.pk and event.details["msg_id"] == delivery.msg_id
    page = client.get(reverse("webhooks:endpoint-detail", kwargs={"team_id": world.alpha.public_id,
                                                                  "endpoint_id": endpoint.public_id}))
    assert page.content.decode().count('data-attempt="') == 2
    assert AuditEvent.objects.filter(action="webhook.redelivery_requested").count() == 1
    # A member may read the log but not send again.
    member = Client()
    member.force_login(world.member)
    assert member.post(url).status_code == 403


def test_an_event_emitted_twice_makes_one_delivery_per_endpoint(world, receiver):
    first, _ = _endpoint(world, receiver)
    second, _ = _endpoint(world, receiver, path="/other")
    other_team, _ = _endpoint(world, receiver, team=world.beta, user=world.outsider)
    share = make_share(world.alpha, world.member)
    emit("share.requested", [share.pk])
    emit("share.requested", [share.pk])  # a retried job, a sweep on two workers
    assert WebhookDelivery.objects.filter(endpoint=first).count() == 1
    assert WebhookDelivery.objects.filter(endpoint=second).count() == 1
    assert not WebhookDelivery.objects.filter(endpoint=other_team).exists()  # another team's share
    workers.run_jobs()
    assert sorted(m.path for m in receiver.messages) == ["/hooks/omi", "/other"]
    # An import's end is one event per attempt: a retried import that ends again is a new one.
    recipient = share.recipients.get()
    Recipient.objects.filter(pk=recipient.pk).update(team=world.alpha, state="failed", attempt=1)
    endpoint, _ = _endpoint(world, receiver, events_=("import.failed",), path="/imports")
    emit("import.failed", [recipient.pk])
    emit("import.failed", [recipient.pk])
    Recipient.objects.filter(pk=recipient.pk).update(attempt=2)
    emit("import.failed", [recipient.pk])
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2


def test_an_event_rolled_back_with_its_change_is_never_sent(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    share = make_share(world.alpha, world.member)
    with pytest.raises(RuntimeError), transaction.atomic():
        events.emit("share.requested", [share.pk])
        raise RuntimeError("the service failed after its event")
    assert not WebhookDelivery.objects.filter(endpoint=endpoint).exists()
    assert workers.pending_jobs() == 0


def test_after_a_flushed_redis_the_sweep_puts_a_pending_delivery_back(world, receiver, settings):
    endpoint, _ = _endpoint(world, receiver)
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    assert workers.pending_jobs() == 1
    workers.flush()  # Redis lost the job
    workers.run_jobs()
    assert receiver.messages == [] and _delivery(endpoint).state == "pending"
    assert reconcile.reconcile()["registered_sweeps"] == 0  # not late yet: its job may be on its way
    WebhookDelivery.objects.filter(endpoint=endpoint).update(
        next_attempt_at=timezone.now() - timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS + 1))
    assert reconcile.reconcile()["registered_sweeps"] == 1
    assert reconcile.reconcile()["registered_sweeps"] == 0  # put back once per grace period
    workers.run_jobs(until=_delivered(endpoint))
    assert len(receiver.messages) == 1 and receiver.messages[0].verified


def test_a_send_cut_short_by_a_dead_worker_is_taken_back_when_its_lease_lapses(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.flush()
    # A worker claimed it, then died before writing anything down.
    WebhookDelivery.objects.filter(endpoint=endpoint).update(
        state="sending", tries=1, attempt_count=1, lease_until=timezone.now() + timedelta(seconds=60))
    assert reconcile.reconcile()["registered_sweeps"] == 0  # the lease still holds
    WebhookDelivery.objects.filter(endpoint=endpoint).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert reconcile.reconcile()["registered_sweeps"] == 1
    workers.run_jobs(until=_delivered(endpoint))
    assert len(receiver.messages) == 1 and _delivery(endpoint).attempt_count == 2


def test_two_workers_running_the_same_delivery_send_it_once(world, receiver):
    endpoint, _ = _endpoint(world, receiver)
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.flush()
    delivery_id = str(_delivery(endpoint).public_id)
    receiver.delay = 0.5  # the first send is still under way when the second worker claims
    start, results = threading.Barrier(2), []

    def worker():
        try:
            start.wait()
            results.append(webhook_delivery.webhook_deliver(delivery_id=delivery_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(results) == ["delivered", "skipped"]
    assert len(receiver.messages) == 1
    assert WebhookAttempt.objects.filter(delivery__endpoint=endpoint).count() == 1


def test_a_rotated_secret_signs_beside_the_old_one_for_the_overlap(world, receiver, settings):
    endpoint, old = _endpoint(world, receiver)
    new = services.endpoint_rotate_secret(access=_access(world.admin, world.alpha), endpoint=endpoint)
    assert new != old and new.startswith("whsec_")
    receiver.secret, receiver.other_secrets = new, [old]
    share = make_share(world.alpha, world.member)
    emit("share.requested", [share.pk])
    workers.run_jobs(until=_delivered(endpoint))
    assert receiver.messages[0].signed_by == [new, old]
    assert len(receiver.messages[0].headers["webhook-signature"].split(" ")) == 2
    # Once the overlap is over, the new secret alone signs.
    type(endpoint).objects.filter(pk=endpoint.pk).update(previous_secret_until=timezone.now())
    delivery = _delivery(endpoint)
    services.delivery_redeliver(access=_access(world.admin, world.alpha), delivery=delivery)
    workers.run_jobs(until=lambda: len(receiver.messages) == 2 and _delivery(endpoint).state == "delivered")
    assert receiver.messages[1].signed_by == [new]
    rotated = AuditEvent.objects.get(action="webhook.secret_rotated")
    assert old not in str(rotated.details) and new not in str(rotated.details)


def test_an_unreachable_receiver_is_logged_in_words(world, receiver, settings):
    endpoint, _ = _endpoint(world, receiver)
    receiver.stop()  # nothing listens on its port any more
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.run_jobs(until=lambda: WebhookAttempt.objects.filter(delivery__endpoint=endpoint).exists())
    attempt = WebhookAttempt.objects.get(delivery__endpoint=endpoint)
    assert attempt.status_code is None and not attempt.ok
    assert attempt.error == f"127.0.0.1 (127.0.0.1) refused the connection on port {receiver.port}."
    assert _delivery(endpoint).state == "pending"  # tried again later


def test_secrets_are_resealed_by_the_key_rotation_and_still_sign(world, receiver, settings):
    settings.OMIPORTAL_CREDENTIAL_KEYS = K1
    endpoint, secret = _endpoint(world, receiver)
    services.endpoint_rotate_secret(access=_access(world.admin, world.alpha), endpoint=endpoint)  # both columns used
    receiver.secret = ""
    settings.OMIPORTAL_CREDENTIAL_KEYS = f"{K2},{K1}"
    call_command("rotate_credential_keys", stdout=StringIO())
    endpoint.refresh_from_db()
    assert endpoint.secret_sealed.startswith("v1$w2$") and endpoint.previous_secret_sealed.startswith("v1$w2$")
    assert AuditEvent.objects.filter(action="credential.rotated", target_id=str(endpoint.public_id)).count() == 1
    settings.OMIPORTAL_CREDENTIAL_KEYS = K2  # the old key is gone: only re-sealed values open
    receiver.secret = secret  # the previous secret, still signing during the overlap
    emit("share.requested", [make_share(world.alpha, world.member).pk])
    workers.run_jobs(until=_delivered(endpoint))
    assert receiver.messages[0].verified, receiver.messages[0].error


def test_an_event_no_endpoint_of_its_teams_listens_to_costs_one_query(world, receiver):
    _endpoint(world, receiver, team=world.beta, user=world.outsider)  # another team's endpoint
    _endpoint(world, receiver, events_=("share.rejected",))  # this team's, another event
    share = make_share(world.alpha, world.member)
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        events.emit("share.requested", [share.pk])
    assert len([q for q in queries.captured_queries if q["sql"].startswith(("SELECT", "INSERT", "UPDATE"))]) == 1
    assert not WebhookDelivery.objects.exists()
