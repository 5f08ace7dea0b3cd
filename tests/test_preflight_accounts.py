"""Pre-flight checks of a cloud account at validation: OOS, the export bucket (and creating it when
missing), the OMI quota. Real sandbox over HTTP; the account page says what each check found."""

import pytest
from django.urls import reverse
from django.utils.html import escape

from accounts import preflight
from accounts.models import CloudAccount
from audit.models import AuditEvent
from tests import factories

ALPHA = "111122223333"


def _account(world, cloud, name="alpha", **fields):
    entry = cloud.account(name)
    fields.setdefault("bucket", entry["bucket"])
    fields.setdefault("validation_status", "pending")
    return factories.make_cloud_account(world.alpha, label="prod", region=entry["region"],
                                        access_key=entry["access_key"], secret_key=entry["secret_key"], **fields)


def _validate(client, world, account):
    client.force_login(world.admin)
    return client.post(reverse("accounts:account-validate", kwargs={"team_id": world.alpha.public_id,
                                                                    "account_id": account.public_id}), follow=True)


def _checks(account) -> dict:
    account.refresh_from_db()
    return {check["name"]: check for check in account.preflight["checks"]}


def _create_bucket_url(account):
    return reverse("accounts:account-create-bucket", kwargs={"team_id": account.team.public_id,
                                                             "account_id": account.public_id})


def test_validation_checks_oos_the_bucket_and_the_quota(world, client, cloud):
    account = _account(world, cloud)
    page = _validate(client, world, account).content.decode()
    checks = _checks(account)
    assert {name: check["status"] for name, check in checks.items()} == {"oos": "ok", "bucket": "ok", "quota": "ok"}
    assert account.preflight_checked_at is not None and account.preflight["problems"] == 0
    assert escape(preflight.BUCKET_OK.format(bucket="alpha-exports")) in page
    event = AuditEvent.objects.get(action="cloud_account.preflight_checked")
    assert event.outcome == "success" and len(event.cloud_request_ids) >= 2  # ListBuckets, ReadQuotas
    assert cloud.counters(ALPHA).get("ReadQuotas") == 1 and cloud.counters(ALPHA, service="oos").get("ListBuckets")


def test_keys_oos_refuses_are_a_problem_even_when_the_api_takes_them(world, client, cloud):
    cloud.refuse_oos(ALPHA)
    account = _account(world, cloud)
    page = _validate(client, world, account).content.decode()
    account.refresh_from_db()
    assert account.is_valid  # ReadAccounts took them
    checks = _checks(account)
    assert checks["oos"]["status"] == "problem" and checks["bucket"]["status"] == "unknown"
    assert escape(preflight.OOS_REFUSED) in page and "found problems" in page
    assert AuditEvent.objects.get(action="cloud_account.preflight_checked").outcome == "failed"


def test_a_missing_bucket_is_offered_and_created_with_the_accounts_keys(world, client, cloud):
    account = _account(world, cloud, bucket="alpha-new-exports")
    page = _validate(client, world, account).content.decode()
    checks = _checks(account)
    assert checks["bucket"]["status"] == "problem" and checks["bucket"]["fix"] == preflight.CREATE_BUCKET
    assert "data-create-bucket" in page and _create_bucket_url(account) in page
    assert cloud.world.bucket("eu-west-2", "alpha-new-exports") is None

    page = client.post(_create_bucket_url(account), follow=True).content.decode()
    bucket = cloud.world.bucket("eu-west-2", "alpha-new-exports")
    assert bucket is not None and bucket.owner_id == ALPHA
    event = AuditEvent.objects.get(action="cloud_account.bucket_created")
    assert event.outcome == "success" and event.cloud_request_ids and event.actor_id == world.admin.pk
    assert _checks(account)["bucket"]["status"] == "ok"
    assert escape(preflight.BUCKET_CREATED_MESSAGE.format(bucket="alpha-new-exports", label="prod",
                                                          region="eu-west-2")) in page
    assert "data-create-bucket" not in page


def test_another_accounts_bucket_is_never_created_or_touched(world, client, cloud):
    account = _account(world, cloud, bucket="beta-exports")  # beta's, in the same Region
    _validate(client, world, account)
    assert _checks(account)["bucket"]["status"] == "problem"
    assert "fix" not in _checks(account)["bucket"]
    page = client.post(_create_bucket_url(account), follow=True).content.decode()
    assert escape(preflight.BUCKET_OTHERS_MESSAGE.format(bucket="beta-exports", label="prod")) in page
    assert cloud.world.bucket("eu-west-2", "beta-exports").owner_id == "222233334444"
    assert not cloud.counters(ALPHA, service="oos").get("CreateBucket")
    assert AuditEvent.objects.get(action="cloud_account.bucket_created").outcome == "failed"


def test_only_an_admin_creates_a_bucket(world, client, cloud):
    account = _account(world, cloud, bucket="alpha-new-exports", validation_status="valid", account_id=ALPHA)
    client.force_login(world.approver)
    assert client.post(_create_bucket_url(account)).status_code == 403
    client.force_login(world.outsider)
    assert client.post(_create_bucket_url(account)).status_code == 404
    client.force_login(world.admin)
    assert client.get(_create_bucket_url(account)).status_code == 405
    assert cloud.world.bucket("eu-west-2", "alpha-new-exports") is None


def test_a_full_quota_is_a_problem_and_a_nearly_full_one_a_warning(world, client, cloud):
    owned = sum(1 for image in cloud.world.images.values() if image.account_id == ALPHA)
    cloud.set_quota(ALPHA, "image_limit", owned)
    account = _account(world, cloud)
    page = _validate(client, world, account).content.decode()
    quota = _checks(account)["quota"]
    assert quota["status"] == "problem" and quota["headroom"] == 0
    assert escape(preflight.QUOTA_FULL.format(used=owned, limit=owned)) in page

    cloud.set_quota(ALPHA, "image_limit", owned + 2)
    _validate(client, world, account)
    assert _checks(account)["quota"]["status"] == "warning"
    cloud.set_quota(ALPHA, "image_limit", 0)  # OUTSCALE's "no limit"
    _validate(client, world, account)
    assert _checks(account)["quota"]["message"] == preflight.QUOTA_NO_LIMIT


def test_another_bucket_clears_the_old_findings_and_is_checked_at_once(world, client, cloud):
    account = _account(world, cloud)
    _validate(client, world, account)
    entry = cloud.account("alpha")
    form = {"label": "prod", "region": entry["region"], "access_key": "", "secret_key": "",
            "export_bucket": "alpha-elsewhere"}
    client.post(reverse("accounts:account-edit", kwargs={"team_id": world.alpha.public_id,
                                                         "account_id": account.public_id}), form)
    account.refresh_from_db()
    assert account.export_bucket == "alpha-elsewhere"
    assert _checks(account)["bucket"]["status"] == "problem"
    assert AuditEvent.objects.filter(action="cloud_account.preflight_checked").count() == 2


@pytest.mark.parametrize("status", ["invalid", "pending"])
def test_an_account_without_validated_keys_gets_no_bucket(world, client, cloud, status):
    account = _account(world, cloud, bucket="alpha-new-exports")
    CloudAccount.objects.filter(pk=account.pk).update(validation_status=status)
    client.force_login(world.admin)
    page = client.post(_create_bucket_url(account), follow=True).content.decode()
    assert escape(preflight.NOT_VALIDATED_MESSAGE.format(label="prod")) in page
    assert not cloud.counters(ALPHA, service="oos")
