"""OOS in the sandbox, through boto3 (and plain HTTP for links): buckets, objects, listings,
multi-delete, object ACLs and SigV4 checks."""

import botocore.exceptions
import pytest
import requests

from sandbox.seed import canonical_id_for

ALPHA, BETA = "111122223333", "222233334444"
# OOS grants name an account by its canonical id (S3 user ID), not its account id.
ALPHA_CANONICAL, BETA_CANONICAL = canonical_id_for("alpha"), canonical_id_for("beta")


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_it_lists_the_accounts_own_buckets(sandbox_world, oos):
    response = oos("alpha").list_buckets()
    assert [b["Name"] for b in response["Buckets"]] == ["alpha-exports"]
    assert response["Owner"] == {"ID": ALPHA_CANONICAL, "DisplayName": ALPHA}


def test_it_creates_and_heads_buckets(sandbox_world, oos):
    s3 = oos("alpha")
    s3.create_bucket(Bucket="alpha-extra")
    s3.head_bucket(Bucket="alpha-extra")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.create_bucket(Bucket="beta-exports")
    assert code_of(excinfo) == "BucketAlreadyExists"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.create_bucket(Bucket="Bad_Name")
    assert code_of(excinfo) == "InvalidBucketName"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("beta").head_bucket(Bucket="alpha-extra")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_it_stores_reads_and_deletes_objects(sandbox_world, oos):
    s3 = oos("alpha")
    s3.put_object(
        Bucket="alpha-exports", Key="a b/c+d.json", Body=b"{}", ContentType="application/json", Metadata={"share": "7"}
    )
    got = s3.get_object(Bucket="alpha-exports", Key="a b/c+d.json")
    assert got["Body"].read() == b"{}"
    assert got["ContentType"] == "application/json"
    assert got["Metadata"] == {"share": "7"}
    assert s3.head_object(Bucket="alpha-exports", Key="a b/c+d.json")["ContentLength"] == 2
    assert s3.get_object(Bucket="alpha-exports", Key="a b/c+d.json", Range="bytes=1-")["Body"].read() == b"}"
    s3.delete_object(Bucket="alpha-exports", Key="a b/c+d.json")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.get_object(Bucket="alpha-exports", Key="a b/c+d.json")
    assert code_of(excinfo) == "NoSuchKey"


def test_it_lists_with_prefix_delimiter_and_continuation(sandbox_world, oos):
    s3 = oos("alpha")
    keys = [f"exports/ami-{n}/part {n}" for n in range(5)] + ["other/x"]
    for key in keys:
        s3.put_object(Bucket="alpha-exports", Key=key, Body=b"x")
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="alpha-exports", Prefix="exports/", PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["Contents"]) for p in pages] == [2, 2, 1]
    assert [o["Key"] for p in pages for o in p["Contents"]] == sorted(keys[:5])
    folders = s3.list_objects_v2(Bucket="alpha-exports", Delimiter="/")
    assert [p["Prefix"] for p in folders["CommonPrefixes"]] == ["exports/", "other/"]
    assert len(s3.list_objects(Bucket="alpha-exports", Prefix="exports/")["Contents"]) == 5


def test_it_deletes_many_objects_at_once(sandbox_world, oos):
    s3 = oos("alpha")
    for n in range(3):
        s3.put_object(Bucket="alpha-exports", Key=f"k{n}", Body=b"x")
    response = s3.delete_objects(Bucket="alpha-exports", Delete={"Objects": [{"Key": f"k{n}"} for n in range(3)]})
    assert sorted(d["Key"] for d in response["Deleted"]) == ["k0", "k1", "k2"]
    assert "Contents" not in s3.list_objects_v2(Bucket="alpha-exports")


def test_it_keeps_objects_owner_only_until_an_acl_grants_them(sandbox_world, oos):
    oos("alpha").put_object(Bucket="alpha-exports", Key="m.json", Body=b"{}")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("beta").get_object(Bucket="alpha-exports", Key="m.json")
    assert code_of(excinfo) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("beta").list_objects_v2(Bucket="alpha-exports")
    assert code_of(excinfo) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("beta").put_object_acl(Bucket="alpha-exports", Key="m.json", GrantRead=f'id="{BETA_CANONICAL}"')
    assert code_of(excinfo) == "AccessDenied"

    oos("alpha").put_object_acl(Bucket="alpha-exports", Key="m.json", GrantRead=f'id="{BETA_CANONICAL}"')
    assert oos("beta").get_object(Bucket="alpha-exports", Key="m.json")["Body"].read() == b"{}"
    with pytest.raises(botocore.exceptions.ClientError):
        oos("gamma").get_object(Bucket="alpha-exports", Key="m.json")
    grants = oos("alpha").get_object_acl(Bucket="alpha-exports", Key="m.json")["Grants"]
    assert {(g["Grantee"].get("ID"), g["Grantee"].get("DisplayName"), g["Permission"]) for g in grants} == {
        (ALPHA_CANONICAL, ALPHA, "FULL_CONTROL"),
        (BETA_CANONICAL, BETA, "READ"),
    }


def test_it_grants_by_email_and_to_everyone(sandbox_world, oos):
    s3 = oos("alpha")
    s3.put_object(Bucket="alpha-exports", Key="e.json", Body=b"e")
    s3.put_object_acl(Bucket="alpha-exports", Key="e.json", GrantRead='emailAddress="gamma@sandbox.example"')
    assert oos("gamma").get_object(Bucket="alpha-exports", Key="e.json")["Body"].read() == b"e"
    url = oos("alpha").meta.endpoint_url + "/alpha-exports/e.json"
    assert requests.get(url, timeout=5).status_code == 403  # anonymous
    s3.put_object_acl(Bucket="alpha-exports", Key="e.json", ACL="public-read")
    assert requests.get(url, timeout=5).content == b"e"


def test_it_refuses_a_wrong_secret(sandbox_world, oos):
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("alpha", secret_key="W" * 40).list_buckets()
    assert code_of(excinfo) == "SignatureDoesNotMatch"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_it_refuses_keys_of_another_region(sandbox_world, oos):
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("delta", region="eu-west-2").list_buckets()
    assert code_of(excinfo) == "InvalidAccessKeyId"


def test_it_accepts_presigned_uploads(sandbox_world, oos):
    url = oos("alpha").generate_presigned_url(
        "put_object", Params={"Bucket": "alpha-exports", "Key": "up.bin"}, ExpiresIn=60
    )
    assert requests.put(url, data=b"abc", timeout=5).status_code == 200
    assert oos("alpha").get_object(Bucket="alpha-exports", Key="up.bin")["Body"].read() == b"abc"


def test_it_refuses_a_presigned_link_to_an_object_the_signer_cannot_read(sandbox_world, oos):
    oos("alpha").put_object(Bucket="alpha-exports", Key="private", Body=b"p")
    url = oos("beta").generate_presigned_url("get_object", Params={"Bucket": "alpha-exports", "Key": "private"})
    assert requests.get(url, timeout=5).status_code == 403


def test_it_answers_s3_xml_errors(sandbox_world, oos):
    answer = requests.get(oos("alpha").meta.endpoint_url + "/no-such-bucket/x", timeout=5)
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == "application/xml"
    assert answer.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code>')
    assert "<RequestId>" in answer.text
