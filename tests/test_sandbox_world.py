"""The seeded world, the Python interface, and the `manage.py sandbox` command."""

import json
import re
import urllib.request

import pytest
from django.core.management import call_command

from outscale.regions import REGIONS
from sandbox.management.commands.sandbox import sandbox_from_options
from sandbox.server import Sandbox


def test_it_serves_every_region_on_its_own_ports(sandbox_world):
    endpoints = sandbox_world.endpoints()
    assert list(endpoints) == list(REGIONS)
    for entry in endpoints.values():
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", entry["api"])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", entry["oos"])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", entry["fcu"])
    ports = [e["api"].split(":")[2].split("/")[0] for e in endpoints.values()] + [
        e[service].rsplit(":", 1)[1] for e in endpoints.values() for service in ("oos", "fcu")
    ]
    assert len(set(ports)) == 15
    assert sorted(sandbox_world.oos_hosts()) == sorted(e["oos"][len("http://") :] for e in endpoints.values())


def test_it_seeds_accounts_in_several_regions(sandbox_world):
    described = sandbox_world.describe()
    customers = [a for a in described["accounts"] if not a["publisher"]]
    assert len(customers) >= 4
    assert len({a["region"] for a in customers}) >= 2
    for account in described["accounts"]:
        assert re.fullmatch(r"\d{12}", account["account_id"])
        assert re.fullmatch(r"[A-Z0-9]{20}", account["access_key"])
        assert re.fullmatch(r"[A-Z0-9]{40}", account["secret_key"])
        assert account["email"].endswith("@sandbox.example")
        assert account["bucket"]
    assert described["control"].startswith("http://127.0.0.1:")
    assert json.dumps(described)


def test_it_seeds_owned_shared_public_and_failing_images(sandbox_world):
    kinds = {(a["name"], i["name"]): i["kind"] for a in sandbox_world.describe()["accounts"] for i in a["images"]}
    assert kinds[("alpha", "alpha-web-2025.01")] == "owned"
    assert kinds[("beta", "alpha-db-base")] == "shared-with"
    assert kinds[("beta", "Ubuntu-24.04-2025.01.15-0")] == "public"
    assert kinds[("delta", "Debian-12-2025.01.15-0")] == "public"
    assert any(image.export_failure for image in sandbox_world.world.images.values())


def test_it_seeds_a_bucket_per_account(sandbox_world, oos):
    for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
        bucket = sandbox_world.account(name)["bucket"]
        oos(name).head_bucket(Bucket=bucket)


def test_its_ids_and_keys_are_the_same_on_every_run():
    first, second = Sandbox(base_port=18700), Sandbox(base_port=18700)
    assert first.describe() == second.describe()


def test_fixed_ports_follow_the_base_port():
    described = Sandbox(base_port=8700).describe()
    assert described["control"] == "http://127.0.0.1:8700"
    assert described["regions"]["eu-west-2"] == {
        "api": "http://127.0.0.1:8701/api/v1", "oos": "http://127.0.0.1:8711", "fcu": "http://127.0.0.1:8721"
    }
    assert described["regions"]["ap-northeast-1"]["oos"] == "http://127.0.0.1:8715"


def test_the_command_describes_the_sandbox(capsys, tmp_path):
    target = tmp_path / "sandbox.json"
    call_command("sandbox", "--describe", "--base-port", "8700", "--describe-file", str(target))
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(target.read_text())
    assert printed["regions"]["us-east-2"]["api"] == "http://127.0.0.1:8703/api/v1"
    assert {"account_id", "region", "access_key", "secret_key", "images"} <= set(printed["accounts"][0])


def test_the_command_line_sets_durations_and_faults():
    options = {
        "host": "127.0.0.1",
        "base_port": 0,
        "export_seconds": 2.0,
        "export_spread": 4.0,
        "import_seconds": 3.0,
        "copy_seconds": None,
        "throttle_rate": 0.3,
        "error_rate": 0.05,
        "lost_response_rate": 0.05,
        "latency": 0.1,
        "hang_seconds": 0.0,
        "fault_actions": "CreateImage, CreateImageExportTask",
        "faults_on_oos": False,
    }
    sb = sandbox_from_options(options)
    assert sb.durations == {
        "export_seconds": 2.0,
        "export_spread_seconds": 4.0,
        "import_seconds": 3.0,
        "copy_seconds": 1.0,
    }
    faults = sb.faults.snapshot()
    assert (faults["throttle_rate"], faults["error_rate"], faults["lost_response_rate"]) == (0.3, 0.05, 0.05)
    assert faults["latency"] == 0.1
    assert faults["actions"] == ["CreateImage", "CreateImageExportTask"]


def post_durations(sandbox, data):
    request = urllib.request.Request(sandbox.control_url + "/durations", data=json.dumps(data).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback URL built here
        return json.loads(answer.read())


def test_the_export_spread_is_off_unless_given():
    assert Sandbox(base_port=18700).durations["export_spread_seconds"] == 0.0
    spread = Sandbox(base_port=18700, export_seconds=2.0, export_spread_seconds=3.0).describe()["durations"]
    assert (spread["export_seconds"], spread["export_spread_seconds"]) == (2.0, 3.0)


def test_the_control_endpoint_sets_the_export_spread_until_the_next_reset(sandbox_world):
    assert post_durations(sandbox_world, {"export_spread_seconds": 4})["export_spread_seconds"] == 4.0
    assert sandbox_world.durations["export_spread_seconds"] == 4.0
    with pytest.raises(ValueError, match="export_spread_seconds must be >= 0"):
        sandbox_world.set_durations(export_spread_seconds=-1)
    sandbox_world.reset()
    assert sandbox_world.durations["export_spread_seconds"] == 0.0
