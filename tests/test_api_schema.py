"""The API against its own published schema, with Schemathesis (property-based, in CI).

For every operation of every /api/v1/ route (read from the URL resolver: a route missing from the
schema fails), Hypothesis generates requests from GET /api/v1/schema/, valid ones and malformed ones
(Schemathesis' negative mode), sent with a valid token to the WSGI application in this process,
and every answer is checked: no 5xx, its status code documented, its content type and its body
those the schema gives for that status, a valid request not refused as malformed, a malformed one
refused. A valid request also goes with the ids of the team's real objects, so that the success
answers are checked too, and every POST with its own Idempotency-Key.

Bounded: a few examples per operation and mode, no shrinking, derandomized (the same examples on
every run, nothing kept in a .hypothesis directory).
"""

import os
import uuid

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from api.throttling import TokenRateThrottle
from tests import api_routes
from tests.api_routes import MATRIX, REQUESTS, Targets, client_for, shape

pytestmark = pytest.mark.django_db

SCHEMA_URL = "/api/v1/schema/?format=json"
# Per operation and mode in CI; a deeper local hunt: API_SCHEMA_EXAMPLES=300 (nothing is kept between runs).
EXAMPLES = int(os.environ.get("API_SCHEMA_EXAMPLES", "12"))
# A request the schema allows can still be refused by a rule (a 422 in the pages' words: the image
# is not there, the share has moved on) or find nothing (404): what it must never get is a 400,
# which would mean the schema allows what the view calls malformed.
# Two things the schema cannot say and the API decides otherwise, on purpose: a NUL character in a
# string is refused (PostgreSQL cannot store it), and a query parameter the API does not know is
# ignored (as HTTP APIs do); neither is generated.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}},
    "generation": {"allow-x00": False, "allow-extra-parameters": False},
})
OPERATIONS = [(path, method) for path, route in api_routes.api_routes().items() if path not in MATRIX["public"]
              for method in route.methods]


@pytest.fixture
def api_schema(cloud, monkeypatch):
    # omiportal.wsgi's application, without the start-up checks it runs on import (they query the
    # database outside this test's transaction rules).
    application = get_wsgi_application()
    # Hundreds of requests a minute from one token: the rate limit is tested in test_api_foundation.
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "100000/m"})
    # The WSGI handler closes the database connection after each request; the test's transaction
    # lives on it (Django's test client disconnects the same receiver).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi(SCHEMA_URL, application, config=CONFIG)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _fresh_key(case):
    if case.method.upper() == "POST":
        case.headers = {**(case.headers or {}), "Idempotency-Key": uuid.uuid4().hex}
    return case


def test_every_route_and_method_is_in_the_published_schema(client):
    paths = client.get(SCHEMA_URL).json()["paths"]
    for path, method in OPERATIONS:
        assert method.lower() in paths.get(path, {}), f"{method} {path} is not in the published schema"


def _run(strategy, auth, *, examples=EXAMPLES, replay=False) -> list[int]:
    statuses = []

    @given(case=strategy)
    @hypothesis_settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case):
        # The token goes with the call, not the case: Schemathesis then knows it is a real one, and
        # checks that the same request without it is refused (ignored_auth).
        response = case.call_and_validate(headers=auth)
        statuses.append((response.status_code, response.text[:300]) if response.status_code >= 400
                        else response.status_code)
        if replay and 200 <= response.status_code < 300:  # the retry of a POST gets the same answer
            again = case.call(headers=auth)
            case.validate_response(again, headers=auth)
            assert (again.status_code, again.json()) == (response.status_code, response.json())
            assert again.headers.get("idempotent-replayed") == ["true"]

    check()
    return statuses


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_the_api_answers_as_its_schema_says(path, method, api_schema, world, cloud):
    operation = api_schema[path][method]
    published = api_schema.raw_schema["paths"][path][method.lower()]
    auth = {"Authorization": f"Bearer {client_for(world, 'admin').raw}"}
    # The team's real objects and a valid body: the success answer is checked too (and a POST's
    # retry with the same Idempotency-Key gets it again, marked as a replay).
    ids, body = REQUESTS[shape(path)][method](Targets(world, lambda: cloud), "alpha")
    params = dict(zip(api_routes.api_routes()[path].params, (str(i) for i in ids), strict=True))
    real = operation.as_strategy(path_parameters=params, **({"body": body} if "requestBody" in published else {}))
    statuses = _run(real.map(_fresh_key), auth, examples=2, replay=method == "POST")
    assert any(isinstance(status, int) for status in statuses), f"the valid request never succeeded: {statuses}"
    # Anything else the schema allows.
    _run(operation.as_strategy().map(_fresh_key), auth)
    # Malformed requests, where the operation takes anything to get wrong.
    if published.get("parameters") or "requestBody" in published:
        _run(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), auth)


def test_a_url_under_the_api_that_matches_no_route_is_a_problem_too(api, world, client):
    response = api.client(world.member).get("/api/v1/accounts/not-a-uuid/")
    assert (response.status_code, response["Content-Type"]) == (404, "application/problem+json")
    assert response.json()["code"] == "not_found"
    page = client.get("/no-such-page/")  # the pages keep their own 404
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
