"""No secret ever reaches an API answer (issue 17's canaries; SEC-10, URL-04 for the API).

A whole workflow runs through the API against the sandbox with real RQ jobs: a share asked by a
service token, approved, exported, offered; an import that fails and is retried; a reject, a cancel,
a decline, a re-export after expiry; a pasted-link import of the revealed manifest link; a cloud
account with canary keys whose cloud calls fail; a webhook endpoint whose secret is rotated; wrong,
revoked and forged tokens; malformed and refused requests. Then every GET route of /api/v1/ (read
from the URL resolver) is walked for every object of both teams, lists paged to their end. Every
answer's status line, headers and body, errors and problem details included, is searched for
every secret, plain and encoded: the sandbox keys the portal holds, the canary keys, every
pre-signed URL the portal made and its signature, the pasted link, every token's value, the
webhook secrets and the secret path of the webhook URL. The webhook bodies signed for that endpoint
(and its delivery log's errors) are searched too.
"""

import secrets
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import CloudAccount
from api.models import ApiToken
from audit.models import AuditEvent
from distribution.models import Family
from tests import api_routes, workers
from tests.fixtures_api import make_token
from tests.test_security_canaries import (  # noqa: F401 - presigned is a fixture
    CANARY_ACCESS,
    CANARY_SECRET,
    _excerpts,
    _textarea_link,
    encodings,
    presigned,
)
from tests.transfer_world import access, image_id
from transfers import jobs
from transfers.events import KINDS
from transfers.models import Export, Recipient, Share
from webhooks import services as webhooks
from webhooks.models import WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)

# GET routes with an id: where the ids of a team's objects come from (a new route needs its line).
IDS = {
    "/api/v1/accounts/{}/": lambda team: CloudAccount.objects.filter(team=team),
    "/api/v1/accounts/{}/images/": lambda team: CloudAccount.objects.filter(team=team),
    "/api/v1/shares/{}/": lambda team: Share.objects.filter(team=team),
    "/api/v1/incoming/{}/": lambda team: Recipient.objects.filter(team=team),
    "/api/v1/audit/events/{}/": lambda team: AuditEvent.objects.filter(team_id=team.pk),
    "/api/v1/families/{}/latest/": lambda team: Family.objects.filter(team=team),
}


class Answers:
    """Every API answer of the test, as text: status, headers and body."""

    def __init__(self):
        self.seen: dict[str, str] = {}
        self.posted: set[str] = set()

    def keep(self, label, response):
        self.seen[f"{label} #{len(self.seen)}"] = (f"{response.status_code}\n{response.headers!r}\n"
                                                   f"{response.content.decode(errors='replace')}")
        return response


def _tokens(w):
    made = {
        "source service": make_token(w.src_admin, w.source, kind="service", role="member", name="ci"),
        "source approver": make_token(w.src_approver, w.source),
        "source admin": make_token(w.src_admin, w.source),
        "dest member": make_token(w.dst_member, w.dest),
        "dest service": make_token(w.dst_admin, w.dest, kind="service", role="member", name="ci"),
        "dest admin": make_token(w.dst_admin, w.dest),
        "dest auditor": make_token(w.dst_admin, w.dest, role="auditor", name="audit"),
    }
    from tests.fixtures_api import ApiClient

    return {name: ApiClient(raw, token) for name, (token, raw) in made.items()}


def test_no_secret_reaches_any_api_answer(flow, cloud, presigned, settings, monkeypatch):  # noqa: F811
    w, answers = flow, Answers()
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    settings.OMIPORTAL_WEBHOOK_RETRY_SECONDS = [60]  # nothing listens there: one retry, then failed
    api = _tokens(w)

    def call(who, method, path, body=None, key="new", label=None):
        client = api[who]
        response = client.get(path, body) if method == "GET" else client.post(path, body, key=key)
        if method == "POST":
            answers.posted.add(api_routes.shape(_route_of(path)))
        return answers.keep(label or f"{who} {method} {path}", response)

    def share_body(name, accounts, externals=()):
        return {"source_account": str(w.alpha.public_id), "image_id": image_id(cloud, "alpha", "alpha-web-2025.01"),
                "recipients": [str(a.public_id) for a in accounts], "copy_name": name, "reason": "canary",
                "externals": [{"account_id": a, "region": r, "oos_user_id": ""} for a, r in externals],
                "licence_confirmed": True}

    # 1. An account with canary keys, through the page's form (the cloud refuses them); then a share
    #    and an image list that make the cloud call with them and fail.
    admin_page = Client()
    admin_page.force_login(w.src_admin)
    admin_page.post(reverse("accounts:account-create", kwargs={"team_id": w.source.public_id}), {
        "label": "canary", "region": "eu-west-2", "access_key": CANARY_ACCESS, "secret_key": CANARY_SECRET,
        "export_bucket": "canary-exports"})
    canary = CloudAccount.objects.get(label="canary")
    CloudAccount.objects.filter(pk=canary.pk).update(validation_status="valid", account_id="999900001111")
    failed = call("source service", "POST", "/api/v1/shares/",
                  {**share_body("canary-copy", [w.delta]), "source_account": str(canary.public_id)})
    assert failed.status_code >= 400
    call("source service", "GET", f"/api/v1/accounts/{canary.public_id}/images/")

    # 2. A webhook endpoint with a secret path, its secret shown once, then rotated.
    path_secret = secrets.token_urlsafe(24)
    endpoint, webhook_secret = webhooks.endpoint_create(
        access=access(w.src_admin, w.source), url=f"http://127.0.0.1:9/hooks/{path_secret}", description="ci",
        events=list(KINDS))
    rotated_secret = webhooks.endpoint_rotate_secret(access=access(w.src_admin, w.source), endpoint=endpoint)

    # 3. A share by the service token to a team account and an external one, approved, exported.
    main = share_body("canary-main", [w.delta, w.gamma], externals=[("444455556666", "us-east-2")])
    asked = call("source service", "POST", "/api/v1/shares/", main, key="canary-main")
    assert asked.status_code == 201, asked.content
    share = Share.objects.get(public_id=asked.json()["id"])
    replayed = call("source service", "POST", "/api/v1/shares/", main, key="canary-main")  # a stored answer
    assert replayed["Idempotent-Replayed"] == "true"
    call("source approver", "POST", f"/api/v1/shares/{share.public_id}/approve/", {"digest": share.digest})
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)

    # 4. The recipient team: a failed import retried, a decline; a reject and a cancel at the source.
    cloud.faults.fail_import("canary-main", comment="disk image is corrupt")
    delta_in = Recipient.objects.get(share=share, target_account=w.delta)
    call("dest member", "POST", f"/api/v1/incoming/{delta_in.public_id}/accept/")
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=delta_in.pk).state == "failed")
    call("dest service", "POST", f"/api/v1/incoming/{delta_in.public_id}/retry/")
    gamma_in = Recipient.objects.get(share=share, target_account=w.gamma)
    call("dest member", "POST", f"/api/v1/incoming/{gamma_in.public_id}/decline/", {"reason": "not needed"})
    for name, decision in (("canary-reject", "reject"), ("canary-cancel", "cancel")):
        other = call("source service", "POST", "/api/v1/shares/", share_body(name, [w.delta])).json()
        who, body = ("source approver", {"digest": other["digest"]}) if decision == "reject" else ("source service", {})
        call(who, "POST", f"/api/v1/shares/{other['id']}/{decision}/", body)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=delta_in.pk).state == "completed")

    # 5. The external recipient's link, revealed on the page, pasted into the API; a tampered copy of it.
    member_page = Client()
    member_page.force_login(w.src_member)
    external = Recipient.objects.get(share=share, kind=Recipient.Kind.EXTERNAL)
    revealed = _textarea_link(member_page.post(reverse("transfers:share-reveal-link", kwargs={
        "team_id": w.source.public_id, "share_id": share.public_id, "recipient_id": external.public_id,
    })).content.decode())
    imported = call("dest member", "POST", "/api/v1/link-imports/", {
        "account": str(w.delta.public_id), "url": revealed, "image_name": "canary-link"})
    assert imported.status_code == 201, imported.content
    for bad in (revealed.replace("http://", "https://"), revealed + "&x=1", revealed.replace("X-Amz-", "x-amz-")):
        call("dest member", "POST", "/api/v1/link-imports/",
             {"account": str(w.delta.public_id), "url": bad, "image_name": "canary-bad"})
    call("dest member", "POST", "/api/v1/link-imports/",  # another team's account
         {"account": str(w.alpha.public_id), "url": revealed, "image_name": "canary-theirs"})
    workers.run_jobs(until=lambda: Recipient.objects.filter(image_name="canary-link", state="completed").exists())

    # 6. A share that expires before its import, exported again (a new export, new links).
    stale = call("source service", "POST", "/api/v1/shares/", share_body("canary-stale", [w.delta])).json()
    call("source approver", "POST", f"/api/v1/shares/{stale['id']}/approve/", {"digest": stale["digest"]})
    workers.run_jobs(until=lambda: Share.objects.get(public_id=stale["id"]).state == Share.State.READY)
    Export.objects.filter(shares__public_id=stale["id"]).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    jobs.reconcile_job()
    again = call("source service", "POST", f"/api/v1/shares/{stale['id']}/reexport/")
    assert again.status_code == 200, again.content
    workers.run_jobs(until=lambda: Share.objects.get(public_id=stale["id"]).state == Share.State.READY)

    # 7. Tokens that do not work: revoked, forged, a page session's cookie instead of a token.
    ApiToken.objects.filter(pk=api["dest admin"].token.pk).update(revoked_at=timezone.now())
    call("dest admin", "GET", "/api/v1/shares/", label="revoked token")
    forged = api["source admin"].raw[:-6] + "AAAAAA"
    answers.keep("forged", Client().get("/api/v1/shares/", headers={"Authorization": f"Bearer {forged}"}))
    answers.keep("session", admin_page.get("/api/v1/shares/"))

    # 8. Every GET route, for both teams: lists to their last page, every object's detail.
    for who, team in (("source admin", w.source), ("source service", w.source), ("dest member", w.dest),
                      ("dest auditor", w.dest)):
        for path, route in api_routes.api_routes().items():
            if "GET" not in route.methods or path in api_routes.MATRIX["public"]:
                continue
            if not route.params:
                url = path
                for _ in range(50):
                    page = call(who, "GET", url, {"page_size": 100} if "?" not in url else None)
                    url = (page.json() or {}).get("next") if page.status_code == 200 else None
                    if not url:
                        break
                continue
            assert api_routes.shape(path) in IDS, f"tests/test_api_canaries.py IDS: add {path}"
            for obj in IDS[api_routes.shape(path)](team):
                call(who, "GET", path.replace("{" + route.params[0] + "}", str(obj.public_id)))

    # The webhook bodies the portal signed for that endpoint, and what its delivery log keeps.
    for delivery in WebhookDelivery.objects.all():
        answers.seen[f"webhook body #{delivery.pk}"] = f"{delivery.payload}\n{delivery.last_error}"
    for attempt in WebhookAttempt.objects.all():
        answers.seen[f"webhook attempt #{attempt.pk}"] = attempt.error
    assert WebhookDelivery.objects.filter(event_type="share.approved").exists()

    posts = {api_routes.shape(p) for p, r in api_routes.api_routes().items() if "POST" in r.methods}
    assert posts <= answers.posted, f"the walk never posted to {sorted(posts - answers.posted)}: add them"
    _assert_nothing_leaked(answers, cloud, presigned, api, revealed,
                           {"webhook secret": webhook_secret, "rotated webhook secret": rotated_secret,
                            "webhook URL path": path_secret})


def _route_of(url: str) -> str:
    """The route pattern a concrete URL matched (its ids back to {name})."""
    from django.urls import resolve

    match = resolve(url.split("?")[0])
    path = url.split("?")[0]
    for name, value in match.kwargs.items():
        path = path.replace(str(value), "{" + name + "}")
    return path


def _assert_nothing_leaked(answers, cloud, presigned, api, revealed, others):  # noqa: F811
    needles: dict[str, set[str]] = {}
    for name in ("alpha", "delta", "gamma"):
        entry = cloud.account(name)
        needles[f"{name} access key"] = encodings(entry["access_key"])
        needles[f"{name} secret key"] = encodings(entry["secret_key"])
    needles["canary access key"] = encodings(CANARY_ACCESS)
    needles["canary secret key"] = encodings(CANARY_SECRET)
    for n, url in enumerate(dict.fromkeys([*presigned, revealed])):
        needles[f"pre-signed URL {n}"] = encodings(url)
        needles[f"X-Amz-Signature {n}"] = encodings(url.split("X-Amz-Signature=")[1].split("&")[0])
    for name, client in api.items():
        needles[f"token {name}"] = encodings(client.raw)
        needles[f"token {name} secret part"] = encodings(client.raw.rsplit("_", 1)[1])
    for name, value in others.items():
        needles[name] = encodings(value)
    assert len(presigned) >= 2 and len(answers.seen) > 60, (len(presigned), len(answers.seen))
    hits = [(sink, needle) for sink, text in answers.seen.items()
            for needle, forms in needles.items() if any(form in text for form in forms)]
    assert not hits, f"secrets in API answers: {hits[:10]}\n" + "\n".join(_excerpts(answers.seen, needles, hits))
