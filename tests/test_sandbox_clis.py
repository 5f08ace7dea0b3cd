"""The real command-line programs, unchanged, against the sandbox: the commands OUTSCALE's guide
("Importing an OMI from a Bucket") gives a recipient, as the portal shows them.

    aws ec2 register-image --image-location <manifest URL> --name <name> --endpoint <FCU endpoint>
    osc-cli api CreateImage --FileLocation <manifest URL> --ImageName <name>

Both run from the virtualenv's bin (requirements-dev.txt) as subprocesses, with a temporary HOME:
aws reads its keys from the environment and its settings from ~/.aws/config; osc-cli reads
~/.osc/config.json, whose profile may name an `endpoint` (scheme included, so plain http on
loopback works) and the `region_name` its signatures are scoped to.

aws-cli v1 fetches any parameter that starts with http:// or https:// and sends the page instead
(its `cli_follow_urlparam` setting, true by default in v1 and gone in v2), so `--image-location`
would carry the manifest's content, not its URL. The guide's command works as printed once
`cli_follow_urlparam = false` is set (`aws configure set cli_follow_urlparam false`), as here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.seed import canonical_id_for
from tests.fixtures_sandbox import export, manifest_key

BIN = Path(sys.executable).parent
ALPHA, BETA, DELTA = "111122223333", "222233334444", "444455556666"


@pytest.fixture
def exported(sandbox_world, oapi, wait_for):
    web = next(i.image_id for i in sandbox_world.world.images.values() if i.name == "alpha-web-2025.01")
    task = export(oapi("alpha"), web, "alpha-exports", wait_for, prefix="cli/")
    assert task["State"] == "completed"
    return task


@pytest.fixture
def link(exported, oos):
    """A pre-signed manifest link, as the portal hands it over."""
    return oos("alpha").generate_presigned_url(
        "get_object", Params={"Bucket": "alpha-exports", "Key": manifest_key(exported)}, ExpiresIn=3600
    )


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def aws(sandbox, tmp_path, account: str, *args: str) -> subprocess.CompletedProcess:
    entry = sandbox.account(account)
    (tmp_path / ".aws").mkdir(exist_ok=True)
    (tmp_path / ".aws" / "config").write_text("[default]\ncli_follow_urlparam = false\n")
    env = {
        "PATH": str(BIN),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": entry["access_key"],
        "AWS_SECRET_ACCESS_KEY": entry["secret_key"],
        "AWS_DEFAULT_REGION": entry["region"],
    }
    return run([str(BIN / "aws"), *args], env)


def osc_cli(sandbox, tmp_path, account: str, *args: str) -> subprocess.CompletedProcess:
    entry = sandbox.account(account)
    api = sandbox.endpoints()[entry["region"]]["api"]
    profile = {
        "access_key": entry["access_key"],
        "secret_key": entry["secret_key"],
        "endpoint": api.rsplit("/api/", 1)[0],  # osc-cli appends /api/latest/<Action>
        "region_name": entry["region"],
    }
    (tmp_path / ".osc").mkdir(exist_ok=True)
    (tmp_path / ".osc" / "config.json").write_text(json.dumps({"default": profile}))
    return run([str(BIN / "osc-cli"), *args], {"PATH": str(BIN), "HOME": str(tmp_path)})


@pytest.mark.parametrize("endpoint_option", ["--endpoint", "--endpoint-url"])
def test_aws_registers_an_image_from_a_presigned_link_through_fcu(
    sandbox_world, oapi, link, tmp_path, endpoint_option
):
    fcu = sandbox_world.endpoints()["us-east-2"]["fcu"]
    name = f"by-aws{endpoint_option.count('-')}"
    done = aws(sandbox_world, tmp_path, "delta", "ec2", "register-image",
               "--image-location", link, "--name", name, endpoint_option, fcu)
    assert done.returncode == 0, done.stderr
    image_id = json.loads(done.stdout)["ImageId"]
    image = oapi("delta").ReadImages(Filters={"ImageIds": [image_id]})["Images"][0]
    assert (image["ImageName"], image["AccountId"], image["FileLocation"]) == (name, DELTA, link)
    assert sandbox_world.created(DELTA) == {"RegisterImage": {name: 1}}

    described = aws(sandbox_world, tmp_path, "delta", "ec2", "describe-images", "--image-ids", image_id,
                    "--endpoint-url", fcu)
    assert described.returncode == 0, described.stderr
    [seen] = json.loads(described.stdout)["Images"]
    assert (seen["ImageId"], seen["Name"], seen["OwnerId"]) == (image_id, name, DELTA)
    assert seen["State"] in ("pending", "available")


def test_aws_is_refused_a_forged_link_and_a_taken_name(sandbox_world, link, tmp_path):
    fcu = sandbox_world.endpoints()["us-east-2"]["fcu"]
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    done = aws(sandbox_world, tmp_path, "delta", "ec2", "register-image",
               "--image-location", forged, "--name", "forged", "--endpoint", fcu)
    assert done.returncode != 0
    assert "(InvalidManifest)" in done.stderr
    assert sandbox_world.created(DELTA) == {}

    taken = aws(sandbox_world, tmp_path, "delta", "ec2", "register-image",
                "--image-location", link, "--name", "delta-api-2.3", "--endpoint", fcu)
    assert "(InvalidAMIName.Duplicate)" in taken.stderr


def test_aws_dry_run_answers_as_ec2_does(sandbox_world, link, tmp_path):
    fcu = sandbox_world.endpoints()["us-east-2"]["fcu"]
    done = aws(sandbox_world, tmp_path, "delta", "ec2", "register-image", "--dry-run",
               "--image-location", link, "--name", "dry", "--endpoint", fcu)
    assert "(DryRunOperation)" in done.stderr
    assert sandbox_world.created(DELTA) == {}
    assert sandbox_world.counters(DELTA) == {"RegisterImage:DryRun": 1}


def test_aws_keys_of_another_region_are_refused(sandbox_world, link, tmp_path):
    fcu = sandbox_world.endpoints()["eu-west-2"]["fcu"]  # delta lives in us-east-2
    done = aws(sandbox_world, tmp_path, "delta", "ec2", "register-image",
               "--image-location", link, "--name", "elsewhere", "--endpoint", fcu)
    assert "(AuthFailure)" in done.stderr


def test_osc_cli_creates_an_image_from_a_presigned_link(sandbox_world, oapi, link, tmp_path):
    done = osc_cli(sandbox_world, tmp_path, "delta", "api", "CreateImage",
                   "--FileLocation", link, "--ImageName", "by-osc-cli")
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)["Image"]
    assert (image["ImageName"], image["AccountId"]) == ("by-osc-cli", DELTA)
    assert oapi("delta").ReadImages(Filters={"ImageNames": ["by-osc-cli"]})["Images"][0]["ImageId"] == image["ImageId"]

    again = osc_cli(sandbox_world, tmp_path, "delta", "api", "CreateImage",
                    "--FileLocation", link, "--ImageName", "by-osc-cli")
    assert again.returncode != 0
    assert "9015" in again.stdout + again.stderr


def test_osc_cli_imports_an_unsigned_oos_path_only_while_an_acl_grants_it(sandbox_world, oapi, oos, exported, tmp_path):
    path = exported["OsuExport"]["OsuManifestUrl"]  # <oos endpoint>/<bucket>/<key>, no signature
    refused = osc_cli(sandbox_world, tmp_path, "beta", "api", "CreateImage", "--FileLocation", path,
                      "--ImageName", "by-acl")
    assert refused.returncode != 0 and "4074" in refused.stdout + refused.stderr

    s3 = oos("alpha")
    s3.put_object_acl(Bucket="alpha-exports", Key=manifest_key(exported), GrantRead=f"id={canonical_id_for('beta')}")
    done = osc_cli(sandbox_world, tmp_path, "beta", "api", "CreateImage", "--FileLocation", path,
                   "--ImageName", "by-acl")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["Image"]["AccountId"] == BETA

    s3.put_object_acl(Bucket="alpha-exports", Key=manifest_key(exported), ACL="private")
    revoked = osc_cli(sandbox_world, tmp_path, "beta", "api", "CreateImage", "--FileLocation", path,
                      "--ImageName", "by-acl-2")
    assert revoked.returncode != 0 and "4074" in revoked.stdout + revoked.stderr


def test_osc_cli_dry_run_creates_nothing(sandbox_world, link, tmp_path):
    done = osc_cli(sandbox_world, tmp_path, "delta", "api", "CreateImage", "--DryRun", "True",
                   "--FileLocation", link, "--ImageName", "dry-osc")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"ResponseContext"}
    assert sandbox_world.created(DELTA) == {}
