"""The trail keeps every denial, and nothing secret (INS-06, INS-07, INS-09, WEB-07).

Played as an insider would: a member who tries what only an admin may do, a form posted without
its CSRF token, a password typed into the user-name box, a request that would open another team's
keys, a script that reveals links or lists images as fast as it can.
"""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Role
from audit.context import job_context
from audit.models import AuditEvent
from audit.recorder import keeping_denials, record
from tests import factories, rates
from tests.transfer_world import access
from transfers.models import Recipient, Share
from transfers.services import import_offers
from transfers.services import requests as share_requests

# --- INS-06: a denial survives the rollback of what it denied ------------------------------------


def _share(world):
    account = factories.make_cloud_account(world.alpha, label="alpha-main")
    now = timezone.now()
    share = Share.objects.create(
        team=world.alpha, source_account=account, source_image_id="ami-12345678", source_image_name="web",
        source_image_relation="owned", copy_name="web-copy", licence_confirmed_at=now, requested_by=world.approver,
        approval_required=True, approval_deadline=now + timedelta(days=7), digest="0" * 64)
    recipient = Recipient.objects.create(share=share, kind=Recipient.Kind.TEAM, team=world.alpha,
                                         target_account=account, state=Recipient.State.OFFERED)
    return share, recipient


# Every service that records its refusal inside its own transaction: (who tries, the call).
DENIED_INSIDE_A_TRANSACTION = {
    "share_cancel": ("member", lambda w, a, s, r: share_requests.share_cancel(access=a, share=s)),
    "recipient_accept": ("auditor", lambda w, a, s, r: import_offers.recipient_accept(access=a, recipient=r)),
    "recipient_retry": ("auditor", lambda w, a, s, r: import_offers.recipient_retry(access=a, recipient=r)),
    "recipient_decline": ("auditor",
                          lambda w, a, s, r: import_offers.recipient_decline(access=a, recipient=r, reason="")),
    "membership_add": ("member", lambda w, a, s, r: account_services.membership_add(
        access=a, email="puppet@alpha.test", role=Role.APPROVER)),
    "membership_change_role": ("member", lambda w, a, s, r: account_services.membership_change_role(
        access=a, membership=w.alpha.memberships.get(user=w.approver), role=Role.ADMIN)),
    "membership_remove": ("member", lambda w, a, s, r: account_services.membership_remove(
        access=a, membership=w.alpha.memberships.get(user=w.approver))),
    "cloud_account_create": ("member", lambda w, a, s, r: account_services.cloud_account_create(
        access=a, label="mine", region="eu-west-2", access_key="AKIAEXAMPLE000000002", secret_key="T" * 40,
        export_bucket="exports")),
    "cloud_account_update": ("member", lambda w, a, s, r: account_services.cloud_account_update(
        access=a, account=s.source_account, region="us-east-2")),
    "cloud_account_delete": ("member", lambda w, a, s, r: account_services.cloud_account_delete(
        access=a, account=s.source_account)),
    "team_settings_change": ("member", lambda w, a, s, r: account_services.team_settings_change(
        access=a, require_approval_for_own_accounts=False)),
}


def _denials(user):
    return AuditEvent.objects.filter(actor_id=user.pk, outcome="denied")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("service", sorted(DENIED_INSIDE_A_TRANSACTION))
def test_it_keeps_the_denial_a_service_rolled_back(world, service):
    role, call = DENIED_INSIDE_A_TRANSACTION[service]
    share, recipient = _share(world)
    user = getattr(world, role)
    with pytest.raises(PermissionDenied), job_context(job_id=f"test-{service.replace('_', '-')}"):
        call(world, access(user, world.alpha), share, recipient)
    (event,) = _denials(user)
    assert (event.action, event.details["reason"], event.team_id) == ("access.denied", "missing_role", world.alpha.pk)
    assert event.request_id == f"test-{service.replace('_', '-')}"
    share.refresh_from_db()
    assert share.state == Share.State.REQUESTED  # the denied change itself stays undone


@pytest.mark.django_db(transaction=True)
def test_it_records_a_denial_once_when_its_transaction_commits(world):
    with keeping_denials():
        with transaction.atomic():
            record(action="access.denied", outcome="denied", actor=world.member, details={"reason": "test"})
        with transaction.atomic():  # a savepoint rolled back inside a transaction that commits
            with pytest.raises(PermissionDenied), transaction.atomic():
                record(action="access.denied", outcome="denied", actor=world.member, details={"reason": "inner"})
                raise PermissionDenied
            record(action="share.cancelled", actor=world.member)
    assert sorted(_denials(world.member).values_list("details__reason", flat=True)) == ["inner", "test"]
    assert AuditEvent.objects.filter(action="share.cancelled").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_does_not_keep_other_outcomes_past_a_rollback(world):
    with keeping_denials(), pytest.raises(RuntimeError), transaction.atomic():
        record(action="share.cancelled", actor=world.member)
        raise RuntimeError
    assert not AuditEvent.objects.filter(action="share.cancelled").exists()


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_denial_rolled_back_inside_a_web_request(world, client):
    share, _ = _share(world)
    client.force_login(world.member)
    response = client.post(reverse("transfers:share-cancel", args=[world.alpha.public_id, share.public_id]))
    assert response.status_code == 403
    (event,) = _denials(world.member)
    assert event.request_id == response["X-Request-ID"]
    assert event.target_id == str(share.public_id)


# --- INS-06: a form posted without its CSRF token is a denied attempt -----------------------------


@pytest.mark.django_db
def test_it_records_a_csrf_failure_and_shows_the_403_page(world):
    from django.test import Client

    share, _ = _share(world)
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.approver)
    client.cookies["csrftoken"] = "A" * 32  # a cookie the attacker planted; the form lacks its token
    url = reverse("transfers:share-cancel", args=[world.alpha.public_id, share.public_id])
    response = client.post(url, {"csrfmiddlewaretoken": "B" * 32})
    assert response.status_code == 403
    assert b"Form refused" in response.content
    (event,) = AuditEvent.objects.filter(action="access.denied", details__reason="csrf")
    assert (event.outcome, event.actor_id, event.request_id) == ("denied", world.approver.pk, response["X-Request-ID"])
    assert event.details["path"] == url
    assert event.details["csrf_reason"].startswith("CSRF token")
    assert "A" * 32 not in str(event.details) and "B" * 32 not in str(event.details)
    share.refresh_from_db()
    assert share.state == Share.State.REQUESTED


@pytest.mark.django_db
def test_it_records_a_csrf_failure_of_someone_signed_out(db):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(reverse("login"), {"username": "x@example.com"})
    assert response.status_code == 403
    (event,) = AuditEvent.objects.filter(action="access.denied", details__reason="csrf")
    assert (event.actor_id, event.details["path"]) == (None, reverse("login"))
    assert event.details["csrf_reason"] == "CSRF cookie not set."


# --- INS-07: a password typed as a user name is stored nowhere ------------------------------------

# With an "@" and a dot, it passes the portal's email field, so it reaches authenticate() and axes.
TYPED_PASSWORD = "Tr0ub4dor&3@horse.staple"


def _tables_holding(text):
    """Every table with a row whose text form contains ``text``: the whole database, not a guess."""
    from django.db import connection

    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if connection.vendor == "postgresql":  # the row's own text form, in the database
                cursor.execute(f'SELECT 1 FROM "{table}" AS t WHERE strpos(t::text, %s) > 0 LIMIT 1', [text])  # noqa: S608
                held = cursor.fetchone() is not None
            else:  # SQLite has no row-to-text cast: read the (small) test tables whole
                cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608
                held = any(text in str(value) for row in cursor.fetchall() for value in row)
            if held:
                found.append(table)
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("login_url", ["login", "admin:login"])
def test_it_keeps_no_password_typed_as_a_user_name(world, client, settings, login_url):
    from axes.models import AccessAttempt

    settings.AXES_ENABLE_ACCESS_FAILURE_LOG = True  # its table too, when an operator turns it on
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):  # up to the lock-out, which is recorded too
        client.post(reverse(login_url), {"username": TYPED_PASSWORD, "password": "the real user name"})
    assert _tables_holding(TYPED_PASSWORD) == []
    failed = AuditEvent.objects.filter(action="auth.login_failed").first()
    assert set(failed.details) == {"name_fingerprint", "name_length"}
    assert failed.details["name_length"] == len(TYPED_PASSWORD)
    locked = AuditEvent.objects.filter(action="auth.locked_out")
    assert locked and {e.details["name_fingerprint"] for e in locked} == {failed.details["name_fingerprint"]}
    assert AccessAttempt.objects.get().username == "unknown:" + failed.details["name_fingerprint"]


@pytest.mark.django_db
def test_it_names_the_person_when_the_typed_name_is_their_email(world, client):
    client.post(reverse("login"), {"username": "Member@Alpha.test", "password": "wrong"})
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.details == {"user_id": world.member.pk, "email": "member@alpha.test"}
    assert (event.target_type, event.target_id) == ("accounts.user", str(world.member.pk))


@pytest.mark.django_db
def test_it_still_locks_out_an_unknown_name_per_address(world, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": TYPED_PASSWORD, "password": "x"}, REMOTE_ADDR="198.51.100.1")
    again = client.post(reverse("login"), {"username": TYPED_PASSWORD, "password": "x"}, REMOTE_ADDR="198.51.100.1")
    assert again.status_code == 429
    other_name = client.post(reverse("login"), {"username": TYPED_PASSWORD + "!", "password": "x"},
                             REMOTE_ADDR="198.51.100.1")
    other_address = client.post(reverse("login"), {"username": TYPED_PASSWORD, "password": "x"},
                                REMOTE_ADDR="198.51.100.2")
    assert (other_name.status_code, other_address.status_code) == (200, 200)


# --- INS-09: a request of one team never opens another team's keys --------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_share_request_opens_only_the_requesting_teams_keys(flow, cloud):
    from tests import workers
    from tests.transfer_world import approve, request_share
    from transfers import errors

    delta_id = cloud.account("delta")["account_id"]
    # A name taken in the recipient team's account: the request cannot know, and must not ask.
    share = request_share(flow, cloud, accounts=[flow.delta], copy_name="delta-api-2.3")
    assert share.state == Share.State.REQUESTED
    used = AuditEvent.objects.filter(action="credential.used")
    assert set(used.values_list("team_id", flat=True)) == {flow.source.pk}
    assert cloud.counters(delta_id) == {}

    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    assert not used.filter(team_id=flow.dest.pk).exists()  # the source team's export used its own keys only
    recipient = share.recipients.get()
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == Recipient.State.FAILED)
    recipient.refresh_from_db()
    assert recipient.state_message == errors.NAME_NOT_OURS.format(name="delta-api-2.3")
    # The recipient team's keys were opened by its own import job, for its own account.
    (event,) = used.filter(team_id=flow.dest.pk)
    assert event.details["purpose"] == "start import" and event.request_id.startswith("import-start-")


# --- WEB-07: image lists and link reveals are rate-limited per person -----------------------------


def _reveal(client, share, recipient):
    return client.post(reverse("transfers:share-reveal-link", args=[share.team.public_id, share.public_id,
                                                                    recipient.public_id]))


def _rate_denials():
    return AuditEvent.objects.filter(action="access.denied", details__reason="rate_limited")


@pytest.mark.django_db
def test_it_limits_link_reveals_per_person_with_a_429_and_one_denied_event(world, client, settings):
    import redis

    settings.OMIPORTAL_LINK_REVEAL_RATE = rates.limit(2)
    share, recipient = _share(world)
    client.force_login(world.member)
    assert [_reveal(client, share, recipient).status_code for _ in range(2)] == [302, 302]
    refused = _reveal(client, share, recipient)
    assert refused.status_code == 429
    assert f"Too many link reveals in a short time (the limit is {rates.limit(2)})" in refused.content.decode()
    assert 0 < int(refused["Retry-After"]) <= 24 * 3600  # the window's end
    assert _reveal(client, share, recipient).status_code == 429
    (event,) = _rate_denials()  # one per window: a script refused a thousand times writes one event
    assert (event.actor_id, event.team_id, event.outcome) == (world.member.pk, world.alpha.pk, "denied")
    assert event.details["limit"] == "link-reveal"
    # Per person: someone else of the team is not held back by the member's script.
    client.force_login(world.admin)
    assert _reveal(client, share, recipient).status_code == 302
    # Counted in Redis, shared by every web process, not in this process's memory.
    keys = redis.Redis.from_url(settings.REDIS_URL).keys(f"*{settings.RATELIMIT_CACHE_PREFIX}*")
    assert len(keys) == 2


@pytest.mark.django_db
def test_it_limits_the_share_forms_image_list_per_person(cloud, client, settings):
    from tests.transfer_world import make_transfer_world

    settings.OMIPORTAL_IMAGE_LIST_RATE = rates.limit(2)
    w = make_transfer_world(cloud)
    client.force_login(w.src_member)
    url = reverse("transfers:share-new", args=[w.source.public_id])
    assert client.get(url).status_code == 200  # choosing an account lists nothing: not counted
    listed = f"{url}?account={w.alpha.public_id}"
    assert [client.get(listed).status_code for _ in range(2)] == [200, 200]
    calls = cloud.counters(w.alpha.account_id).get("ReadImages")
    refused = client.get(listed)
    assert refused.status_code == 429 and "Too many image lists" in refused.content.decode()
    assert cloud.counters(w.alpha.account_id).get("ReadImages") == calls  # refused before calling OUTSCALE
    (event,) = _rate_denials()
    assert (event.actor_id, event.details["limit"]) == (w.src_member.pk, "image-list")


def test_it_refuses_a_rate_that_is_not_a_count_per_period():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "omiportal.settings",
             "OMIPORTAL_LINK_REVEAL_RATE": "ten a minute"})
    assert result.returncode != 0
    assert "OMIPORTAL_LINK_REVEAL_RATE is a count per period, like 30/m" in result.stderr
