"""Idempotency-Key on the transfer endpoints (api/idempotency.py): a pipeline that retries never asks
twice, even when its retry arrives while the first request is still running."""

import threading

import pytest
from django.db import connection

from accounts.models import CloudAccount
from api.models import IdempotentRequest
from tests.fixtures_api import ApiClient
from tests.test_api_shares import request_share, share_body, share_world
from transfers.models import Share
from transfers.services import requests as share_requests

PROBLEM = "application/problem+json"
POSTS = ["/api/v1/shares/", "/api/v1/link-imports/", *(f"/api/v1/shares/{{id}}/{action}/" for action in
                                                       ("approve", "reject", "cancel", "reexport")),
         *(f"/api/v1/incoming/{{id}}/{action}/" for action in ("accept", "decline", "retry"))]


@pytest.fixture
def shares(world, cloud, api):
    return share_world(world, cloud, api)


@pytest.mark.django_db
def test_a_retry_after_a_success_gets_the_same_answer_and_makes_one_share(shares):
    client = shares.api.client(shares.world.member)
    first = client.post("/api/v1/shares/", share_body(shares), key="build-42")
    retry = client.post("/api/v1/shares/", share_body(shares), key="build-42")
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json() and retry["Location"] == first["Location"]
    assert retry["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Share.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_refused(shares):
    client = shares.api.client(shares.world.member)
    assert client.post("/api/v1/shares/", share_body(shares), key="build-43").status_code == 201
    response = client.post("/api/v1/shares/", share_body(shares, copy_name="other-copy"), key="build-43")
    assert response.status_code == 422 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "idempotency_key_reused"
    assert Share.objects.count() == 1


@pytest.mark.django_db
def test_a_refused_post_leaves_its_key_free_for_the_corrected_retry(shares):
    own_bucket = shares.source.export_bucket
    CloudAccount.objects.filter(pk=shares.source.pk).update(export_bucket=shares.cloud.account("gamma")["bucket"])
    client = shares.api.client(shares.world.member)
    refused = client.post("/api/v1/shares/", share_body(shares), key="build-44")
    assert refused.status_code == 422 and not IdempotentRequest.objects.filter(key="build-44").exists()
    CloudAccount.objects.filter(pk=shares.source.pk).update(export_bucket=own_bucket)
    retry = client.post("/api/v1/shares/", share_body(shares), key="build-44")
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert Share.objects.count() == 1


@pytest.mark.django_db
def test_a_key_is_the_token_s_own(shares):
    first = shares.api.client(shares.world.member).post("/api/v1/shares/", share_body(shares), key="build-45")
    other = shares.api.client(shares.world.admin).post("/api/v1/shares/", share_body(shares, copy_name="web-copy-2"),
                                                       key="build-45")
    assert first.status_code == other.status_code == 201 and first.json()["id"] != other.json()["id"]


@pytest.mark.django_db
def test_an_action_is_replayed_too(shares):
    body = request_share(shares)
    client = shares.api.client(shares.world.approver)
    url = f"/api/v1/shares/{body['id']}/approve/"
    first = client.post(url, {"digest": body["digest"]}, key="approve-1")
    again = client.post(url, {"digest": body["digest"]}, key="approve-1")
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    # A new key is a new request: the service says the share has moved on.
    fresh = client.post(url, {"digest": body["digest"]}, key="approve-2")
    assert fresh.status_code == 422 and "no longer waiting" in fresh.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", POSTS)
def test_every_post_needs_a_key(path, world, api):
    import uuid

    response = api.client(world.admin).post(path.replace("{id}", str(uuid.uuid4())), {}, key=None)
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_missing"


def _waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_posts_with_one_key_at_the_same_time_make_one_share(shares, monkeypatch, wait_for):
    """The first holds inside its transaction (in the service) until the second is provably waiting
    on the key's unique index; then both finish: one share, the same answer twice."""
    entered, release = threading.Event(), threading.Event()
    real = share_requests.share_request
    calls = []

    def held(**kwargs):
        calls.append(threading.current_thread().name)
        entered.set()
        assert release.wait(30)
        return real(**kwargs)

    monkeypatch.setattr(share_requests, "share_request", held)
    token = shares.api.client(shares.world.member)
    answers, barrier = {}, threading.Barrier(2)

    def post(name):
        client = ApiClient(token.raw, token.token)  # a client, and a database connection, per thread
        try:
            if name == "second":
                barrier.wait(10)
            answers[name] = client.post("/api/v1/shares/", share_body(shares), key="build-46")
        finally:
            connection.close()

    first = threading.Thread(target=post, args=("first",), name="first")
    second = threading.Thread(target=post, args=("second",), name="second")
    first.start()
    assert entered.wait(30), "the first request never reached the service"
    second.start()
    barrier.wait(10)
    wait_for(_waiting_on_a_lock, lambda n: n >= 1, timeout=10)  # the second is blocked on the key
    assert "second" not in answers
    release.set()
    first.join(30)
    second.join(30)

    assert calls == ["first"], "the second request ran the service too"
    assert answers["first"].status_code == answers["second"].status_code == 201
    assert answers["second"].json() == answers["first"].json()
    assert answers["second"]["Idempotent-Replayed"] == "true"
    assert Share.objects.count() == 1 and IdempotentRequest.objects.filter(key="build-46").count() == 1
