"""outscale end to end against the sandbox (OAPI with OSC4 signatures, OOS with SigV4).

Only the endpoints differ from the real cloud: nothing here reaches around the layer except
to observe the sandbox (counters, recorded answers) or to inject faults.
"""

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

import outscale
from outscale import oapi
from outscale.results import Relation

WEEK = timedelta(seconds=604_800)


def account(sandbox, name, **override):
    entry = sandbox.account(name)
    creds = outscale.Credentials(access_key=override.get("access_key", entry["access_key"]),
                                 secret_key=override.get("secret_key", entry["secret_key"]), region=entry["region"])
    return creds, entry


def image_id(entry, name):
    return next(image["image_id"] for image in entry["images"] if image["name"] == name)


def answers(sandbox, action):
    return [(status, body) for act, status, body in list(sandbox.world.responses) if act == action]


def wait_until(read, done, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {value!r}"
        time.sleep(0.03)


def finished_export(creds, entry, image, prefix="exports/share-1/"):
    task = outscale.start_export(creds=creds, image_id=image, bucket=entry["bucket"], prefix=prefix)
    return wait_until(lambda: outscale.read_export_tasks(creds=creds, task_ids=[task.task_id])[task.task_id],
                      lambda t: t.is_final)


# --- keys ------------------------------------------------------------------------------------

def test_it_identifies_the_account_whatever_the_environment_says(cloud, monkeypatch, tmp_path):
    for name in ("OSC_ACCESS_KEY", "OSC_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "GARBAGE")
    monkeypatch.setenv("OSC_REGION", "ap-northeast-1")
    monkeypatch.setenv("OSC_ENDPOINT_API", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("OSC_LOGIN", "evil@example.test")
    monkeypatch.setenv("OSC_PASSWORD", "evil")
    monkeypatch.setenv("AWS_PROFILE", "garbage")
    monkeypatch.setenv("HOME", str(tmp_path))
    creds, entry = account(cloud, "alpha")

    identity = outscale.identify_account(creds=creds)
    listing = outscale.find_manifest_key(creds=creds, bucket=entry["bucket"], prefix="nothing/")

    assert identity.account_id == entry["account_id"]
    assert len(identity.request_ids) == 1
    assert listing.key is None and len(listing.request_ids) == 1


def test_a_bad_secret_is_a_credential_error_after_exactly_one_request(cloud, settings):
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 5
    creds, entry = account(cloud, "alpha", secret_key="WRONG" * 8)

    with pytest.raises(outscale.CredentialError) as caught:
        outscale.identify_account(creds=creds)

    assert len(answers(cloud, "ReadAccounts")) == 1
    assert cloud.world.auth_failures[entry["access_key"]] == 1
    assert caught.value.request_id and not caught.value.retryable
    # A second try by a careless caller would count towards the lock; the layer made only one.
    assert "stored keys" in caught.value.user_message


def test_a_bad_secret_on_oos_is_a_credential_error_without_retry(cloud, settings):
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 5
    creds, entry = account(cloud, "alpha", secret_key="WRONG" * 8)
    with pytest.raises(outscale.CredentialError) as caught:
        outscale.find_manifest_key(creds=creds, bucket=entry["bucket"], prefix="exports/")
    assert caught.value.code == "SignatureDoesNotMatch"
    assert len(caught.value.request_ids) == 1


# --- retries and timeouts ----------------------------------------------------------------------

def test_throttling_is_retried_then_succeeds(cloud, settings):
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 8
    creds, entry = account(cloud, "alpha")
    cloud.faults.configure(throttle_rate=0.3, actions={"ReadAccounts"})

    identities = [outscale.identify_account(creds=creds) for _ in range(4)]

    statuses = [status for status, _ in answers(cloud, "ReadAccounts")]
    assert all(identity.account_id == entry["account_id"] for identity in identities)
    assert statuses.count(200) == 4
    assert {429, 503} & set(statuses), statuses
    assert sum(len(identity.request_ids) for identity in identities) == len(statuses)


def test_a_lost_create_is_found_by_name_instead_of_created_twice(cloud):
    creds, entry = account(cloud, "beta")
    source = image_id(entry, "alpha-db-base")
    cloud.faults.configure(lost_response_rate=1.0, actions={"CreateImage"}, lost_response_mode="500")

    with pytest.raises(outscale.RetryLater) as caught:
        outscale.copy_image(creds=creds, source_image_id=source, name="portal-copy-0001")

    assert caught.value.may_have_run is True
    assert cloud.counters(entry["account_id"])["CreateImage"] == 1  # not repeated by the layer
    cloud.faults.reset()
    found = outscale.find_image_by_name(creds=creds, account_id=entry["account_id"], name="portal-copy-0001")
    assert found is not None and found.account_id == entry["account_id"]


def test_a_dropped_connection_on_a_create_is_not_repeated(cloud):
    creds, entry = account(cloud, "alpha")
    cloud.faults.configure(lost_response_rate=1.0, actions={"CreateImageExportTask"}, lost_response_mode="drop")
    with pytest.raises(outscale.RetryLater) as caught:
        outscale.start_export(creds=creds, image_id=image_id(entry, "alpha-web-2025.01"), bucket=entry["bucket"],
                              prefix="exports/lost/")
    assert caught.value.may_have_run is True
    assert cloud.counters(entry["account_id"])["CreateImageExportTask"] == 1


def test_a_hanging_request_is_cut_by_the_read_timeout(cloud, settings):
    settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = 0.3
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 2
    creds, _ = account(cloud, "alpha")
    cloud.faults.configure(hang_seconds=2.0, actions={"ReadAccounts"})

    started = time.monotonic()
    with pytest.raises(outscale.RetryLater) as caught:
        outscale.identify_account(creds=creds)

    assert time.monotonic() - started < 1.5
    assert caught.value.kind == outscale.RetryLater.TIMEOUT


def test_a_held_create_whose_caller_hung_up_is_never_performed(cloud, settings):
    """A worker killed while its create is held in front of the API leaves nothing behind."""
    settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = 0.2
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 1
    creds, entry = account(cloud, "alpha")
    cloud.faults.configure(hang_seconds=0.6, actions={"CreateImageExportTask"})
    with pytest.raises(outscale.RetryLater):
        outscale.start_export(creds=creds, image_id=image_id(entry, "alpha-web-2025.01"), bucket=entry["bucket"],
                              prefix="held/")
    time.sleep(1.0)  # the hang is over: the sandbox saw the caller gone and dropped the request
    assert not cloud.counters(entry["account_id"]).get("CreateImageExportTask")
    assert not cloud.world.tasks


# --- images ------------------------------------------------------------------------------------

def test_it_lists_owned_shared_and_public_images(cloud):
    creds, entry = account(cloud, "beta")

    private = outscale.list_shareable_images(creds=creds, account_id=entry["account_id"])
    everything = outscale.list_shareable_images(creds=creds, account_id=entry["account_id"], include_public=True)

    marks = {image.name: image.relation for image in everything}
    assert marks["beta-app-1.0"] == Relation.OWNED
    assert marks["alpha-db-base"] == Relation.SHARED
    assert marks["Ubuntu-24.04-2025.01.15-0"] == Relation.PUBLIC
    assert "alpha-web-2025.01" not in marks  # alpha's, not shared with beta
    assert "Debian-12-2025.01.15-0" not in marks  # public, but in another Region
    assert Relation.PUBLIC not in {image.relation for image in private}
    assert everything.request_ids


def test_a_shared_image_is_copied_into_the_account(cloud):
    creds, entry = account(cloud, "beta")
    copy = outscale.copy_image(creds=creds, source_image_id=image_id(entry, "alpha-db-base"),
                               name="portal-copy-0002", description="copy before export")

    ready = wait_until(lambda: outscale.read_images(creds=creds, account_id=entry["account_id"],
                                                    image_ids=[copy.image_id])[copy.image_id],
                       lambda image: image.is_final)

    assert ready.state == "available"
    owned = outscale.list_shareable_images(creds=creds, account_id=entry["account_id"])
    assert {image.image_id: image.relation for image in owned}[copy.image_id] == Relation.OWNED


def test_export_presign_and_import_into_another_region(cloud):
    source, alpha = account(cloud, "alpha")
    target, delta = account(cloud, "delta")
    before = datetime.now(UTC)

    task = finished_export(source, alpha, image_id(alpha, "alpha-web-2025.01"))
    assert task.state == "completed" and task.prefix.endswith(f"{task.image_id}/")
    location = outscale.find_manifest_key(creds=source, bucket=alpha["bucket"], prefix="exports/share-1/",
                                          image_id=task.image_id)
    assert location.key == task.manifest_key
    deadline = outscale.manifest_deadline(creds=source, bucket=alpha["bucket"], key=location.key).deadline
    assert before + WEEK - timedelta(seconds=2) <= deadline <= datetime.now(UTC) + WEEK
    link = outscale.presign_manifest(creds=source, bucket=alpha["bucket"], key=location.key, not_after=deadline)
    assert link.expires_at <= deadline
    assert requests.get(link.url, timeout=5).status_code == 200

    imported = outscale.import_image(creds=target, file_location=link.url, name="portal-import-0001")
    ready = wait_until(lambda: outscale.read_images(creds=target, account_id=delta["account_id"],
                                                    image_ids=[imported.image_id])[imported.image_id],
                       lambda image: image.is_final)

    assert ready.state == "available" and ready.account_id == delta["account_id"]
    assert "X-Amz-Signature" not in repr(ready)


def test_presigning_an_expired_export_is_refused(cloud):
    creds, entry = account(cloud, "alpha")
    task = finished_export(creds, entry, image_id(entry, "alpha-web-2025.01"))
    cloud.world.age_export(task.task_id, seconds=WEEK.total_seconds() + 60)

    deadline = outscale.manifest_deadline(creds=creds, bucket=entry["bucket"], key=task.manifest_key).deadline

    assert deadline < datetime.now(UTC)
    with pytest.raises(outscale.ManifestExpired):
        outscale.presign_manifest(creds=creds, bucket=entry["bucket"], key=task.manifest_key, not_after=deadline)


def test_a_failed_export_reports_its_comment(cloud):
    creds, entry = account(cloud, "alpha")
    task = finished_export(creds, entry, image_id(entry, "alpha-legacy-broken"))
    assert task.state == "failed"
    assert "not readable" in task.comment


def test_a_queued_export_can_be_cancelled(cloud):
    creds, entry = account(cloud, "alpha")
    cloud.set_durations(export_seconds=30)
    try:
        task = outscale.start_export(creds=creds, image_id=image_id(entry, "alpha-web-2025.01"),
                                     bucket=entry["bucket"], prefix="exports/cancel/")
        result = outscale.cancel_export(creds=creds, task_id=task.task_id)
    finally:
        cloud.set_durations(export_seconds=0.3)
    assert result.request_ids
    state = outscale.read_export_tasks(creds=creds, task_ids=[task.task_id])[task.task_id].state
    assert state == "cancelled"


def test_export_objects_are_deleted_in_one_batch(cloud):
    creds, entry = account(cloud, "alpha")
    task = finished_export(creds, entry, image_id(entry, "alpha-web-2025.01"), prefix="exports/cleanup/")

    deleted = outscale.delete_export_objects(creds=creds, bucket=entry["bucket"], prefix="exports/cleanup/")

    assert deleted.count >= 2  # at least one snapshot and the manifest
    assert cloud.counters(entry["account_id"], service="oos").get("DeleteObjects") == 1
    assert outscale.find_manifest_key(creds=creds, bucket=entry["bucket"], prefix=task.prefix).key is None


def test_tags_and_missing_images(cloud):
    creds, entry = account(cloud, "alpha")
    web = image_id(entry, "alpha-web-2025.01")
    outscale.tag_resources(creds=creds, resource_ids=[web], tags={"omiportal:share": "s-1"})
    assert cloud.world.images[web].tags == [{"Key": "omiportal:share", "Value": "s-1"}]
    assert outscale.read_images(creds=creds, account_id=entry["account_id"], image_ids=["ami-00000000"]) == {}
    with pytest.raises(outscale.NotFound):
        outscale.start_export(creds=creds, image_id="ami-00000000", bucket=entry["bucket"], prefix="x/")


def test_ensure_bucket_creates_once(cloud):
    creds, entry = account(cloud, "gamma")
    outscale.ensure_bucket(creds=creds, bucket="gamma-portal-exports")
    outscale.ensure_bucket(creds=creds, bucket="gamma-portal-exports")
    assert cloud.world.bucket(entry["region"], "gamma-portal-exports").owner_id == entry["account_id"]


def test_request_ids_are_recorded_for_every_call(cloud):
    creds, entry = account(cloud, "alpha")
    with outscale.record_request_ids() as seen:
        outscale.identify_account(creds=creds)
        outscale.find_manifest_key(creds=creds, bucket=entry["bucket"], prefix="none/")
        with pytest.raises(outscale.NotFound):
            outscale.cancel_export(creds=creds, task_id="image-export-00000000")
    assert len(seen) == 3


def test_clients_are_reused_across_calls(cloud):
    creds, _ = account(cloud, "alpha")
    outscale.identify_account(creds=creds)
    gateway = oapi.gateway_for(creds)
    outscale.identify_account(creds=creds)
    assert oapi.gateway_for(creds) is gateway
