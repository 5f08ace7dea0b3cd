"""Hypothesis-driven input to every form and service that takes what people type.

Whatever arrives: never a server error (status < 500, or only ValidationError from a service), and
never a partial write: a refusal leaves every row count as it was; an acceptance writes the whole
set of rows and exactly one audit event.
"""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import CloudAccount, Membership, Team, User
from audit.models import AuditEvent
from outscale.regions import REGIONS
from tests import factories
from tests.transfer_world import access, image_id, make_transfer_world
from transfers.forms import DecisionForm, DeclineForm, LinkImportForm, ShareRequestForm
from transfers.link_checks import validate_manifest_url
from transfers.models import Recipient, Share
from transfers.services import external_links
from transfers.services import requests as share_requests
from transfers.services.requests import ExternalRecipient

FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
# Anything a browser can send: no lone surrogates (they cannot be encoded), but NUL, controls,
# right-to-left marks, emoji, HTML and SQL fragments are all in.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
NASTY = st.sampled_from(["", " ", "\x00", "<script>alert(1)</script>", "' OR 1=1 --", "\u202e", "a" * 5000,
                         "../../etc/passwd", "%00", "{{ settings.SECRET_KEY }}", "\r\nSet-Cookie: x=1"])
ANY_TEXT = st.one_of(TEXT, NASTY)
FUZZ_SLOW = settings(FUZZ, max_examples=12)  # accepted keys cost a (refused) validation call
MODELS = (User, Team, Membership, CloudAccount, Share, Recipient, AuditEvent)


def _counts() -> dict[str, int]:
    # `credential.used` records a read of stored keys (e.g. listing live images), not a write.
    counts = {model.__name__: model.objects.count() for model in MODELS}
    counts["AuditEvent"] = AuditEvent.objects.exclude(action="credential.used").count()
    return counts


def _changed(before: dict[str, int]) -> dict[str, int]:
    after = _counts()
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def _post(client, url, data):
    response = client.post(url, data)
    assert response.status_code < 500, (url, data)
    return response


@pytest.fixture
def admin_client(world):
    client = Client()
    client.force_login(world.admin)
    return client


@given(username=ANY_TEXT, password=ANY_TEXT)
@FUZZ
def test_login(username, password, world):
    before = _counts()
    response = Client().post(reverse("login"), {"username": username, "password": password})
    assert response.status_code < 500
    assert response.status_code != 302  # none of these is a real email + password pair
    assert not {k for k in _changed(before) if k != "AuditEvent"}


@given(name=ANY_TEXT)
@FUZZ
def test_team_create(name, world, admin_client):
    before = _counts()
    response = _post(admin_client, reverse("accounts:team-list"), {"name": name})
    changed = _changed(before)
    if response.status_code == 302:
        assert changed == {"Team": 1, "Membership": 1, "AuditEvent": 1}, changed
    else:
        assert changed == {}, changed


@given(email=st.one_of(st.emails(), ANY_TEXT), role=st.one_of(st.sampled_from(["member", "approver", "admin",
                                                                                  "auditor"]), ANY_TEXT))
@FUZZ
def test_member_add(email, role, world, admin_client):
    before = _counts()
    response = _post(admin_client, reverse("accounts:member-list", kwargs={"team_id": world.alpha.public_id}),
                     {"email": email, "role": role})
    changed = _changed(before)
    if response.status_code == 302 and changed:
        assert changed.get("Membership") == 1 and changed.get("AuditEvent") == 1, changed
        assert set(changed) <= {"Membership", "User", "AuditEvent"} and changed.get("User", 0) <= 1, changed
    else:
        assert changed == {}, changed


@given(role=st.one_of(st.sampled_from(["member", "approver", "admin", "auditor"]), ANY_TEXT))
@FUZZ
def test_member_role(role, world, admin_client):
    membership = Membership.objects.get(team=world.alpha, user=world.member)
    before, old_role = _counts(), Membership.objects.get(pk=membership.pk).role
    response = _post(admin_client, reverse("accounts:member-role", kwargs={
        "team_id": world.alpha.public_id, "membership_id": membership.public_id}), {"role": role})
    new_role = Membership.objects.get(pk=membership.pk).role
    changed = _changed(before)
    assert response.status_code in (302, 400, 403)
    if new_role != old_role:
        assert new_role == role and changed == {"AuditEvent": 1}, changed
    else:
        assert changed in ({}, {"AuditEvent": 1} if role == old_role else {}), changed


KEY20 = st.from_regex(r"\A[A-Z0-9]{20}\Z")
KEY40 = st.from_regex(r"\A[A-Z0-9]{40}\Z")
ACCOUNT_FIELDS = st.fixed_dictionaries({
    "label": ANY_TEXT,
    "region": st.one_of(st.sampled_from(list(REGIONS)), ANY_TEXT),
    "access_key": st.one_of(KEY20, ANY_TEXT),
    "secret_key": st.one_of(KEY40, ANY_TEXT),
    "export_bucket": st.one_of(st.from_regex(r"\A[a-z0-9][a-z0-9-]{2,20}\Z"), ANY_TEXT),
    "accepts_incoming_shares": st.sampled_from(["", "on", "garbage"]),
    # Mass assignment (TEN-05): never taken from the request.
    "team": st.just("1"), "validation_status": st.just("valid"), "account_id": st.just("999999999999"),
})


@given(data=ACCOUNT_FIELDS)
@FUZZ_SLOW
def test_cloud_account_create(data, world, admin_client, settings):
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 1  # accepted keys are checked against a closed port: fast
    before = _counts()
    response = _post(admin_client, reverse("accounts:account-create", kwargs={"team_id": world.alpha.public_id}),
                     data)
    changed = _changed(before)
    if response.status_code == 302:
        account = CloudAccount.objects.order_by("-pk").first()
        assert changed.get("CloudAccount") == 1 and account.team_id == world.alpha.pk
        assert account.validation_status != "valid" and account.account_id != "999999999999"
        assert set(changed) == {"CloudAccount", "AuditEvent"}
    else:
        assert changed == {}, changed


@given(data=ACCOUNT_FIELDS)
@FUZZ
def test_cloud_account_edit(data, world, admin_client, settings):
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 1
    account = factories.make_cloud_account(world.alpha, label=f"edit-{CloudAccount.objects.count()}")
    row = CloudAccount.objects.filter(pk=account.pk).values().get()
    before = _counts()
    response = _post(admin_client, reverse("accounts:account-edit", kwargs={
        "team_id": world.alpha.public_id, "account_id": account.public_id}), data)
    changed = _changed(before)
    if response.status_code == 302:
        assert set(changed) <= {"AuditEvent"}
        assert CloudAccount.objects.get(pk=account.pk).team_id == world.alpha.pk
    else:
        assert changed == {} and CloudAccount.objects.filter(pk=account.pk).values().get() == row


class _Image:
    def __init__(self, image_id, name):
        self.image_id, self.name = image_id, name


@given(data=st.fixed_dictionaries({
    "image_id": st.one_of(st.sampled_from(["ami-00000001", "ami-00000002"]), ANY_TEXT),
    "recipients": st.lists(st.one_of(st.just("OWN"), st.just("SOURCE"), ANY_TEXT), max_size=3),
    "copy_name": ANY_TEXT, "description": ANY_TEXT, "reason": ANY_TEXT,
    "licence_confirmed": st.sampled_from(["", "on"]),
    "external_account_1": st.one_of(st.from_regex(r"\A[0-9]{12}\Z"), ANY_TEXT),
    "external_region_1": st.one_of(st.sampled_from(list(REGIONS)), ANY_TEXT),
    "external_account_2": ANY_TEXT, "external_region_2": ANY_TEXT,
}))
@FUZZ
def test_share_request_form(data, world):
    """The form alone (the page needs a live image list): it never raises, and only offers what the
    team may pick (TEN-04: another team's account id is refused even when it is a real id)."""
    source = factories.make_cloud_account(world.alpha, label=f"src-{CloudAccount.objects.count()}")
    mine = factories.make_cloud_account(world.alpha, label=f"own-{CloudAccount.objects.count()}")
    theirs = factories.make_cloud_account(world.beta, label=f"theirs-{CloudAccount.objects.count()}")
    keys = {"OWN": str(mine.public_id), "SOURCE": str(source.public_id)}
    data = {**data, "recipients": [keys.get(r, r) for r in data["recipients"]] + [str(theirs.public_id)]}
    form = ShareRequestForm(data, images=[_Image("ami-00000001", "web"), _Image("ami-00000002", "db")],
                            source=source, recipient_accounts=[mine])
    assert not form.is_valid()  # the other team's account is always among the recipients
    assert "recipients" in form.errors


@pytest.fixture
def transfer_world(cloud, db):
    return make_transfer_world(cloud)


@given(copy_name=st.one_of(st.just("web-copy"), ANY_TEXT), description=ANY_TEXT, reason=ANY_TEXT,
       licence=st.booleans(), image=st.sampled_from(["alpha-web-2025.01", "missing"]),
       externals=st.lists(st.tuples(st.one_of(st.from_regex(r"\A[0-9]{12}\Z"), ANY_TEXT),
                                    st.one_of(st.sampled_from(list(REGIONS)), ANY_TEXT)), max_size=2),
       to_team=st.booleans())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_share_request_service(copy_name, description, reason, licence, image, externals, to_team, transfer_world,
                               cloud):
    w = transfer_world
    image = image_id(cloud, "alpha", image) if image != "missing" else "ami-ffffffff"
    before = _counts()
    try:
        share = share_requests.share_request(
            access=access(w.src_member, w.source), source_account=w.alpha, image_id=image,
            accounts=[w.delta] if to_team else [], externals=[ExternalRecipient(a, r) for a, r in externals],
            copy_name=copy_name, description=description, reason=reason, licence_confirmed=licence)
    except ValidationError:
        assert _changed(before) == {}
    else:
        changed = _changed(before)
        assert changed == {"Share": 1, "Recipient": share.recipients.count(), "AuditEvent": 1}, changed
        assert share.recipients.count() == int(to_team) + len(externals) > 0


def _pending_share(world):
    account = factories.make_cloud_account(world.alpha, label=f"acct-{CloudAccount.objects.count()}",
                                           validation_status="valid", account_id="111122223333")
    share = Share.objects.create(
        team=world.alpha, source_account=account, source_image_id="ami-00000001", source_image_name="web",
        source_image_relation="owned", copy_name="web-copy", reason="tests", licence_confirmed_at=timezone.now(),
        requested_by=world.member, approval_required=True, approval_deadline=timezone.now() + timedelta(days=1),
        export_bucket=account.export_bucket, digest="")
    recipient = Recipient.objects.create(share=share, kind=Recipient.Kind.EXTERNAL,
                                         external_account_id="123456789012", external_region="eu-west-2")
    # The digest binds the accounts as they are: the approval goes through only with this one.
    Share.objects.filter(pk=share.pk).update(digest=share_requests.request_digest(share, [recipient]))
    share.refresh_from_db()
    return share


@given(digest=st.one_of(st.just("0" * 64), ANY_TEXT), comment=ANY_TEXT, reject=st.booleans())
@FUZZ
def test_decision(digest, comment, reject, world):
    share = _pending_share(world)
    digest = share.digest if digest == "0" * 64 else digest  # "0" * 64 stands for the one the page showed
    client = Client()
    client.force_login(world.approver)
    assert DecisionForm({"digest": digest, "comment": comment}).is_valid() in (True, False)
    before = _counts()
    name = "transfers:share-reject" if reject else "transfers:share-approve"
    _post(client, reverse(name, kwargs={"team_id": world.alpha.public_id, "share_id": share.public_id}),
          {"digest": digest, "comment": comment, "state": "approved", "approved_by": str(world.member.pk)})
    share.refresh_from_db()
    changed = _changed(before)
    if share.state == Share.State.REQUESTED:
        assert changed == {}, changed
    else:
        assert digest == share.digest  # only the digest the approver saw decides
        assert changed.get("AuditEvent", 0) >= 1 and set(changed) <= {"AuditEvent", "Recipient", "Share"}


@given(reason=ANY_TEXT)
@FUZZ
def test_decline_reason(reason, world):
    account = factories.make_cloud_account(world.alpha, label=f"in-{CloudAccount.objects.count()}")
    recipient = Recipient.objects.create(kind=Recipient.Kind.LINK, team=world.alpha, target_account=account,
                                         state=Recipient.State.OFFERED, image_name="pasted")
    DeclineForm({"reason": reason}).is_valid()
    client = Client()
    client.force_login(world.member)
    before = _counts()
    response = _post(client, reverse("transfers:recipient-decline", kwargs={
        "team_id": world.alpha.public_id, "recipient_id": recipient.public_id}), {"reason": reason})
    assert response.status_code == 302
    recipient.refresh_from_db()
    changed = _changed(before)
    if recipient.state == Recipient.State.DECLINED:
        assert changed == {"AuditEvent": 1}, changed
    else:
        assert changed == {}, changed


URLS = st.one_of(
    ANY_TEXT,
    st.builds(lambda host, path, query: f"https://{host}/{path}?{query}",
              st.sampled_from(["oos.eu-west-2.outscale.com", "oos.eu-west-2.outscale.com.evil.com", "127.0.0.1",
                               "oos.eu-west-2.outscale.com@evil.com", "[::1]", "OOS.EU-WEST-2.OUTSCALE.COM."]),
              TEXT, TEXT),
)


@given(url=URLS)
@settings(max_examples=200, deadline=None)
def test_the_link_validator_only_ever_refuses_with_a_link_error(url):
    try:
        link = validate_manifest_url(url)
    except ValidationError as exc:
        assert url not in " ".join(exc.messages) or len(url) < 8
    else:
        assert link.url.startswith("https://oos.")


@given(url=URLS, image_name=ANY_TEXT, description=ANY_TEXT, account=st.sampled_from(["own", "theirs", "junk"]))
@FUZZ
def test_link_import(url, image_name, description, account, world):
    mine = factories.make_cloud_account(world.alpha, label=f"mine-{CloudAccount.objects.count()}",
                                        validation_status="valid", account_id="111122223333")
    theirs = factories.make_cloud_account(world.beta, label=f"theirs-{CloudAccount.objects.count()}",
                                          validation_status="valid", account_id="444455556666")
    chosen = {"own": str(mine.public_id), "theirs": str(theirs.public_id), "junk": "x"}[account]
    assert LinkImportForm({"url": url, "account": chosen, "image_name": image_name},
                          accounts=[mine]).is_valid() is False
    client = Client()
    client.force_login(world.member)
    before = _counts()
    response = _post(client, reverse("transfers:link-import", kwargs={"team_id": world.alpha.public_id}),
                     {"url": url, "account": chosen, "image_name": image_name, "description": description})
    assert response.status_code == 400
    assert _changed(before) == {}
    with pytest.raises(ValidationError):
        external_links.link_import_create(access=access(world.member, world.alpha), account=mine, url=url,
                                 image_name=image_name, description=description)
    assert _changed(before) == {}
