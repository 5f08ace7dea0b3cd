"""The API's routes, who may call each (tests/api_authz_matrix.json), and a valid request for each.

Shared by the API's proofs (test_api_authz, test_api_audit_coverage, test_api_canaries,
test_api_schema). Routes are read from the URL resolver, never listed by hand: a route nobody
described here fails those tests until it has a matrix entry and a request.

    routes = api_routes()                  # {"/api/v1/shares/{share_id}/": Route(...), ...}
    t = Targets(world, lambda: cloud)      # Alpha's objects made by the services, Beta's as plain rows
    path, body = request_for(t, "/api/v1/shares/{share_id}/approve/", "POST", side="alpha")
"""

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path

from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

import outscale
from accounts.models import Team
from api.models import ApiToken
from audit.models import AuditEvent
from audit.recorder import record
from distribution.models import Family
from tests import factories
from tests.fixtures_api import ApiClient, make_token
from tests.transfer_world import access, image_id, sandbox_account
from transfers.models import Recipient, Share
from transfers.services import external_links
from transfers.services import requests as share_requests
from transfers.services.requests import ExternalRecipient

MATRIX_FILE = Path(__file__).resolve().parent / "api_authz_matrix.json"
MATRIX = json.loads(MATRIX_FILE.read_text())
PREFIX = "api/v1/"
NO_TOKEN, REVOKED, OTHER_TEAMS_ID, OUTSIDER = "no token", "revoked token", "Beta's id", "outsider"


@dataclass(frozen=True)
class Route:
    name: str  # "api:share-detail"
    path: str  # "/api/v1/shares/{share_id}/", as the OpenAPI schema writes it
    methods: tuple[str, ...]
    params: tuple[str, ...]


def api_routes() -> dict[str, Route]:
    """Every URL under /api/v1/, with the methods its view answers (HEAD and OPTIONS aside)."""
    found: dict[str, Route] = {}

    def walk(resolver, namespace, prefix):
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern, ns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and (prefix + str(pattern.pattern)).startswith(PREFIX):
                raw = prefix + str(pattern.pattern)
                view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
                methods = tuple(m.upper() for m in view.http_method_names
                                if m not in ("head", "options") and hasattr(view, m))
                params = tuple(re.findall(r"<(?:\w+:)?(\w+)>", raw))
                path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", raw)
                found[path] = Route(namespace + (pattern.name or ""), path, methods, params)

    walk(get_resolver(), "", "")
    return found


def shape(path: str) -> str:
    """The path with its parameters unnamed: requests are keyed by it, whatever a view calls its ids."""
    return re.sub(r"\{\w+\}", "{}", path)


def cell(path: str, method: str, principal: str):
    """The status the matrix expects; None where the cell does not apply (no id of another team's to name)."""
    entry = MATRIX["routes"][path][method]
    ok = entry.get("ok", 200)
    names_object = "{" in path or entry.get("body_ids", False)
    if principal in (NO_TOKEN, REVOKED):
        return 401
    if principal == OUTSIDER:  # Beta's admin: Alpha's ids are not found; a list shows Beta's own
        return 404 if names_object else ok
    if principal == OTHER_TEAMS_ID:  # Alpha's admin naming Beta's objects
        return 404 if names_object else None
    return ok if principal in MATRIX["groups"][entry["who"]] else 403


def cells():
    for path, methods in MATRIX["routes"].items():
        for method in methods:
            for principal in MATRIX["principals"]:
                if cell(path, method, principal) is not None:
                    yield path, method, principal


class Anonymous(ApiClient):
    def __init__(self):
        super().__init__("", None)
        from django.test import Client

        self._client = Client()


def client_for(world, principal: str) -> ApiClient:
    """The token the column means, made by the real service (tests/fixtures_api.py)."""
    if principal == NO_TOKEN:
        return Anonymous()
    spec = MATRIX["principals"][principal]
    user = getattr(world, spec["user"])
    team = getattr(world, spec.get("team", "alpha"))
    token, raw = make_token(user, team, kind=spec["kind"], role=spec["role"], name=principal)
    if principal == REVOKED:
        ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    return ApiClient(raw, token)


class Targets:
    """The objects each route names. Alpha's are made by the services against the sandbox, in the
    state the route acts on, so an allowed call really succeeds; Beta's are plain rows (every call
    naming them must stop at a 404 before anything reads them). Each is made on first use."""

    def __init__(self, world, cloud_factory):
        self.world, self._cloud_factory, self._n = world, cloud_factory, 0

    @cached_property
    def cloud(self):
        return self._cloud_factory()  # the sandbox, started only by the calls that need it

    def _name(self, stem):
        self._n += 1
        return f"{stem}-{self._n}"

    def team(self, side) -> Team:
        return getattr(self.world, side)

    @cached_property
    def alpha_account(self):
        return sandbox_account(self.cloud, self.world.alpha, "alpha", incoming=False)

    @cached_property
    def beta_account(self):
        return factories.make_cloud_account(self.world.beta, label="beta-prod")

    def account(self, side):
        return self.alpha_account if side == "alpha" else self.beta_account

    def image_id(self):
        return image_id(self.cloud, "alpha", "alpha-web-2025.01")

    def share(self, side, state="requested") -> Share:
        if side == "beta":
            share = Share.objects.create(
                team=self.world.beta, source_account=self.beta_account, source_image_id="ami-00000001",
                source_image_name="web", source_image_relation="owned", copy_name=self._name("beta"), reason="t",
                licence_confirmed_at=timezone.now(), requested_by=self.world.outsider, approval_required=True,
                approval_deadline=timezone.now() + timedelta(days=1), digest="0" * 64)
            Recipient.objects.create(share=share, kind=Recipient.Kind.EXTERNAL, external_account_id="123456789012",
                                     external_region="eu-west-2")
            return share
        share = share_requests.share_request(
            access=access(self.world.member, self.world.alpha), source_account=self.alpha_account,
            image_id=self.image_id(), accounts=[], externals=[ExternalRecipient("123456789012", "us-west-1")],
            copy_name=self._name("api-copy"), description="", reason="tests", licence_confirmed=True)
        if state == "expired":  # approved and exported once, then past its manifest's deadline
            share_requests.share_approve(access=access(self.world.approver, self.world.alpha), share=share,
                                         digest=share.digest)
            Share.objects.filter(pk=share.pk).update(state=Share.State.EXPIRED)
            share.refresh_from_db()
        return share

    def link(self):
        """A pre-signed manifest link the sandbox's OOS would serve (signed locally, as OUTSCALE's are)."""
        delta = self.cloud.account("delta")
        creds = outscale.Credentials(access_key=delta["access_key"], secret_key=delta["secret_key"],
                                     region=delta["region"])
        return outscale.presign_manifest(creds=creds, bucket=delta["bucket"], key="export/ami-1/manifest.json",
                                         not_after=timezone.now() + timedelta(days=2)).url

    def incoming(self, side, state="offered") -> Recipient:
        """A copy offered to the team (or one that failed). Alpha's comes from a real pasted-link import
        (a sealed, unexpired link, as the services leave it), put back to the state asked for."""
        if side == "beta":
            return Recipient.objects.create(kind=Recipient.Kind.LINK, team=self.world.beta,
                                            target_account=self.beta_account, state=state, image_name="pasted")
        recipient = external_links.link_import_create(
            access=access(self.world.member, self.world.alpha), account=self.alpha_account, url=self.link(),
            image_name=self._name("pasted"))
        # Offered: as if nobody had answered yet (no attempt); failed: its one attempt ended.
        Recipient.objects.filter(pk=recipient.pk).update(state=state, decided_by=None, decided_at=None,
                                                         attempt=0 if state == "offered" else 1)
        recipient.refresh_from_db()
        return recipient

    def family(self, side) -> Family:
        """A family the team publishes, from an account of its own (plain rows: its latest answer
        reads no cloud)."""
        team = self.team(side)
        account = factories.make_cloud_account(team, label=self._name("golden-source"))
        user = self.world.admin if side == "alpha" else self.world.outsider
        return Family.objects.create(team=team, source_account=account, name=self._name("golden"),
                                     match=Family.Match.NAME, name_pattern="golden-*", created_by=user)

    def event(self, side) -> AuditEvent:
        team = self.team(side)
        actor = self.world.member if side == "alpha" else self.world.outsider
        return record(action="share.requested", actor=actor, team=team)


def _share_body(t, side):
    return {"source_account": str(t.account(side).public_id), "image_id": t.image_id(), "recipients": [],
            "externals": [{"account_id": "123456789012", "region": "us-west-1", "oos_user_id": ""}],
            "copy_name": t._name("api-new"), "description": "", "reason": "pipeline", "licence_confirmed": True,
            "launch_permission_only": False}


def _decision(t, side):
    share = t.share(side)
    return [share.public_id], {"digest": share.digest, "comment": "ok", "otp": ""}


# shape -> method -> (targets, side) -> (path ids, JSON body). One per route and method of the matrix.
REQUESTS = {
    "/api/v1/accounts/": {"GET": lambda t, side: ([], None)},
    "/api/v1/accounts/{}/": {"GET": lambda t, side: ([t.account(side).public_id], None)},
    "/api/v1/accounts/{}/images/": {"GET": lambda t, side: ([t.account(side).public_id], None)},
    "/api/v1/shares/": {"GET": lambda t, side: ([], None), "POST": lambda t, side: ([], _share_body(t, side))},
    "/api/v1/shares/{}/": {"GET": lambda t, side: ([t.share(side).public_id], None)},
    "/api/v1/shares/{}/approve/": {"POST": _decision},
    "/api/v1/shares/{}/reject/": {"POST": _decision},
    "/api/v1/shares/{}/cancel/": {"POST": lambda t, side: ([t.share(side).public_id], {})},
    "/api/v1/shares/{}/reexport/": {"POST": lambda t, side: ([t.share(side, "expired").public_id], {})},
    "/api/v1/incoming/": {"GET": lambda t, side: ([], None)},
    "/api/v1/incoming/{}/": {"GET": lambda t, side: ([t.incoming(side).public_id], None)},
    "/api/v1/incoming/{}/accept/": {"POST": lambda t, side: ([t.incoming(side).public_id], {})},
    "/api/v1/incoming/{}/decline/": {"POST": lambda t, side: ([t.incoming(side).public_id], {"reason": "no"})},
    "/api/v1/incoming/{}/retry/": {"POST": lambda t, side: ([t.incoming(side, "failed").public_id], {})},
    "/api/v1/link-imports/": {"POST": lambda t, side: ([], {
        "account": str(t.account(side).public_id), "url": t.link(), "image_name": t._name("api-link"),
        "description": ""})},
    "/api/v1/families/{}/latest/": {"GET": lambda t, side: ([t.family(side).public_id], None)},
    "/api/v1/audit/events/": {"GET": lambda t, side: ([], None)},
    "/api/v1/audit/events/{}/": {"GET": lambda t, side: ([t.event(side).public_id], None)},
    "/api/v1/audit/integrity/": {"GET": lambda t, side: ([], None)},
}


def request_for(targets: Targets, path: str, method: str, *, side: str = "alpha") -> tuple[str, dict | None]:
    ids, body = REQUESTS[shape(path)][method](targets, side)
    url = path
    for value in ids:
        url = re.sub(r"\{\w+\}", str(value), url, count=1)
    return url, body
