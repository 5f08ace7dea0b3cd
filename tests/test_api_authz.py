"""Who may call what in the API: every route × every kind of token and role, checked for real.

The routes come from the URL resolver (tests/api_routes.py), the expectations from
tests/api_authz_matrix.json: a route without an entry, or an entry without a request to make,
fails here. Allowed calls get their status with objects made by the services against the sandbox
(so an approval really approves); refused ones change nothing, enqueue nothing and are recorded as
``access.denied`` naming the token.
"""

import json

import pytest
from django.db import IntegrityError, transaction

from accounts.models import Team
from api.models import ApiToken, IdempotentRequest
from audit.models import AuditEvent
from tests import api_routes
from tests.api_routes import MATRIX, NO_TOKEN, OTHER_TEAMS_ID, OUTSIDER, REQUESTS, Targets, cell, client_for, shape
from transfers.models import Export, LaunchGrant, Recipient, Share

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
PAGES_MATRIX = json.loads((api_routes.MATRIX_FILE.parent / "authz_matrix.json").read_text())

# What a list must show the team's own tokens and never another team's (made before the call).
LISTED = {
    "/api/v1/accounts/": lambda t: t.account("alpha").public_id,
    "/api/v1/shares/": lambda t: t.share("alpha").public_id,
    "/api/v1/incoming/": lambda t: t.incoming("alpha").public_id,
    "/api/v1/audit/events/": lambda t: t.event("alpha").public_id,
}


@pytest.fixture
def targets(world, request):
    # The sandbox starts only for the cells that make Alpha's real objects.
    return Targets(world, lambda: request.getfixturevalue("cloud"))


def _snapshot():
    tokens = ApiToken.objects.order_by("pk").values_list("pk", "role", "revoked_at", "expires_at")
    return (list(tokens), *(list(model.objects.order_by("pk").values())
                            for model in (Share, Recipient, Export, LaunchGrant, IdempotentRequest)))


def test_every_api_route_and_method_is_in_the_matrix():
    routes = api_routes.api_routes()
    described = set(MATRIX["routes"]) | set(MATRIX["public"])
    assert not set(routes) - described, f"add to tests/api_authz_matrix.json: {sorted(set(routes) - described)}"
    assert not described - set(routes), f"the matrix names routes that do not exist: {sorted(described - set(routes))}"
    for path, methods in MATRIX["routes"].items():
        assert set(methods) == set(routes[path].methods), f"{path}: the view answers {routes[path].methods}"
        for method, entry in methods.items():
            assert entry["who"] in MATRIX["groups"], (path, method)
            assert method in REQUESTS.get(shape(path), {}), f"tests/api_routes.py REQUESTS: add {method} {path}"


def test_the_pages_matrix_sends_every_api_route_here():
    """tests/test_authz.py checks every URL of the portal: it must know these are the API's."""
    routes = api_routes.api_routes()
    missing = {route.name for route in routes.values()} - set(PAGES_MATRIX["unscoped"])
    assert not missing, f"add to tests/authz_matrix.json 'unscoped' (pointing to the API's matrix): {sorted(missing)}"


def test_the_api_matrix_document_is_up_to_date():
    from tests import render_api_authz_matrix

    assert render_api_authz_matrix.DOC_FILE.read_text() == render_api_authz_matrix.render(), (
        "docs/api/authorization-matrix.md is stale; run .venv/bin/python tests/render_api_authz_matrix.py")


def _call(client, method, url, body):
    if method == "GET":
        return client.get(url)
    return client.post(url, body)


@pytest.mark.parametrize(("path", "method", "principal"), list(api_routes.cells()))
def test_cell(path, method, principal, world, targets, django_capture_on_commit_callbacks):
    _check(path, method, principal, cell(path, method, principal), world, targets,
           django_capture_on_commit_callbacks)


TWO_FACTOR = MATRIX["two_factor"]["overrides"]


@pytest.mark.parametrize(("path", "method", "principal"),
                         [c for c in api_routes.cells() if c[2] in ("approver", "admin", "member")])
def test_cell_in_a_team_that_requires_two_factor(path, method, principal, world, targets,
                                                 django_capture_on_commit_callbacks):
    expected = TWO_FACTOR.get(path, {}).get(method, {}).get(principal, cell(path, method, principal))

    def two_factor_team():  # once the objects are made (an approval among them needs no code then)
        Team.objects.filter(pk=world.alpha.pk).update(require_two_factor_for_privileged=True)

    _check(path, method, principal, expected, world, targets, django_capture_on_commit_callbacks,
           before_call=two_factor_team)


def _check(path, method, principal, expected, world, targets, capture, before_call=None):
    client = client_for(world, principal)
    url, body = api_routes.request_for(targets, path, method, side="beta" if principal == OTHER_TEAMS_ID else "alpha")
    listed = LISTED[path](targets) if method == "GET" and path in LISTED and expected == 200 else None
    if before_call:
        before_call()
    before, seq = _snapshot(), AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    with capture() as callbacks:
        response = _call(client, method, url, body)
    assert response.status_code == expected, response.content.decode()[:600]

    if expected >= 400:
        assert response["Content-Type"] == PROBLEM and response.json()["status"] == expected
        assert _snapshot() == before, "a refused call changed something"
        assert callbacks == [], "a refused call enqueued work"
    if expected == 401:
        assert response["WWW-Authenticate"] == "Bearer"
    elif expected in (403, 404):
        # access.denied, or the service's own refusal (share.approved, outcome denied, step_up_missing).
        denials = AuditEvent.objects.filter(seq__gt=seq, outcome="denied")
        vias = [event.details.get("via", {}).get("id") for event in denials]
        assert str(client.token.public_id) in vias, f"the refusal was not recorded naming the token: {vias}"
        refusal = denials.filter(action="access.denied", details__via__id=str(client.token.public_id))
        if expected == 404:
            assert refusal.exclude(details__reason="missing_role").exists()
        elif before_call is None:  # the matrix's 403s are roles; a two-factor team's may be the service's
            assert refusal.filter(details__reason="missing_role").exists()
    else:
        assert response["Content-Type"] == "application/json"
    if listed is not None:  # the team's own list shows the team's object; another team's list never does
        assert (str(listed) in response.content.decode()) is (principal != OUTSIDER)


def test_a_service_token_never_holds_a_role_that_approves(world):
    from tests.fixtures_api import make_token

    token, _ = make_token(world.admin, world.alpha, kind="service", role="member")
    for role in ("approver", "admin"):
        with pytest.raises(IntegrityError), transaction.atomic():
            ApiToken.objects.filter(pk=token.pk).update(role=role)


@pytest.mark.parametrize("path", sorted(MATRIX["routes"]))
def test_methods_a_route_does_not_list_answer_405(path, world, targets):
    client = client_for(world, "admin")
    url, _ = api_routes.request_for(targets, path, next(iter(MATRIX["routes"][path])))
    for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - set(MATRIX["routes"][path]):
        response = getattr(client._client, method.lower())(url, headers={"Idempotency-Key": "k"})
        assert response.status_code == 405, (method, response.status_code)
        assert response["Content-Type"] == PROBLEM


@pytest.mark.parametrize("path", sorted(MATRIX["public"]))
def test_the_schema_and_reference_need_no_token(path, world):
    assert client_for(world, NO_TOKEN).get(path).status_code == 200


def test_what_a_service_token_asks_is_its_maker_s_request(world, targets):
    """Four eyes hold through a pipeline: a service token's share is its maker's request, so that admin
    can never approve it (another approver can); and the token may withdraw what its maker asked."""
    pipeline, admin, approver = (client_for(world, who) for who in ("service member", "admin", "approver"))
    asked = pipeline.post("/api/v1/shares/", api_routes.REQUESTS["/api/v1/shares/"]["POST"](targets, "alpha")[1])
    assert asked.status_code == 201, asked.content
    share = Share.objects.get(public_id=asked.json()["id"])
    assert share.requested_by_id == world.admin.pk
    refused = admin.post(f"/api/v1/shares/{share.public_id}/approve/", {"digest": share.digest})
    assert refused.status_code == 422 and Share.objects.get(pk=share.pk).state == Share.State.REQUESTED
    assert approver.post(f"/api/v1/shares/{share.public_id}/approve/", {"digest": share.digest}).status_code == 200

    own = targets.share("alpha")  # asked by the member: the service token is not its requester
    assert pipeline.post(f"/api/v1/shares/{own.public_id}/cancel/").status_code == 403
    Share.objects.filter(pk=own.pk).update(requested_by=world.admin)  # as if the admin had asked it by hand
    assert pipeline.post(f"/api/v1/shares/{own.public_id}/cancel/").status_code == 200
