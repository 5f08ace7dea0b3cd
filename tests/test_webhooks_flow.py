"""Webhooks of a whole copy: the sandbox over HTTP, real RQ jobs, real commits, and a real receiver per
team that checks every signature. The order of events per share, what each team is told, links about
to expire, and no secret or link in any body."""

import base64
from datetime import timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.utils import timezone

from audit.verify import verify_chain
from tests import workers
from tests.transfer_world import access, approve, request_share
from tests.webhook_receiver import Receiver
from transfers import events
from transfers.events import KINDS
from transfers.models import Export, Recipient, Share
from transfers.services import external_links, import_offers, reconcile
from transfers.services.requests import ExternalRecipient
from webhooks import services
from webhooks import sweeps as webhook_sweeps
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receivers(flow, settings):
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    settings.OMIPORTAL_WEBHOOK_RETRY_SECONDS = [0.3, 0.6]
    source, dest = Receiver().start(), Receiver().start()
    for server, user, team in ((source, flow.src_admin, flow.source), (dest, flow.dst_admin, flow.dest)):
        _, server.secret = services.endpoint_create(access=access(user, team), url=server.url(), description="ci",
                                                    events=list(KINDS))
    yield source, dest
    source.stop()
    dest.stop()


def _state(share):
    return Share.objects.get(pk=share.pk).state


def _all_sent():
    return not WebhookDelivery.objects.exclude(state="delivered").exists()


def test_each_team_hears_of_its_share_in_order_with_the_new_image_id(flow, cloud, receivers):
    source, dest = receivers
    share = request_share(flow, cloud, accounts=[flow.delta])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    for recipient in Recipient.objects.filter(share=share):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED and _all_sent())

    assert [m.type for m in source.messages] == ["share.requested", "share.approved", "share.ready",
                                                 "import.completed"]
    assert [m.type for m in dest.messages] == ["share.ready", "import.completed"]
    for message in source.messages + dest.messages:
        assert message.verified, message.error
    assert len({m.webhook_id for m in source.messages + dest.messages}) == 6
    recipient = Recipient.objects.get(share=share)
    completed = source.of_type("import.completed")[0].json["data"]
    assert completed["recipient"]["image_id"] == recipient.image_id and recipient.image_id.startswith("ami-")
    assert completed["recipient"]["state"] == "completed" and completed["share"]["id"] == str(share.public_id)
    ready = source.of_type("share.ready")[0].json["data"]["share"]
    assert ready["state"] == "ready" and ready["team"]["name"] == flow.source.name
    assert [r["state"] for r in ready["recipients"]] == ["offered"]
    assert ready["manifest_valid_until"]
    approved = source.of_type("share.approved")[0].json
    assert approved["data"]["share"]["decided_at"] and approved["timestamp"].endswith("Z")
    assert verify_chain().ok


def test_a_team_sees_only_its_own_recipients(flow, cloud, receivers):
    source, dest = receivers
    share = request_share(flow, cloud, accounts=[flow.delta], externals=[ExternalRecipient("444455556666",
                                                                                          "us-east-2")])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY and _all_sent())
    mine = source.of_type("share.ready")[0].json["data"]["share"]["recipients"]
    theirs = dest.of_type("share.ready")[0].json["data"]["share"]["recipients"]
    assert sorted(r["kind"] for r in mine) == ["external", "team"]
    assert [(r["kind"], r["team"]["name"]) for r in theirs] == [("team", flow.dest.name)]
    assert not dest.of_type("share.requested") and not dest.of_type("share.approved")


def test_a_link_about_to_expire_is_announced_once_then_its_expiry(flow, cloud, receivers, settings):
    source, dest = receivers
    share = request_share(flow, cloud, accounts=[flow.delta])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY and _all_sent())
    export = Export.objects.get(shares=share)
    Export.objects.filter(pk=export.pk).update(manifest_deadline=timezone.now() + timedelta(hours=30))
    # The reconciler runs the webhooks' sweep among the registered ones (distribution's too: count
    # only the links it announces).
    assert webhook_sweeps.sweep in events._sweeps
    reconcile.reconcile()
    assert webhook_sweeps.links_expiring(now=timezone.now()) == 0  # more than 24 h left
    Export.objects.filter(pk=export.pk).update(manifest_deadline=timezone.now() + timedelta(hours=20))
    assert webhook_sweeps.links_expiring(now=timezone.now()) == 1
    assert webhook_sweeps.links_expiring(now=timezone.now()) == 0  # once per share and export
    workers.run_jobs(until=_all_sent)
    for server in (source, dest):
        [expiring] = server.of_type("link.expiring")
        assert expiring.json["data"]["share"]["manifest_valid_until"].startswith(
            (export.manifest_deadline.date().isoformat(), (timezone.now() + timedelta(hours=20)).date().isoformat()))
    Export.objects.filter(pk=export.pk).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    reconcile.reconcile()
    workers.run_jobs(until=_all_sent)
    for server in (source, dest):
        [expired] = server.of_type("share.expired")
        assert expired.json["data"]["share"]["state"] == "expired"
        assert [r["state"] for r in expired.json["data"]["share"]["recipients"]] == ["expired"]


def _encodings(value: str) -> set[str]:
    raw = value.encode()
    forms = {value, quote(value, safe=""), raw.hex(), base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode(), value.replace("/", "\\/")}
    return {f for f in forms if len(f) >= 12}


def test_no_body_holds_a_key_a_link_or_a_secret(flow, cloud, receivers):
    """The secret canaries (tests/test_security_canaries.py) searched in every webhook body and header:
    the sandbox keys the portal used, the manifest link it revealed and the one pasted from it, its
    signature, and the endpoints' own signing secrets."""
    source, dest = receivers
    cloud.faults.fail_import("web-copy", comment="disk image is corrupt")
    share = request_share(flow, cloud, accounts=[flow.delta], externals=[ExternalRecipient("444455556666",
                                                                                          "us-east-2")])
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    team_recipient = Recipient.objects.get(share=share, kind=Recipient.Kind.TEAM)
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=team_recipient)
    external = Recipient.objects.get(share=share, kind=Recipient.Kind.EXTERNAL)
    link = external_links.link_reveal(access=access(flow.src_member, flow.source), share=share, recipient=external)
    pasted = external_links.link_import_create(access=access(flow.dst_member, flow.dest), account=flow.gamma,
                                               url=link.url, image_name="from-a-link", description="")
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=pasted.pk).state == "completed"
                     and Recipient.objects.get(pk=team_recipient.pk).state == "failed" and _all_sent())

    assert source.of_type("import.failed") and dest.of_type("import.failed")
    failed = dest.of_type("import.failed")[0].json["data"]["recipient"]
    assert failed["state"] == "failed" and "corrupt" in failed["state_message"]
    from_link = [m.json["data"] for m in dest.of_type("import.completed")]
    assert [(d["share"], d["recipient"]["kind"]) for d in from_link] == [(None, "link")]
    assert not [m for m in source.of_type("import.completed")]  # the pasted link is the recipient's own

    needles: dict[str, set[str]] = {}
    for name in ("alpha", "delta", "gamma"):
        entry = cloud.account(name)
        needles[f"{name} access key"] = _encodings(entry["access_key"])
        needles[f"{name} secret key"] = _encodings(entry["secret_key"])
    needles["revealed link"] = _encodings(link.url)
    needles["its signature"] = _encodings(parse_qs(urlsplit(link.url).query)["X-Amz-Signature"][0])
    needles["its path"] = _encodings(urlsplit(link.url).path)
    needles["source endpoint secret"] = _encodings(source.secret) | _encodings(source.secret.removeprefix("whsec_"))
    needles["dest endpoint secret"] = _encodings(dest.secret) | _encodings(dest.secret.removeprefix("whsec_"))
    sent = {f"{m.type} {m.webhook_id}": m.body.decode() + repr(m.headers) for m in source.messages + dest.messages}
    stored = {f"stored {d.msg_id}": d.payload for d in WebhookDelivery.objects.all()}
    assert len(sent) == 7  # source: requested, approved, ready, import.failed; dest: ready, failed, completed
    hits = [(where, needle) for where, text in {**sent, **stored}.items()
            for needle, forms in needles.items() if any(form in text for form in forms)]
    assert not hits, hits
