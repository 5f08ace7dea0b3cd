"""Secrets canaries (SEC-10, SEC-11, SEC-12, URL-03, URL-04, AUD-15).

One whole workflow runs against the sandbox with real RQ jobs: a cloud account with canary keys
(refused by the cloud), a share to a team account and an external account, approval, export, a
forced import failure, the reveal of the manifest link, accepting, a pasted-link import, a job that
crashes and a credential view that crashes. Every secret (the sandbox keys the portal really uses,
the canary keys) and every pre-signed URL the portal made (and its X-Amz-Signature), plain and
base64-, hex- and URL-encoded, must then be absent from every sink: logs at all levels, Redis,
rendered pages (team pages, admin, django-rq), Django error reports, the database (audit table
included), job payloads and results, and emails.
"""

import base64
import html
import logging
import re
import secrets
import socket
import string
import sys
import uuid
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import django_rq
import pytest
from django.apps import apps
from django.core.signals import got_request_exception
from django.test import Client
from django.urls import reverse
from django.views.debug import ExceptionReporter
from rq.job import Job
from rq.serializers import JSONSerializer

import outscale
from accounts.models import CloudAccount
from outscale import oapi
from tests import factories, workers
from tests.transfer_world import request_share
from transfers import notifications
from transfers.models import Recipient, Share
from transfers.services import import_starts
from transfers.services.requests import ExternalRecipient

pytestmark = pytest.mark.django_db(transaction=True)

_ALNUM = string.ascii_uppercase + string.digits
# Unique per run, and shaped like real OUTSCALE keys so that the forms accept them.
CANARY_ACCESS = "CANARYAK" + "".join(secrets.choice(_ALNUM) for _ in range(12))
CANARY_SECRET = "CANARYSK" + "".join(secrets.choice(_ALNUM) for _ in range(32))
LOGGERS = ("", "botocore", "urllib3", "osc_sdk_python", "rq", "rq.worker", "django", "django.request")
# The sandbox plays OUTSCALE in this process: what it logs is the cloud's business, not the portal's.
FOREIGN_LOGGERS = ("sandbox",)


def encodings(value: str) -> set[str]:
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value), raw.hex(), raw.hex().upper(),
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
             base64.b64encode(raw).decode().rstrip("="), html.escape(value)}
    return {f for f in forms if len(f) >= 12}


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.records: list[str] = []

    def emit(self, record):
        if record.name.startswith(FOREIGN_LOGGERS):
            return
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record is still searched, raw
            text = repr(record.msg)
        extras = {k: v for k, v in vars(record).items() if k not in ("exc_info", "msg", "args")}
        self.records.append(f"{text}\n{record.args!r}\n{extras!r}")


@pytest.fixture
def logs():
    """Everything any logger emits, at every level (the operator's OMIPORTAL_LOG_LEVEL=DEBUG);
    loggers that settings.LOGGING pins (botocore, urllib3) keep their configured level."""
    handler = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def presigned(monkeypatch):
    """Every URL the portal pre-signs during the test (manifest links for imports and reveals)."""
    made: list[str] = []
    real = outscale.presign_manifest

    def recording(**kwargs):
        link = real(**kwargs)
        made.append(link.url)
        return link

    monkeypatch.setattr(outscale, "presign_manifest", recording)
    return made


@pytest.fixture
def error_reports():
    """Django's error report (text and HTML, as mailed to ADMINS) for every crash in a request."""
    reports: list[str] = []

    def build(sender, request=None, **kwargs):
        reporter = ExceptionReporter(request, *sys.exc_info())
        reports.append(reporter.get_traceback_text())
        reports.append(reporter.get_traceback_html())

    got_request_exception.connect(build, dispatch_uid="security-canaries")
    yield reports
    got_request_exception.disconnect(dispatch_uid="security-canaries")


class _ForeignConnect(AssertionError):
    pass


@pytest.fixture
def connections(monkeypatch):
    """Record every outgoing connection; refuse any that is not loopback or a Unix socket (URL-03)."""
    seen: list = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        seen.append(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise _ForeignConnect(f"the portal tried to connect to {address!r}")
        return real_connect(sock, address)

    def start():
        monkeypatch.setattr(socket.socket, "connect", guarded)

    def stop():
        monkeypatch.setattr(socket.socket, "connect", real_connect)

    return start, stop, seen


def _team(name, team):
    return reverse(name, kwargs={"team_id": team.public_id})


def _share_url(name, share, **extra):
    return reverse(name, kwargs={"team_id": share.team.public_id, "share_id": share.public_id, **extra})


def _failure_of(job) -> str | None:
    """The traceback rq kept for a failed job (its latest result's; ``job.exc_info`` is deprecated)."""
    result = job.latest_result()
    return result.exc_string if result is not None else None


def _redis_dump() -> list[str]:
    conn = django_rq.get_connection("default")
    out = []
    for key in conn.scan_iter(count=500):
        kind = conn.type(key).decode()
        if kind == "string":
            value = conn.get(key)
        elif kind == "hash":
            value = conn.hgetall(key)
        elif kind == "list":
            value = conn.lrange(key, 0, -1)
        elif kind == "set":
            value = conn.smembers(key)
        elif kind == "zset":
            value = conn.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = conn.xrange(key)
        else:
            value = kind
        out.append(f"{key!r} {_decode(value)}")
    return out


def _decode(value) -> str:
    """Redis values as text; zlib-compressed exception info (rq) is inflated first."""
    import zlib

    def one(v):
        if isinstance(v, bytes):
            try:
                return zlib.decompress(v).decode("utf-8", "replace") + " " + v.decode("latin-1")
            except zlib.error:
                return v.decode("utf-8", "replace")
        if isinstance(v, (list, tuple, set)):
            return " ".join(one(x) for x in v)
        if isinstance(v, dict):
            return " ".join(f"{one(k)}={one(x)}" for k, x in v.items())
        return str(v)

    return one(value)


def _all_jobs() -> list[Job]:
    conn = django_rq.get_connection("default")
    ids = {key.decode().split(":", 2)[2] for key in conn.scan_iter("rq:job:*") if key.count(b":") == 2}
    return [job for job in Job.fetch_many(sorted(ids), connection=conn, serializer=JSONSerializer) if job]


def _is_plain_id(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value)) == value
        except ValueError:
            return False
    return False


def _database_rows() -> list[str]:
    rows = []
    for label in ("accounts", "transfers", "audit"):
        for model in apps.get_app_config(label).get_models():
            rows.extend(f"{model.__name__} {row!r}" for row in model.objects.values())
    return rows


def _verified_client(user) -> Client:
    """A signed-in client whose session passed the TOTP step (the admin and django-rq need it)."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=user, name="ops", confirmed=True)
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


class _CrashingGateway:
    """The SDK's gateway, except that CreateImage blows up (an SDK bug, a broken response...)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name == "CreateImage":
            def crash(**kwargs):
                raise RuntimeError("simulated crash in CreateImage")
            return crash
        return getattr(self._real, name)


def _job_crash_report(recipient_id: str) -> str:
    """Django's error report for the import job crashing; this frame holds nothing but the id."""
    try:
        # The step itself: the job around it counts the error and raises one that names only its class.
        import_starts.import_start(recipient_id=recipient_id)
    except RuntimeError:
        reporter = ExceptionReporter(None, *sys.exc_info())
        return reporter.get_traceback_text() + reporter.get_traceback_html()
    raise AssertionError("the job was expected to crash")


def _excerpts(sinks, needles, hits, width=300) -> list[str]:
    """Where each leak is (the found form itself is masked, so the failure message leaks nothing new)."""
    out = []
    for sink, needle in hits[:5]:
        text = sinks[sink]
        form = next(f for f in needles[needle] if f in text)
        at = text.index(form)
        excerpt = text[max(0, at - width):at + len(form) + 80]
        for name, forms in needles.items():
            for other in sorted(forms, key=len, reverse=True):
                excerpt = excerpt.replace(other, f"<{name}>")
        out.append(f"--- {needle} in {sink}: …{excerpt}…")
    return out


def _textarea_link(page: str) -> str:
    match = re.search(r'<textarea id="manifest-link"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, "the reveal page shows the link in its textarea"
    return html.unescape(match.group(1)).strip()


def test_no_secret_or_link_reaches_any_sink(flow, cloud, logs, presigned, error_reports, connections, mailoutbox,
                                            monkeypatch, settings):
    w = flow
    source_admin, approver, source_member, dest_member = Client(), Client(), Client(), Client()
    source_admin.force_login(w.src_admin)
    approver.force_login(w.src_approver)
    source_member.force_login(w.src_member)
    dest_member.force_login(w.dst_member)
    pages: dict[str, str] = {}

    def visit(client, url, name=None):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        pages[name or url] = response.content.decode()
        return response

    # 1. An account with canary keys, through the credential form: the sandbox refuses them.
    response = source_admin.post(_team("accounts:account-create", w.source), {
        "label": "canary", "region": "eu-west-2", "access_key": CANARY_ACCESS, "secret_key": CANARY_SECRET,
        "export_bucket": "canary-exports"})
    assert response.status_code == 302
    canary = CloudAccount.objects.get(label="canary")
    assert canary.validation_status == CloudAccount.Validation.INVALID
    pages["account-create redirect"] = str(response.headers)
    source_admin.post(reverse("accounts:account-validate", kwargs={"team_id": w.source.public_id,
                                                                  "account_id": canary.public_id}))

    # 2. A share to a team account and an external account, approved through the page.
    share = request_share(w, cloud, accounts=[w.gamma], externals=[ExternalRecipient("444455556666", "us-east-2")])
    visit(approver, _share_url("transfers:share-detail", share), "detail (pending)")
    response = approver.post(_share_url("transfers:share-approve", share), {"digest": share.digest, "comment": "ok"})
    assert response.status_code == 302
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)

    # 3. A forced import failure for the team recipient.
    cloud.faults.fail_import("web-copy", comment="disk image is corrupt")
    team_recipient = Recipient.objects.get(share=share, kind=Recipient.Kind.TEAM)
    dest_member.post(reverse("transfers:recipient-accept", kwargs={"team_id": w.dest.public_id,
                                                                   "recipient_id": team_recipient.public_id}))
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=team_recipient.pk).state == "failed")

    # 4. The link for the external recipient: shown once, never cached, no referrer (URL-04).
    external = Recipient.objects.get(share=share, kind=Recipient.Kind.EXTERNAL)
    response = source_member.post(_share_url("transfers:share-reveal-link", share,
                                             recipient_id=external.public_id))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"
    revealed = _textarea_link(response.content.decode())
    assert revealed in presigned

    # 5. A pasted-link import; the portal connects to nothing but loopback services, and never
    #    to the host the pasted link names (URL-03).
    start, stop, seen = connections
    link_page = visit(dest_member, _team("transfers:link-import", w.dest), "link-import form")
    assert "no-store" in link_page["Cache-Control"] and link_page["Referrer-Policy"] == "no-referrer"
    start()
    try:
        response = dest_member.post(_team("transfers:link-import", w.dest), {
            "url": revealed, "account": str(w.delta.public_id), "image_name": "from-a-link", "description": ""})
    finally:
        stop()
    assert response.status_code == 302, response.content.decode()[:2000]
    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "no-referrer"
    pasted_origin = urlsplit(revealed)
    api_origin = urlsplit(settings.OMIPORTAL_OUTSCALE_ENDPOINTS["us-east-2"]["api"])
    assert (pasted_origin.hostname, pasted_origin.port) != (api_origin.hostname, api_origin.port)
    assert (pasted_origin.hostname, pasted_origin.port) not in [tuple(a[:2]) for a in seen if isinstance(a, tuple)]
    pasted = Recipient.objects.get(kind=Recipient.Kind.LINK, image_name="from-a-link")
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=pasted.pk).state == "completed")

    # 6. A job that crashes inside the SDK's CreateImage (with the pre-signed URL in hand).
    real_gateway_for = oapi.gateway_for
    monkeypatch.setattr(oapi, "gateway_for", lambda creds: _CrashingGateway(real_gateway_for(creds)))
    dest_member.post(reverse("transfers:recipient-retry", kwargs={"team_id": w.dest.public_id,
                                                                  "recipient_id": team_recipient.public_id}))
    failed = django_rq.get_queue("default").failed_job_registry
    workers.run_jobs(until=lambda: failed.count >= 1)
    job_report = _job_crash_report(str(team_recipient.public_id))
    assert "simulated crash in CreateImage" in job_report
    monkeypatch.setattr(oapi, "gateway_for", real_gateway_for)

    # 7. A crash in the credential view, with canary keys in the POST (SEC-12).
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while saving keys")

    monkeypatch.setattr(CloudAccount, "full_clean", crash)
    crashing = Client(raise_request_exception=False)
    crashing.force_login(w.src_admin)
    response = crashing.post(_team("accounts:account-create", w.source), {
        "label": "canary-2", "region": "eu-west-2", "access_key": CANARY_ACCESS, "secret_key": CANARY_SECRET,
        "export_bucket": "canary-exports"})
    assert response.status_code == 500
    pages["500 page"] = response.content.decode()
    monkeypatch.undo()  # also restores presign_manifest and full_clean
    credential_report = "\n".join(error_reports)
    assert "simulated crash while saving keys" in credential_report
    assert re.search(r"secret_key.{0,80}\*{20}", credential_report, re.S), "the POST's secret_key is masked"
    assert not CloudAccount.objects.filter(label="canary-2").exists()

    # 8. Pages: both teams' pages, every account's edit page, the admin and django-rq as a superuser.
    for client, team in ((source_admin, w.source), (dest_member, w.dest)):
        for name in ("transfers:dashboard", "accounts:member-list", "accounts:account-list", "transfers:share-list",
                     "transfers:inbox"):
            visit(client, _team(name, team), f"{name} {team.name}")
    visit(source_admin, _team("transfers:approval-list", w.source))
    visit(source_admin, _share_url("transfers:share-detail", share), "detail (final)")
    visit(source_admin, _share_url("transfers:share-progress", share), "progress")
    for account in CloudAccount.objects.filter(team=w.source):
        visit(source_admin, reverse("accounts:account-edit", kwargs={"team_id": w.source.public_id,
                                                                    "account_id": account.public_id}))
    # A compliance officer too: the audit trail in the admin is theirs alone (INS-05).
    superuser = factories.make_user("root@ops.test", is_staff=True, is_superuser=True, is_compliance_officer=True)
    operator = _verified_client(superuser)
    from django.contrib import admin

    for model, _ in admin.site._registry.items():
        opts = model._meta
        if not opts.managed:
            continue  # django-rq's dashboard entry: its pages are visited below
        visit(operator, reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        for pk in model.objects.order_by("-pk").values_list("pk", flat=True)[:20]:
            visit(operator, reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk]))
    visit(operator, reverse("django_rq:home"))
    for index, _ in enumerate(settings.RQ_QUEUES):
        for name in ("django_rq:jobs", "django_rq:finished_jobs", "django_rq:failed_jobs", "django_rq:scheduled_jobs"):
            visit(operator, reverse(name, args=[index]))
    queue_index = {name: i for i, name in enumerate(settings.RQ_QUEUES)}
    all_jobs = _all_jobs()
    assert all_jobs
    for job in all_jobs:
        visit(operator, reverse("django_rq:job_detail", args=[queue_index.get(job.origin, 0), job.id]))

    # SEC-11: job payloads are ids only (and, for emails, which of the fixed kinds, and a list of ids).
    for job in all_jobs:
        args = job.args
        if job.func_name == "transfers.jobs.notify_job":
            assert job.args[0] in notifications.KINDS and isinstance(job.args[1], list) and len(job.args) == 2
            args = job.args[1]
        assert all(_is_plain_id(a) for a in args), (job.id, job.args)
        assert all(_is_plain_id(v) for v in job.kwargs.values()), (job.id, job.kwargs)
        # rq's "func(args)" or the portal's own "<kind>-<uuid>-<n>": names, ids and numbers only.
        assert re.fullmatch(r"[\w.:-]+(\((('[0-9a-f-]{36}'|\d+)(, )?)*\))?", job.description), job.description

    # 9. Search every sink.
    needles: dict[str, set[str]] = {}
    for name in ("alpha", "delta", "gamma"):
        entry = cloud.account(name)
        needles[f"{name} access key"] = encodings(entry["access_key"])
        needles[f"{name} secret key"] = encodings(entry["secret_key"])
    needles["canary access key"] = encodings(CANARY_ACCESS)
    needles["canary secret key"] = encodings(CANARY_SECRET)
    for n, url in enumerate(dict.fromkeys(presigned)):
        needles[f"pre-signed URL {n}"] = encodings(url)
        needles[f"X-Amz-Signature {n}"] = encodings(parse_qs(urlsplit(url).query)["X-Amz-Signature"][0])

    sinks: dict[str, str] = {
        "logs": "\n".join(logs.records),
        "redis": "\n".join(_redis_dump()),
        "credential view error report": credential_report,
        "job error report": job_report,
        "database": "\n".join(_database_rows()),
        "job payloads": "\n".join(f"{j.id} {j.args!r} {j.kwargs!r} {j.description} {j.return_value()!r} "
                                  f"{_failure_of(j)!r} {j.meta!r}" for j in all_jobs),
        "emails": "\n".join(f"{m.subject}\n{m.to}\n{m.body}\n{getattr(m, 'alternatives', '')}" for m in mailoutbox),
        **{f"page {name}": text for name, text in pages.items()},
    }
    assert len(logs.records) > 50 and mailoutbox and len(pages) > 30
    hits = [(sink, needle) for sink, text in sinks.items()
            for needle, forms in needles.items() if any(form in text for form in forms)]
    assert not hits, f"secrets found in sinks: {hits}\n" + "\n".join(_excerpts(sinks, needles, hits))
