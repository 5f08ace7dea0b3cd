"""Who may reach what: every team URL × owner, wrong role, other team, anonymous; CSRF; methods."""

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import CloudAccount, Membership
from omiportal.audit.models import AuditEvent
from omiportal.audit.recorder import record
from tests import factories
from transfers.models import Recipient, Share

# The matrix lives in tests/authz_matrix.json (rendered for auditors as docs/authorization-matrix.md by
# tests/render_authz_matrix.py). team_urls: name -> methods and who may: "view" = any role,
# "act" = members, approvers and admins, "approve" = approvers and admins, "admin" = admins only,
# "audit" = admins, auditors and compliance officers; team_page = names no object besides the team.
AUTHZ = json.loads((Path(__file__).resolve().parent / "authz_matrix.json").read_text())
MATRIX = {name: (entry["methods"], entry["who"]) for name, entry in AUTHZ["team_urls"].items()}
ALLOWED_ROLES = {who: set(roles) for who, roles in AUTHZ["roles"].items()}
# Pages that name no object besides the team.
TEAM_PAGES = {name for name, entry in AUTHZ["team_urls"].items() if entry["team_page"]}
# URLs without a team in them: reachable by any signed-in user, or public.
UNSCOPED = set(AUTHZ["unscoped"])
# Site-wide pages for compliance officers only: everyone else gets a 403 (see the tests at the end).
COMPLIANCE_ONLY = set(AUTHZ["compliance_only"])
POST_ONLY = {name for name, (methods, _) in MATRIX.items() if methods == ["POST"]}


def _url_names(resolver=None, namespace=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            if str(pattern.pattern).startswith("admin/"):
                continue
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _url_names(pattern, ns)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield namespace + pattern.name


def test_every_url_is_in_the_authorization_matrix():
    missing = set(_url_names()) - set(MATRIX) - UNSCOPED - COMPLIANCE_ONLY
    assert not missing, f"Add these URLs to the authorization matrix: {sorted(missing)}"


def _share(team, account, user):
    share = Share.objects.create(
        team=team, source_account=account, source_image_id="ami-00000001", source_image_name="web",
        source_image_relation="owned", copy_name="web-copy", reason="tests", licence_confirmed_at=timezone.now(),
        requested_by=user, approval_required=True, approval_deadline=timezone.now() + timedelta(days=1),
        digest="0" * 64)
    Recipient.objects.create(share=share, kind=Recipient.Kind.EXTERNAL, external_account_id="123456789012",
                             external_region="eu-west-2")
    return share


@pytest.fixture
def targets(world):
    alpha_account = factories.make_cloud_account(world.alpha, label="alpha-prod")
    beta_account = factories.make_cloud_account(world.beta, label="beta-prod")
    alpha_membership = Membership.objects.get(team=world.alpha, user=world.member)
    beta_membership = Membership.objects.get(team=world.beta, user=world.outsider)
    objects = {}
    for key, team, account, membership in (("alpha", world.alpha, alpha_account, alpha_membership),
                                           ("beta", world.beta, beta_account, beta_membership)):
        share = _share(team, account, membership.user)
        # A copy the team receives from a pasted link: the object of the recipient-* URLs.
        incoming = Recipient.objects.create(kind=Recipient.Kind.LINK, team=team, target_account=account,
                                            state=Recipient.State.OFFERED, image_name="pasted")
        event = record(action="share.requested", actor=membership.user, team=team, target=share)
        objects[key] = (account, membership, {"share": share, "recipient": incoming,
                                              "share_recipient": share.recipients.get(), "event": event})
    return objects


def _url(name, team, account, membership, objects):
    kwargs = {"team_id": team.public_id}
    if name in TEAM_PAGES:
        return reverse(name, kwargs=kwargs)
    if name.startswith("transfers:share-"):
        kwargs["share_id"] = objects["share"].public_id
        if name == "transfers:share-reveal-link":
            kwargs["recipient_id"] = objects["share_recipient"].public_id
    elif name.startswith("transfers:recipient-"):
        kwargs["recipient_id"] = objects["recipient"].public_id
    elif name == "audit:event-detail":
        kwargs["event_id"] = objects["event"].public_id
    if "account-" in name:
        kwargs["account_id"] = account.public_id
    if "member-" in name:
        kwargs["membership_id"] = membership.public_id
    return reverse(name, kwargs=kwargs)


def _snapshot():
    return tuple(list(model.objects.order_by("pk").values()) for model in (CloudAccount, Membership, Share, Recipient))


CASES = [(name, method) for name, (methods, _) in MATRIX.items() for method in methods]


@pytest.mark.parametrize(("name", "method"), CASES)
def test_another_team_gets_404_and_nothing_changes(name, method, world, targets, client,
                                                   django_capture_on_commit_callbacks):
    client.force_login(world.outsider)  # admin of Beta
    before = _snapshot()
    # Every job is enqueued by an on-commit callback (transfers/scheduling.py): none may be registered.
    with django_capture_on_commit_callbacks() as callbacks:
        response = getattr(client, method.lower())(_url(name, world.alpha, *targets["alpha"]))
    assert response.status_code == 404
    assert _snapshot() == before
    assert callbacks == []
    assert AuditEvent.objects.filter(action="access.denied", outcome="denied", actor_id=world.outsider.pk).exists()


@pytest.mark.parametrize(("name", "method"), [c for c in CASES if c[0] not in TEAM_PAGES])
def test_an_object_of_another_team_is_404_even_for_an_admin(name, method, world, targets, client):
    client.force_login(world.admin)
    before = _snapshot()
    response = getattr(client, method.lower())(_url(name, world.alpha, *targets["beta"]))
    assert response.status_code == 404
    assert _snapshot() == before


MISSING_ROLES = [(name, method, role) for name, method in CASES
                 for role in sorted(ALLOWED_ROLES["view"] - ALLOWED_ROLES[MATRIX[name][1]])]


@pytest.mark.parametrize(("name", "method", "role"), MISSING_ROLES)
def test_a_missing_role_gets_403_and_nothing_changes(name, method, role, world, targets, client):
    client.force_login(getattr(world, role))
    before = _snapshot()
    response = getattr(client, method.lower())(_url(name, world.alpha, *targets["alpha"]), {"role": "admin"})
    assert response.status_code == 403
    assert _snapshot() == before
    assert AuditEvent.objects.filter(action="access.denied", details__reason="missing_role").exists()


ALLOWED_GETS = [
    (name, role)
    for name, (methods, who) in MATRIX.items() if "GET" in methods
    for role in sorted(ALLOWED_ROLES[who])
]


@pytest.mark.parametrize(("name", "role"), ALLOWED_GETS)
def test_allowed_roles_get_the_page(name, role, world, targets, client):
    client.force_login(getattr(world, role))
    response = client.get(_url(name, world.alpha, *targets["alpha"]))
    assert response.status_code == 200


@pytest.mark.parametrize(("name", "method"), CASES)
def test_anonymous_users_are_sent_to_sign_in(name, method, world, targets):
    response = getattr(Client(), method.lower())(_url(name, world.alpha, *targets["alpha"]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(("name", "method"), [c for c in CASES if c[1] == "POST"])
def test_every_post_needs_a_csrf_token(name, method, world, targets):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.admin)
    before = _snapshot()
    response = client.post(_url(name, world.alpha, *targets["alpha"]), {"role": "member"})
    assert response.status_code == 403
    assert _snapshot() == before


@pytest.mark.parametrize("name", sorted(POST_ONLY))
def test_actions_refuse_get(name, world, targets, client):
    client.force_login(world.admin)
    assert client.get(_url(name, world.alpha, *targets["alpha"])).status_code == 405


def test_an_unknown_team_id_is_404(world, client):
    client.force_login(world.admin)
    assert client.get(reverse("accounts:dashboard", kwargs={"team_id": uuid.uuid4()})).status_code == 404


def test_role_changes_apply_on_the_next_request(world, targets, client):
    client.force_login(world.admin)
    url = reverse("accounts:account-create", kwargs={"team_id": world.alpha.public_id})
    assert client.get(url).status_code == 200
    Membership.objects.filter(team=world.alpha, user=world.admin).update(role="member")
    assert client.get(url).status_code == 403


def _site_url(name, targets):
    if name == "audit:site-event-detail":
        return reverse(name, kwargs={"event_id": targets["alpha"][2]["event"].public_id})
    return reverse(name)


@pytest.mark.parametrize("name", sorted(COMPLIANCE_ONLY))
@pytest.mark.parametrize("role", ["admin", "auditor", "member", "approver", "outsider"])
def test_site_wide_pages_refuse_everyone_but_compliance_officers(name, role, world, targets, client):
    client.force_login(getattr(world, role))
    assert client.get(_site_url(name, targets)).status_code == 403
    assert AuditEvent.objects.filter(action="access.denied", details__reason="not_compliance_officer").exists()


@pytest.mark.parametrize("name", sorted(COMPLIANCE_ONLY))
def test_site_wide_pages_serve_compliance_officers(name, world, targets, client):
    client.force_login(world.compliance)
    assert client.get(_site_url(name, targets)).status_code == 200
    assert client.post(_site_url(name, targets)).status_code == 405


@pytest.mark.parametrize("name", sorted(COMPLIANCE_ONLY))
def test_site_wide_pages_send_anonymous_users_to_sign_in(name, world, targets):
    response = Client().get(_site_url(name, targets))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_auditors_matrix_document_is_up_to_date():
    from tests import render_authz_matrix

    expected = render_authz_matrix.render(render_authz_matrix.load(), render_authz_matrix._routes())
    assert render_authz_matrix.DOC_FILE.read_text() == expected, (
        "docs/authorization-matrix.md does not match tests/authz_matrix.json; regenerate it with "
        ".venv/bin/python tests/render_authz_matrix.py")
