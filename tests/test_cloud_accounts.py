import pytest
from django.contrib.admin.sites import site
from django.urls import reverse
from django.utils.html import escape
from django.views.debug import ExceptionReporter

from accounts import forms, services
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from audit.models import AuditEvent
from tests import factories

AK = "AKTESTCANARY00000042"
SK = "SKCANARY" + "7" * 32

VALID = {"label": "prod", "region": "eu-west-2", "access_key": AK, "secret_key": SK,
         "export_bucket": "omi-exports", "accepts_incoming_shares": "on"}


def _create_url(team):
    return reverse("accounts:account-create", kwargs={"team_id": team.public_id})


def _edit_url(account):
    return reverse("accounts:account-edit", kwargs={"team_id": account.team.public_id,
                                                     "account_id": account.public_id})


def _sandbox_form(cloud, name="alpha", **overrides):
    entry = cloud.account(name)
    return {**VALID, "region": entry["region"], "access_key": entry["access_key"],
            "secret_key": entry["secret_key"], "export_bucket": entry["bucket"], **overrides}


def test_an_admin_adds_an_account_and_outscale_validates_it(world, client, cloud):
    client.force_login(world.admin)
    response = client.post(_create_url(world.alpha), _sandbox_form(cloud), follow=True)
    account = CloudAccount.objects.get(label="prod")
    assert account.validation_status == "valid" and account.account_id == "111122223333"
    assert account.validated_at is not None
    assert "validated: OUTSCALE account 111122223333" in response.content.decode()
    event = AuditEvent.objects.get(action="cloud_account.validated")
    assert event.outcome == "success" and len(event.cloud_request_ids) == 1
    assert cloud.counters("111122223333").get("ReadAccounts") == 1


def test_a_wrong_secret_is_shown_on_the_form_and_never_retried(world, client, cloud):
    client.force_login(world.admin)
    response = client.post(_create_url(world.alpha), _sandbox_form(cloud, secret_key="W" * 40), follow=True)
    account = CloudAccount.objects.get(label="prod")
    assert account.validation_status == "invalid" and account.account_id == ""
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == _edit_url(account)
    assert "OUTSCALE refused these keys" in page and escape(account.validation_message) in page
    assert "W" * 40 not in page
    event = AuditEvent.objects.get(action="cloud_account.validated")
    assert event.outcome == "failed" and "W" * 40 not in str(event.details)
    assert cloud.world.auth_failures[cloud.account("alpha")["access_key"]] == 1


def test_an_unreachable_cloud_leaves_the_keys_pending(world, client):
    client.force_login(world.admin)
    response = client.post(_create_url(world.alpha), VALID, follow=True)
    account = CloudAccount.objects.get(label="prod")
    assert account.validation_status == "pending" and account.validation_message
    assert "could not be checked yet" in response.content.decode()


def test_keys_can_be_checked_again(world, client, cloud):
    entry = cloud.account("alpha")
    account = factories.make_cloud_account(world.alpha, access_key=entry["access_key"],
                                           secret_key=entry["secret_key"], validation_status="invalid")
    client.force_login(world.admin)
    client.post(reverse("accounts:account-validate", kwargs={"team_id": world.alpha.public_id,
                                                             "account_id": account.public_id}))
    account.refresh_from_db()
    assert account.validation_status == "valid"


def test_the_keys_are_sealed_at_rest(world, client):
    client.force_login(world.admin)
    client.post(_create_url(world.alpha), VALID)
    account = CloudAccount.objects.select_related("team").get(label="prod")
    assert AK not in account.access_key_sealed and SK not in account.secret_key_sealed
    assert account.access_key_hint == "••••••••0042"
    creds = credentials_for(account, purpose="test")
    assert (creds.access_key, creds.secret_key, creds.region) == (AK, SK, "eu-west-2")
    for event in AuditEvent.objects.all():
        assert SK not in str(event.details) and AK not in str(event.details)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("export_bucket", "Bad_Bucket", "Use 3 to 63 lowercase letters"),
    ("export_bucket", "ab", "Use 3 to 63 lowercase letters"),
    ("export_bucket", "-starts-with-hyphen", "Use 3 to 63 lowercase letters"),
    ("region", "eu-west-9", "Select a valid choice"),
    ("access_key", "short", forms.ACCESS_KEY_MESSAGE),
    ("access_key", "akia0000000000000000", forms.ACCESS_KEY_MESSAGE),
    ("secret_key", "x" * 40, forms.SECRET_KEY_MESSAGE),
    ("label", "", "This field is required."),
])
def test_bad_input_is_explained_and_changes_nothing(world, client, field, value, message):
    client.force_login(world.admin)
    response = client.post(_create_url(world.alpha), {**VALID, field: value})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not CloudAccount.objects.exists()


def test_a_duplicate_label_is_refused(world, client):
    factories.make_cloud_account(world.alpha, label="prod")
    client.force_login(world.admin)
    response = client.post(_create_url(world.alpha), VALID)
    assert services.DUPLICATE_LABEL_MESSAGE.format(label="prod") in response.content.decode()
    assert CloudAccount.objects.count() == 1


def test_the_form_never_renders_keys_back(world, client):
    client.force_login(world.admin)
    response = client.post(_create_url(world.alpha), {**VALID, "export_bucket": "BAD"})
    page = response.content.decode()
    assert SK not in page


def test_no_page_shows_a_stored_secret(world, client, admin_user):
    account = factories.make_cloud_account(world.alpha, access_key=AK, secret_key=SK)
    client.force_login(world.admin)
    pages = [
        client.get(_edit_url(account)),
        client.get(reverse("accounts:account-list", kwargs={"team_id": world.alpha.public_id})),
        client.get(reverse("transfers:dashboard", kwargs={"team_id": world.alpha.public_id})),
    ]
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client.force_login(admin_user)  # the admin also wants a verified second factor
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.create(user=admin_user, confirmed=True).persistent_id
    session.save()
    pages.append(client.get(reverse("admin:accounts_cloudaccount_change", args=[account.pk])))
    pages.append(client.get(reverse("admin:accounts_cloudaccount_changelist")))
    for response in pages:
        page = response.content.decode()
        assert response.status_code == 200
        assert SK not in page and AK not in page
        assert account.secret_key_sealed not in page and account.access_key_sealed not in page
    assert "••••••••0042" in pages[0].content.decode()


def test_editing_without_keys_keeps_them(world, client, cloud):
    account = factories.make_cloud_account(world.alpha, access_key=AK, secret_key=SK, label="prod")
    sealed = account.secret_key_sealed
    client.force_login(world.admin)
    response = client.post(_edit_url(account), {**VALID, "access_key": "", "secret_key": "", "label": "production"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.label == "production" and account.secret_key_sealed == sealed
    event = AuditEvent.objects.get(action="cloud_account.changed")
    assert event.details["changes"]["label"] == {"before": "prod", "after": "production"}
    assert event.details["keys_replaced"] is False


def test_replacing_keys_needs_both_and_resets_validation(world, client, cloud):
    account = factories.make_cloud_account(world.alpha, access_key=AK, secret_key=SK,
                                           validation_status="valid", account_id="123456789012")
    client.force_login(world.admin)
    response = client.post(_edit_url(account), {**VALID, "secret_key": ""})
    assert forms.KEYS_TOGETHER_MESSAGE in response.content.decode()
    beta = cloud.account("beta")
    client.post(_edit_url(account), {**VALID, "access_key": beta["access_key"], "secret_key": beta["secret_key"]})
    account = CloudAccount.objects.select_related("team").get(pk=account.pk)
    assert credentials_for(account, purpose="test").secret_key == beta["secret_key"]
    assert account.validation_status == "valid" and account.account_id == "222233334444"
    changed = AuditEvent.objects.get(action="cloud_account.changed")
    assert changed.details["keys_replaced"] is True and beta["secret_key"] not in str(changed.details)


def test_an_admin_deletes_an_account(world, client):
    account = factories.make_cloud_account(world.alpha)
    client.force_login(world.admin)
    url = reverse("accounts:account-delete", kwargs={"team_id": world.alpha.public_id,
                                                      "account_id": account.public_id})
    assert client.get(url).status_code == 200
    client.post(url)
    assert not CloudAccount.objects.exists()
    assert AuditEvent.objects.filter(action="cloud_account.deleted").exists()


def test_forms_cannot_move_an_account_to_another_team(world, client):
    client.force_login(world.admin)
    client.post(_create_url(world.alpha), {**VALID, "team": world.beta.pk, "team_id": world.beta.pk,
                                           "validation_status": "valid", "account_id": "999999999999"})
    account = CloudAccount.objects.get()
    assert account.team == world.alpha
    assert account.validation_status == "pending" and account.account_id == ""


def test_the_empty_state_says_what_to_do(world, client):
    client.force_login(world.member)
    page = client.get(reverse("accounts:account-list", kwargs={"team_id": world.alpha.public_id})).content.decode()
    assert "No cloud account yet" in page and "Only team admins add cloud accounts" in page


def test_an_audit_failure_rolls_the_account_back(world, monkeypatch):
    from accounts.selectors import team_access_for_user

    def broken_record(**kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(services, "record", broken_record)
    access = team_access_for_user(user=world.admin, team_public_id=world.alpha.public_id)
    with pytest.raises(RuntimeError):
        services.cloud_account_create(access=access, label="x", region="eu-west-2", access_key=AK,
                                      secret_key=SK, export_bucket="bucket")
    assert not CloudAccount.objects.exists()


def test_error_reports_hide_the_posted_keys(world, rf, monkeypatch):
    import sys

    from accounts.views import account_create

    def crash(**kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(services, "cloud_account_create", crash)
    request = rf.post(_create_url(world.alpha), VALID)
    request.user, request.session = world.admin, {}
    with pytest.raises(ValueError):
        try:
            account_create(request, team_id=world.alpha.public_id)
        except ValueError:
            report = ExceptionReporter(request, *sys.exc_info()).get_traceback_text()
            raise
    assert SK not in report and AK not in report
    assert "********" in report


def test_the_admin_cannot_add_or_change_accounts(admin_user):
    model_admin = site._registry[CloudAccount]
    assert not model_admin.has_add_permission(None)
    assert not model_admin.has_change_permission(None)
