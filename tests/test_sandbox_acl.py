"""OOS object ACLs between accounts, and imports from what an ACL or a SigV2 link makes readable."""

import json
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

from sandbox.seed import canonical_id_for
from tests.fixtures_sandbox import error_code, export, manifest_key

ALPHA, BETA = "111122223333", "222233334444"
BUCKET = "alpha-exports"


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture
def exported(sandbox_world, oapi, wait_for):
    web = next(i.image_id for i in sandbox_world.world.images.values() if i.name == "alpha-web-2025.01")
    task = export(oapi("alpha"), web, BUCKET, wait_for, prefix="acl/")
    assert task["State"] == "completed"
    return task


def grant_read(oos, key, account):
    oos("alpha").put_object_acl(Bucket=BUCKET, Key=key, GrantRead=f'id="{canonical_id_for(account)}"')


def test_a_grant_names_the_canonical_id_not_the_account_id(sandbox_world, oos):
    s3 = oos("alpha")
    s3.put_object(Bucket=BUCKET, Key="m.json", Body=b"{}")
    for grantee, code in (
        (f'id="{BETA}"', "InvalidArgument"),  # an account id is not an OOS user id
        ('id="' + "0" * 64 + '"', "InvalidArgument"),
        ('emailAddress="nobody@sandbox.example"', "UnresolvableGrantByEmailAddress"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as excinfo:
            s3.put_object_acl(Bucket=BUCKET, Key="m.json", GrantRead=grantee)
        assert code_of(excinfo) == code, grantee
    assert sandbox_world.describe()["accounts"][1]["canonical_id"] == canonical_id_for("beta")
    assert oos("beta").list_buckets()["Owner"] == {"ID": canonical_id_for("beta"), "DisplayName": BETA}


def test_a_grantee_reads_only_while_the_grant_stands(sandbox_world, oos):
    s3, beta = oos("alpha"), oos("beta")
    s3.put_object(Bucket=BUCKET, Key="m.json", Body=b"manifest")
    grant_read(oos, "m.json", "beta")
    assert beta.get_object(Bucket=BUCKET, Key="m.json")["Body"].read() == b"manifest"
    assert beta.head_object(Bucket=BUCKET, Key="m.json")["ContentLength"] == 8
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:  # READ is not READ_ACP
        beta.get_object_acl(Bucket=BUCKET, Key="m.json")
    assert code_of(excinfo) == "AccessDenied"
    grants = s3.get_object_acl(Bucket=BUCKET, Key="m.json")["Grants"]
    assert {"ID": canonical_id_for("beta"), "DisplayName": BETA, "Type": "CanonicalUser"} in [
        g["Grantee"] for g in grants
    ]

    s3.put_object_acl(Bucket=BUCKET, Key="m.json", ACL="private")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        beta.get_object(Bucket=BUCKET, Key="m.json")
    assert code_of(excinfo) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError):
        beta.head_object(Bucket=BUCKET, Key="m.json")
    assert [g["Grantee"]["ID"] for g in s3.get_object_acl(Bucket=BUCKET, Key="m.json")["Grants"]] == [
        canonical_id_for("alpha")
    ]


def test_an_xml_policy_grants_by_canonical_id(sandbox_world, oos):
    s3 = oos("alpha")
    s3.put_object(Bucket=BUCKET, Key="x.json", Body=b"x")
    owner = {"ID": canonical_id_for("alpha")}
    policy = {"Owner": owner, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id_for("alpha")}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id_for("gamma")}, "Permission": "READ"},
    ]}
    s3.put_object_acl(Bucket=BUCKET, Key="x.json", AccessControlPolicy=policy)
    assert oos("gamma").get_object(Bucket=BUCKET, Key="x.json")["Body"].read() == b"x"
    with pytest.raises(botocore.exceptions.ClientError):
        oos("beta").get_object(Bucket=BUCKET, Key="x.json")


def test_an_unsigned_path_imports_while_the_manifest_is_granted(sandbox_world, oapi, oos, exported):
    path = exported["OsuExport"]["OsuManifestUrl"]
    assert "?" not in path
    grant_read(oos, manifest_key(exported), "beta")
    image = oapi("beta").CreateImage(FileLocation=path, ImageName="by-acl")["Image"]
    assert image["AccountId"] == BETA
    # A grant reaches only the grantee, and only in the object's Region.
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("gamma").CreateImage(FileLocation=path, ImageName="not-granted")
    assert error_code(excinfo) == "4074"
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("delta").CreateImage(FileLocation=path, ImageName="other-region")
    assert error_code(excinfo) == "4074"


def test_unsigned_snapshot_links_need_their_own_grants(sandbox_world, oapi, oos, exported):
    s3 = oos("alpha")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key(exported))["Body"].read())
    endpoint = sandbox_world.endpoints()["eu-west-2"]["oos"]
    for snapshot in manifest["Snapshots"]:
        snapshot["Url"] = f"{endpoint}/{BUCKET}/{snapshot['Key']}"  # no signature: read as the importer
    key = exported["OsuExport"]["OsuPrefix"] + "manifest-acl.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    grant_read(oos, key, "beta")
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("beta").CreateImage(FileLocation=f"{endpoint}/{BUCKET}/{key}", ImageName="half-granted")
    assert error_code(excinfo) == "4040"
    for snapshot in manifest["Snapshots"]:
        grant_read(oos, snapshot["Key"], "beta")
    oapi("beta").CreateImage(FileLocation=f"{endpoint}/{BUCKET}/{key}", ImageName="all-granted")


def sigv2(sandbox, key, expires_in):
    entry = sandbox.account("alpha")
    client = boto3.client(
        "s3", endpoint_url=sandbox.endpoints()["eu-west-2"]["oos"], region_name="eu-west-2",
        aws_access_key_id=entry["access_key"], aws_secret_access_key=entry["secret_key"],
        config=botocore.config.Config(s3={"addressing_style": "path"}, signature_version="s3"),
    )
    return client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires_in)


def test_a_sigv2_link_as_outscales_guide_prints_it_imports(sandbox_world, oapi, exported):
    link = sigv2(sandbox_world, manifest_key(exported), 600)
    assert "AWSAccessKeyId=" in link and "Expires=" in link and "Signature=" in link
    assert requests.get(link, timeout=5).status_code == 200
    image = oapi("delta").CreateImage(FileLocation=link, ImageName="by-sigv2")["Image"]
    assert image["FileLocation"] == link

    forged = link.replace("Signature=", "Signature=x")
    assert requests.get(forged, timeout=5).status_code == 403
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("delta").CreateImage(FileLocation=forged, ImageName="forged-sigv2")
    assert error_code(excinfo) == "4074"


def test_an_expired_sigv2_link_is_refused(sandbox_world, oapi, exported):
    link = sigv2(sandbox_world, manifest_key(exported), 1)
    time.sleep(2.1)
    answer = requests.get(link, timeout=5)
    assert answer.status_code == 403 and "<Message>Request has expired</Message>" in answer.text
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("delta").CreateImage(FileLocation=link, ImageName="late-sigv2")
    assert error_code(excinfo) == "4074"
    assert "expired" in excinfo.value.response.json()["Errors"][0]["Details"]
