"""Who may reach what: every team URL × owner, wrong role, other team, anonymous; CSRF; methods."""

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.access import NotInTeam
from accounts.models import CloudAccount, Membership, User
from accounts.selectors import team_access_for_user
from api.models import ApiToken
from audit.models import AuditEvent
from audit.recorder import record
from distribution.models import (
    Family,
    FamilyVersion,
    GroupMember,
    RecipientGroup,
    RetentionPolicy,
    RetentionRun,
    StandingApproval,
    Subscription,
)
from tests import factories
from tests.conftest import FAST_HASHERS, make_world
from tests.fixtures_api import make_token
from transfers import selectors as transfer_selectors
from transfers.models import LaunchGrant, Recipient, Share
from webhooks.models import WebhookDelivery, WebhookEndpoint

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


pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def module_data(django_db_setup, django_db_blocker):
    """The world and the targets, made once for the module's thousand cases, as Django's
    TestCase.setUpTestData does: each test runs in a savepoint inside this transaction, rolled
    back after it, so no test sees another's writes. Made for each test, they were half the
    module's time. Tests read these objects' ids; one that changes an object reads it afresh."""
    with django_db_blocker.unblock():
        module = transaction.atomic()
        module.__enter__()
        with override_settings(PASSWORD_HASHERS=FAST_HASHERS):
            world = make_world()
            data = world, _targets(world)
    try:
        yield data
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            module.__exit__(None, None, None)


@pytest.fixture(scope="module")
def world(module_data):
    return module_data[0]


@pytest.fixture(scope="module")
def targets(module_data):
    return module_data[1]


def _targets(world):
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
        # A launch permission the team's account gave ("launch permission only"): the object of grant-revoke.
        grant = LaunchGrant.objects.create(share=share, account=account, image_id=share.source_image_id,
                                           grantee_account_id="333344445555", keep=True,
                                           state=LaunchGrant.State.GRANTED)
        # A webhook endpoint with one delivered message: the objects of the webhooks:* URLs.
        endpoint = WebhookEndpoint.objects.create(team=team, url="https://hooks.example.com/omi",
                                                  events=["share.approved"], secret_sealed="never opened here")
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, event_type="share.approved", event_key="k",
                                                  subject_id=share.public_id, msg_id=f"msg_{key}", payload="{}",
                                                  state="delivered")
        # The team's service token, made by its admin: the object of api:token-revoke.
        admin = world.admin if key == "alpha" else world.outsider
        token = make_token(admin, team, kind=ApiToken.Kind.SERVICE)[0]
        # A recipient group inviting the team's own account: the object of distribution:group-* (the
        # group-membership-* URLs find that invitation as one to the team's account).
        group = RecipientGroup.objects.create(team=team, name="production", created_by=admin)
        group_member = GroupMember.objects.create(group=group, account=account, invited_by=admin)
        # A family the team publishes and subscribes itself, with a version, a retention rule and a run
        # waiting for confirmation: the objects of the distribution:retention-* URLs.
        family = Family.objects.create(team=team, source_account=account, name=f"retention-golden-{key}", match="name",
                                       name_pattern="golden-*", created_by=admin)
        version = FamilyVersion.objects.create(family=family, number=1, image_id="ami-0000000f", image_name="golden-1")
        # The team also subscribes its own family: the object of distribution:subscription-* (the family, of family-*).
        subscription = Subscription.objects.create(family=family, team=team, created_by=admin)
        policy = RetentionPolicy.objects.create(team=team, family=family, keep_last=1, created_by=admin,
                                                changed_by=admin)
        retention_run = RetentionRun.objects.create(policy=policy)
        # Its standing approval: the object of distribution:approval-stop (the family, of approval-list and -sign).
        approval = StandingApproval.objects.create(family=family, signed_by=admin, max_versions=3, digest="0" * 64,
                                                   expires_at=timezone.now() + timedelta(days=30))
        objects[key] = (account, membership, {"share": share, "recipient": incoming, "grant": grant,
                                              "share_recipient": share.recipients.get(), "event": event,
                                              "endpoint": endpoint, "delivery": delivery, "token": token,
                                              "group": group, "group_member": group_member,
                                              "retention_family": family, "retention_version": version,
                                              "retention_run": retention_run, "approval": approval,
                                              "subscription": subscription})
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
    elif name.startswith("transfers:grant-"):
        kwargs["grant_id"] = objects["grant"].public_id
    elif name.startswith("webhooks:"):
        kwargs["endpoint_id"] = objects["endpoint"].public_id
        if name == "webhooks:delivery-redeliver":
            kwargs["delivery_id"] = objects["delivery"].public_id
    elif name.startswith("distribution:group-"):
        key = "member_id" if name.startswith("distribution:group-membership-") else "group_id"
        kwargs[key] = objects["group_member" if key == "member_id" else "group"].public_id
        if name == "distribution:group-member-remove":
            kwargs["member_id"] = objects["group_member"].public_id
        return reverse(name, kwargs=kwargs)
    elif name.startswith("distribution:retention-"):
        if name == "distribution:retention-end-of-life-set":
            kwargs["version_id"] = objects["retention_version"].public_id
        elif name in ("distribution:retention-run", "distribution:retention-confirm", "distribution:retention-cancel"):
            kwargs["run_id"] = objects["retention_run"].public_id
        else:
            kwargs["family_id"] = objects["retention_family"].public_id
        return reverse(name, kwargs=kwargs)
    elif name.startswith("distribution:approval-"):
        if name == "distribution:approval-stop":
            kwargs["approval_id"] = objects["approval"].public_id
        else:
            kwargs["family_id"] = objects["retention_family"].public_id
        return reverse(name, kwargs=kwargs)
    elif name.startswith("distribution:subscription-"):
        kwargs["subscription_id"] = objects["subscription"].public_id
        return reverse(name, kwargs=kwargs)
    elif name.startswith("distribution:family-"):
        kwargs["family_id"] = objects["retention_family"].public_id
        return reverse(name, kwargs=kwargs)
    elif name == "api:token-revoke":
        kwargs["token_id"] = objects["token"].public_id
    elif name == "audit:event-detail":
        kwargs["event_id"] = objects["event"].public_id
    if "account-" in name:
        kwargs["account_id"] = account.public_id
    if "member-" in name:
        kwargs["membership_id"] = membership.public_id
    return reverse(name, kwargs=kwargs)


def _snapshot():
    return tuple(list(model.objects.order_by("pk").values())
                 for model in (CloudAccount, Membership, Share, Recipient, LaunchGrant,
                               WebhookEndpoint, WebhookDelivery, ApiToken, RecipientGroup, GroupMember,
                               FamilyVersion, RetentionPolicy, RetentionRun, StandingApproval, Family, Subscription,
                               Subscription.accounts.through))


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
    denials = AuditEvent.objects.filter(action="access.denied", actor_id=world.admin.pk,
                                        details__reason="not_found_in_team")
    denied_before = denials.count()
    response = getattr(client, method.lower())(_url(name, world.alpha, *targets["beta"]))
    assert response.status_code == 404
    assert _snapshot() == before
    # The read raised, the request's boundary recorded it: once (accounts/access.py).
    assert denials.count() == denied_before + 1


def test_a_read_that_finds_nothing_writes_nothing(world, targets):
    """Selectors only read: the refusal is recorded where the request is handled, not in the read."""
    access = team_access_for_user(user=world.admin, team_public_id=world.alpha.public_id)
    events = AuditEvent.objects.count()
    with pytest.raises(NotInTeam) as raised:
        transfer_selectors.share_get_for_user(access=access, public_id=targets["beta"][2]["share"].public_id)
    assert AuditEvent.objects.count() == events
    assert (raised.value.reason, raised.value.target.type) == ("not_found_in_team", "transfers.share")


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
    assert client.get(reverse("transfers:dashboard", kwargs={"team_id": uuid.uuid4()})).status_code == 404


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


# --- The admin site (INS-05) ---------------------------------------------------------------------------------
# admin_urls: every URL under /admin/ -> methods and who (admin_who says what each means). Keys ending in "*"
# cover every URL name they start: the RQ dashboard's. Staff here hold every model permission there is.

ADMIN = AUTHZ["admin_urls"]
ADMIN_EXACT = {name: entry for name, entry in ADMIN.items() if not name.endswith("*")}
ADMIN_OPEN = {"staff", "staff, read-only", "staff, audited"}  # who staff may reach (GET)


def _admin_url_names(resolver=None, namespace="", inside=False):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.app_name or pattern.namespace}:" if pattern.namespace else namespace
            yield from _admin_url_names(pattern, ns, inside or str(pattern.pattern).startswith("admin/"))
        elif isinstance(pattern, URLPattern) and pattern.name and inside:
            yield namespace + pattern.name


def _admin_entry(name):
    if name in ADMIN:
        return ADMIN[name]
    return next((entry for key, entry in ADMIN.items() if key.endswith("*") and name.startswith(key[:-1])), None)


def test_every_admin_url_is_in_the_authorization_matrix():
    missing = {name for name in _admin_url_names() if _admin_entry(name) is None}
    assert not missing, f"Add these admin URLs to the authorization matrix: {sorted(missing)}"
    assert set(AUTHZ["admin_who"]) >= {entry["who"] for entry in ADMIN.values()}


@pytest.fixture
def admin_objects(world):
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType
    from django_otp.plugins.otp_totp.models import TOTPDevice

    seen = {"username": "x", "ip_address": "198.51.100.9", "user_agent": "t", "http_accept": "*/*", "path_info": "/"}
    objects = {
        "accounts_user": world.approver.pk, "accounts_team": world.alpha.pk,
        "accounts_cloudaccount": factories.make_cloud_account(world.alpha, label="alpha-admin").pk,
        "auth_group": Group.objects.create(name="ops").pk,
        "axes_accessattempt": AccessAttempt.objects.create(failures_since_start=1, **seen).pk,
        "axes_accesslog": AccessLog.objects.create(**seen).pk,
        "axes_accessfailurelog": AccessFailureLog.objects.create(**seen).pk,
        "otp_totp_totpdevice": TOTPDevice.objects.create(user=world.approver, name="phone").pk,
        "audit_auditevent": record(action="share.requested", actor=world.member, team=world.alpha).pk,
    }
    endpoint = WebhookEndpoint.objects.create(team=world.alpha, url="https://hooks.example.com/omi",
                                              events=["share.approved"], secret_sealed="never opened here")
    objects["webhooks_webhookendpoint"] = endpoint.pk
    objects["webhooks_webhookdelivery"] = WebhookDelivery.objects.create(
        endpoint=endpoint, event_type="share.approved", event_key="k", subject_id=endpoint.public_id,
        msg_id="msg_admin", payload="{}").pk
    objects["view_on_site"] = (ContentType.objects.get_for_model(world.alpha).pk, world.alpha.pk)
    return objects


def _admin_url(name, objects):
    short = name.removeprefix("admin:")
    if short == "app_list":
        return reverse(name, kwargs={"app_label": "accounts"})
    if short == "view_on_site":
        return reverse(name, args=objects["view_on_site"])
    if short == "auth_user_password_change":
        return reverse(name, args=[objects["accounts_user"]])
    model, _, view = short.rpartition("_")
    if model in objects and view in ("change", "delete", "history", "config", "qrcode"):
        return reverse(name, args=[objects[model]])
    return reverse(name)


def _staff_client(world, kind):
    """Staff holding every model permission, signed in with a verified second factor."""
    from django.contrib.auth.models import Permission
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    # The module's compliance officer is shared by every test: changed here on a copy of its own.
    user = User.objects.get(pk=world.compliance.pk) if kind == "compliance" else factories.make_user(f"{kind}@ops.test")
    user.is_staff, user.is_superuser = True, kind == "superuser"
    user.save()
    user.user_permissions.set(Permission.objects.all())
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.create(user=user, name="ops", confirmed=True).persistent_id
    session.save()
    return client


def _admin_snapshot():
    from django.contrib.auth.models import Group
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts.models import Team

    return tuple(list(model.objects.order_by("pk").values()) for model in
                 (User, Team, Membership, CloudAccount, Group, TOTPDevice))


ADMIN_CASES = [(name, kind) for name in sorted(ADMIN_EXACT) if "GET" in ADMIN_EXACT[name]["methods"]
               for kind in ("staff", "superuser", "compliance")]


@pytest.mark.parametrize(("name", "kind"), ADMIN_CASES)
def test_staff_reach_in_the_admin_only_what_the_matrix_says(name, kind, world, admin_objects):
    client = _staff_client(world, kind)
    who = ADMIN_EXACT[name]["who"]
    response = client.get(_admin_url(name, admin_objects))
    if who == "portal":
        assert (response.status_code, response["Location"]) == (302, reverse("password_change"))
    elif who in ADMIN_OPEN or who == "public" or (who.startswith("compliance") and kind == "compliance"):
        assert response.status_code in (200, 302, 404)  # view_on_site: the object has no page of its own
        assert not response.get("Location", "").startswith(reverse("admin:login"))
    else:
        assert response.status_code == 403


NOBODY_POSTS = [name for name, entry in sorted(ADMIN_EXACT.items())
                if entry["who"] in ("nobody", "staff, read-only") and "POST" in entry["methods"]]


@pytest.mark.parametrize("name", NOBODY_POSTS)
def test_even_a_superuser_posting_to_a_closed_admin_view_changes_nothing(name, world, admin_objects):
    client = _staff_client(world, "superuser")
    before = _admin_snapshot()
    response = client.post(_admin_url(name, admin_objects), {
        "post": "yes", "name": "changed", "email": "changed@evil.test", "password1": "a chosen passphrase",
        "password2": "a chosen passphrase", "require_two_factor_for_privileged": "", "label": "changed"})
    assert response.status_code == 403
    assert _admin_snapshot() == before


@pytest.mark.parametrize("name", sorted(n for n, entry in ADMIN_EXACT.items() if entry["who"] != "public"))
@pytest.mark.parametrize("kind", ["anonymous", "password only"])
def test_the_admin_asks_anyone_without_a_second_factor_to_sign_in(name, kind, world, admin_objects):
    client = Client()
    if kind == "password only":
        client.force_login(factories.make_user("ops@ops.test", is_staff=True, is_superuser=True))
    method = "get" if "GET" in ADMIN_EXACT[name]["methods"] else "post"
    response = getattr(client, method)(_admin_url(name, admin_objects))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_rq_dashboard_is_staff_only(world):
    assert Client().get(reverse("django_rq:home")).status_code == 302
    assert _staff_client(world, "staff").get(reverse("django_rq:home")).status_code == 200
