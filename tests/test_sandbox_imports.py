"""Imports (`CreateImage{FileLocation}`) in the sandbox: the full export -> pre-sign -> import path
across accounts and Regions, and every way a manifest link can be refused."""

import json
import time
from datetime import timedelta

import pytest
import requests

from sandbox.seed import canonical_id_for
from tests.fixtures_sandbox import export, manifest_key, oapi_error, read_image

ALPHA, BETA, DELTA = "111122223333", "222233334444", "444455556666"
EIGHT_DAYS = timedelta(days=8).total_seconds()


def image_id(sandbox, name):
    return next(i.image_id for i in sandbox.world.images.values() if i.name == name)


@pytest.fixture
def exported(sandbox_world, oapi, wait_for):
    """alpha's web OMI exported to alpha-exports; returns the completed task."""
    task = export(oapi("alpha"), image_id(sandbox_world, "alpha-web-2025.01"), "alpha-exports", wait_for)
    assert task["State"] == "completed"
    return task


def presign(oos, task, expires=3600, key=None):
    return oos("alpha").generate_presigned_url(
        "get_object", Params={"Bucket": "alpha-exports", "Key": key or manifest_key(task)}, ExpiresIn=expires
    )


def import_error(oapi, url, account="delta", name="imported"):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi(account).CreateImage(FileLocation=url, ImageName=name)
    return oapi_error(excinfo)


def test_it_imports_an_export_into_another_account_in_another_region(sandbox_world, exported, oapi, oos, wait_for):
    url = presign(oos, exported)
    gw = oapi("delta")  # us-east-2
    created = gw.CreateImage(FileLocation=url, ImageName="web-from-alpha", Description="copied")["Image"]
    assert created["State"] == "pending"
    assert created["AccountId"] == DELTA
    assert created["FileLocation"] == url
    source = sandbox_world.world.images[exported["ImageId"]]
    assert created["ImageId"] != source.image_id
    assert created["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"] != source.snapshots[0].snapshot_id
    final = wait_for(lambda: read_image(gw, created["ImageId"]), lambda image: image["State"] != "pending")
    assert final["State"] == "available"
    assert final["Description"] == "copied"
    assert (
        gw.ReadImages(Filters={"ImageNames": ["web-from-alpha"], "AccountIds": [DELTA]})["Images"][0]["ImageId"]
        == (created["ImageId"])
    )
    # The copy belongs to delta only.
    assert oapi("alpha").ReadImages(Filters={"ImageIds": [created["ImageId"]]})["Images"] == []
    assert sandbox_world.counters(DELTA)["CreateImage"] == 1


def test_it_imports_in_the_same_region_through_an_object_acl(sandbox_world, exported, oapi, oos):
    plain_url = exported["OsuExport"]["OsuManifestUrl"]  # not pre-signed
    status, body = import_error(oapi, plain_url, account="beta")
    assert (status, body["Errors"][0]["Code"]) == (400, "4074")
    grant = f'id="{canonical_id_for("beta")}"'
    oos("alpha").put_object_acl(Bucket="alpha-exports", Key=manifest_key(exported), GrantRead=grant)
    created = oapi("beta").CreateImage(FileLocation=plain_url, ImageName="web-by-acl")["Image"]
    assert created["AccountId"] == BETA


def test_it_refuses_an_expired_link_directly_and_on_import(sandbox_world, exported, oapi, oos):
    url = presign(oos, exported, expires=1)
    assert requests.get(url, timeout=5).status_code == 200
    time.sleep(1.1)
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 403
    assert "<Code>AccessDenied</Code>" in answer.text
    assert "<Message>Request has expired</Message>" in answer.text
    status, body = import_error(oapi, url)
    assert (status, body["Errors"][0]["Code"]) == (400, "4074")
    assert "expired" in body["Errors"][0]["Details"]


@pytest.mark.parametrize(
    "forge",
    [
        lambda url: url[:-4] + ("0000" if not url.endswith("0000") else "1111"),  # altered signature
        lambda url: url.replace("manifest.json", "manifest.jsom"),  # another object, same signature
        lambda url: url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"),  # longer life
    ],
    ids=["signature", "key", "expiry"],
)
def test_it_refuses_a_forged_link_directly_and_on_import(sandbox_world, exported, oapi, oos, forge):
    url = forge(presign(oos, exported))
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in answer.text
    status, body = import_error(oapi, url)
    assert (status, body["Errors"][0]["Code"]) == (400, "4074")


def test_it_refuses_a_link_valid_longer_than_seven_days(sandbox_world, exported, oapi, oos):
    url = presign(oos, exported, expires=604801)
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 400
    assert "<Code>AuthorizationQueryParametersError</Code>" in answer.text
    assert import_error(oapi, url)[1]["Errors"][0]["Code"] == "4074"


@pytest.mark.parametrize(
    "url, code",
    [
        ("https://oos.eu-west-2.outscale.com/alpha-exports/exports/manifest.json?X-Amz-Signature=00", "4074"),
        ("not a url", "4075"),
        ("ftp://127.0.0.1/alpha-exports/x", "4075"),
    ],
)
def test_it_refuses_foreign_and_malformed_links(sandbox_world, oapi, url, code):
    assert import_error(oapi, url)[1]["Errors"][0]["Code"] == code


def test_it_refuses_a_link_with_credentials_in_it(sandbox_world, exported, oapi, oos):
    url = presign(oos, exported).replace("http://", "http://user:pass@")
    assert import_error(oapi, url)[1]["Errors"][0]["Code"] == "4075"


def test_it_answers_no_such_manifest_for_a_missing_object(sandbox_world, exported, oapi, oos):
    url = presign(oos, exported, key="exports/ami-00000000/manifest.json")
    assert import_error(oapi, url)[1]["Errors"][0]["Code"] == "5031"


def test_it_refuses_an_object_that_is_not_a_manifest(sandbox_world, oapi, oos):
    oos("alpha").put_object(Bucket="alpha-exports", Key="notes.txt", Body=b"hello")
    oos("alpha").put_object(Bucket="alpha-exports", Key="v9.json", Body=json.dumps({"Version": "9"}).encode())
    assert import_error(oapi, presign(oos, None, key="notes.txt"))[1]["Errors"][0]["Code"] == "4041"
    assert import_error(oapi, presign(oos, None, key="v9.json"))[1]["Errors"][0]["Code"] == "4094"


def test_it_refuses_a_manifest_whose_snapshot_urls_expired(sandbox_world, exported, oapi, oos):
    # The export completed 8 days ago: a fresh link to the manifest does not renew its snapshots.
    sandbox_world.world.age_export(exported["TaskId"], EIGHT_DAYS)
    url = presign(oos, exported)
    status, body = import_error(oapi, url)
    assert (status, body["Errors"][0]["Code"]) == (400, "4040")
    assert "expired" in body["Errors"][0]["Details"]
    manifest = json.loads(requests.get(url, timeout=5).content)
    snapshot = requests.get(manifest["Snapshots"][0]["Url"], timeout=5)
    assert snapshot.status_code == 403 and "Request has expired" in snapshot.text


def test_it_refuses_a_manifest_whose_snapshot_was_deleted(sandbox_world, exported, oapi, oos):
    prefix = exported["OsuExport"]["OsuPrefix"]
    for item in oos("alpha").list_objects_v2(Bucket="alpha-exports", Prefix=prefix)["Contents"]:
        if not item["Key"].endswith("manifest.json"):
            oos("alpha").delete_object(Bucket="alpha-exports", Key=item["Key"])
    assert import_error(oapi, presign(oos, exported))[1]["Errors"][0]["Code"] == "5054"


def test_it_applies_the_name_rules_to_imports(sandbox_world, exported, oapi, oos):
    url = presign(oos, exported)
    oapi("delta").CreateImage(FileLocation=url, ImageName="web-from-alpha")
    assert import_error(oapi, url, name="web-from-alpha")[1]["Errors"][0]["Code"] == "9015"
    assert import_error(oapi, url, name="no")[1]["Errors"][0]["Code"] == "4026"


def test_it_fails_an_import_on_demand(sandbox_world, exported, oapi, oos, wait_for):
    sandbox_world.faults.fail_import("doomed", comment="Snapshot copy failed (injected)")
    gw = oapi("delta")
    created = gw.CreateImage(FileLocation=presign(oos, exported), ImageName="doomed")["Image"]
    final = wait_for(lambda: read_image(gw, created["ImageId"]), lambda image: image["State"] != "pending")
    assert final["State"] == "failed"
    assert final["StateComment"]["StateMessage"] == "Snapshot copy failed (injected)"


def test_it_keeps_the_manifest_link_out_of_the_logs(sandbox_world, exported, oapi, oos, caplog):
    url = presign(oos, exported)
    with caplog.at_level("DEBUG", logger="sandbox"):
        requests.get(url, timeout=5)
        oapi("delta").CreateImage(FileLocation=url, ImageName="logged")
    assert "X-Amz-Signature" not in caplog.text
    assert sandbox_world.account("alpha")["secret_key"] not in caplog.text
