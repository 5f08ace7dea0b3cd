"""Every state change made through the API is in the audit trail, naming the token it came through.

The walk covers every POST route of /api/v1/ (read from the URL resolver: a new one without an
expected action fails here), with every kind of token the matrix lets make it (personal and
service): the call succeeds, the business state changes, the service's own event is recorded with
the token's person as actor and ``details.via`` = the token (kind, name, id, prefix), and so is
every other event of that request (those the portal records itself, such as export.requested).
The retry with the same Idempotency-Key replays the answer and records nothing, changes nothing.
"""

import pytest

from audit.models import AuditEvent
from audit.verify import verify_chain
from tests import api_routes
from tests.api_routes import MATRIX, Targets, client_for
from tests.test_audit_coverage import TRACKED, _snapshot

pytestmark = pytest.mark.django_db

# The event each POST records on success (the pages' actions: the same services).
ACTIONS = {
    "/api/v1/shares/": "share.requested",
    "/api/v1/shares/{share_id}/approve/": "share.approved",
    "/api/v1/shares/{share_id}/reject/": "share.rejected",
    "/api/v1/shares/{share_id}/cancel/": "share.cancelled",
    "/api/v1/shares/{share_id}/reexport/": "share.reexport_requested",
    "/api/v1/incoming/{recipient_id}/accept/": "import.accepted",
    "/api/v1/incoming/{recipient_id}/decline/": "import.declined",
    "/api/v1/incoming/{recipient_id}/retry/": "import.retried",
    "/api/v1/link-imports/": "link.import_requested",
}
POSTS = sorted(path for path, route in api_routes.api_routes().items() if "POST" in route.methods)
WALK = [(path, principal) for path in POSTS if path in MATRIX["routes"]
        for principal in MATRIX["groups"][MATRIX["routes"][path]["POST"]["who"]]]


def test_every_post_route_is_walked():
    assert not set(POSTS) - set(ACTIONS), f"add the action each records to ACTIONS: {sorted(set(POSTS) - set(ACTIONS))}"
    assert not set(POSTS) - {path for path, _ in WALK}, "a POST route that nobody may call?"


@pytest.mark.parametrize(("path", "principal"), WALK)
def test_each_api_change_is_recorded_naming_its_token(path, principal, world, request):
    targets = Targets(world, lambda: request.getfixturevalue("cloud"))
    client = client_for(world, principal)
    url, body = api_routes.request_for(targets, path, "POST")
    before, seq = _snapshot(), AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    key = "walk-" + principal.replace(" ", "-")
    response = client.post(url, body, key=key)
    assert 200 <= response.status_code < 300, response.content.decode()[:500]
    assert _snapshot() != before, f"POST {path} succeeded and changed none of {sorted(m.__name__ for m in TRACKED)}"

    token = client.token
    via = {"kind": token.kind, "name": token.name, "id": str(token.public_id), "prefix": f"omi_{token.prefix}"}
    events = list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))
    assert ACTIONS[path] in [e.action for e in events], [e.action for e in events]
    for event in events:  # the service's own event and those it caused (export.requested...)
        assert event.details.get("via") == via, (event.action, event.details.get("via"))
        assert event.actor_id in (token.user_id, None), event.action  # the person, or the portal itself
    assert all(e.actor_id == token.user_id for e in events if e.action == ACTIONS[path])

    # The pipeline's retry: the same answer, nothing done or recorded again.
    after, last = _snapshot(), events[-1].seq
    again = client.post(url, body, key=key)
    assert again["Idempotent-Replayed"] == "true"
    assert (again.status_code, again.json()) == (response.status_code, response.json())
    assert _snapshot() == after and not AuditEvent.objects.filter(seq__gt=last).exists()
    assert verify_chain().ok
