"""Fault switches of the sandbox: throttling, 5xx, lost responses, latency, hangs, targeting per
action, counters, and the loopback control endpoint."""

import json
import time
import urllib.error
import urllib.request

import botocore.exceptions
import pytest
import requests

from tests.fixtures_sandbox import error_code, oapi_error

ALPHA = "111122223333"


def image_id(sandbox, name):
    return next(i.image_id for i in sandbox.world.images.values() if i.name == name)


def copy_web(gw, sandbox, name="web-copy"):
    return gw.CreateImage(
        SourceImageId=image_id(sandbox, "alpha-web-2025.01"), SourceRegionName="eu-west-2", ImageName=name
    )


def alpha_images_named(gw, name):
    return gw.ReadImages(Filters={"ImageNames": [name], "AccountIds": [ALPHA]})["Images"]


def control(sandbox, path, data=None):
    request = urllib.request.Request(
        sandbox.control_url + path,
        data=None if data is None else json.dumps(data).encode(),
        method="GET" if data is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback URL built here
        return json.loads(answer.read())


@pytest.mark.parametrize("code, status", [("24", 429), ("25", 429), ("6", 503)])
def test_it_throttles_with_the_real_bodies(sandbox_world, oapi, code, status):
    sandbox_world.faults.configure(throttle_rate=1.0, throttle_codes=[code])
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").ReadAccounts()
    answer_status, body = oapi_error(excinfo)
    assert answer_status == status
    assert body["Errors"] == [{"Code": code, "Type": "AccessDenied", "Details": "Request rate exceeded."}]
    assert sandbox_world.counters(ALPHA) == {}  # rejected before the action ran


def test_it_targets_faults_at_given_actions(sandbox_world, oapi):
    sandbox_world.faults.configure(throttle_rate=1.0, actions={"CreateImage"})
    gw = oapi("alpha")
    assert gw.ReadImages(Filters={"AccountIds": [ALPHA]})["Images"]
    with pytest.raises(requests.HTTPError) as excinfo:
        copy_web(gw, sandbox_world)
    assert oapi_error(excinfo)[0] in (429, 503)
    assert alpha_images_named(gw, "web-copy") == []


def test_it_throttles_at_a_rate(sandbox_world, oapi):
    sandbox_world.faults.configure(throttle_rate=0.5, throttle_codes=["24"])
    outcomes = []
    for _ in range(40):
        try:
            oapi("alpha").ReadAccounts()
            outcomes.append("ok")
        except requests.HTTPError:
            outcomes.append("throttled")
    assert 5 < outcomes.count("throttled") < 35


def test_it_answers_server_errors_without_running_the_action(sandbox_world, oapi):
    sandbox_world.faults.configure(error_rate=1.0)
    with pytest.raises(requests.HTTPError) as excinfo:
        copy_web(oapi("alpha"), sandbox_world)
    status, body = oapi_error(excinfo)
    assert status == 500
    assert body["Errors"][0]["Type"] == "InternalError"
    sandbox_world.faults.reset()
    assert alpha_images_named(oapi("alpha"), "web-copy") == []


def test_a_lost_response_still_runs_the_action(sandbox_world, oapi):
    sandbox_world.faults.configure(lost_response_rate=1.0, actions={"CreateImage"})
    with pytest.raises(requests.HTTPError) as excinfo:
        copy_web(oapi("alpha"), sandbox_world)
    assert oapi_error(excinfo)[0] == 500
    assert len(alpha_images_named(oapi("alpha"), "web-copy")) == 1
    assert sandbox_world.counters(ALPHA)["CreateImage"] == 1


def test_a_dropped_connection_still_runs_the_action(sandbox_world, oapi):
    sandbox_world.faults.configure(lost_response_rate=1.0, lost_response_mode="drop", actions={"CreateImage"})
    with pytest.raises(requests.ConnectionError):
        copy_web(oapi("alpha"), sandbox_world)
    assert len(alpha_images_named(oapi("alpha"), "web-copy")) == 1


def test_the_sdk_retry_after_a_lost_response_meets_the_duplicate_name(sandbox_world, oapi):
    # osc-sdk-python retries a POST after a 5xx: the create already happened, so the retry gets
    # 9015. This is why the portal looks a deterministic name up before retrying (DESIGN §4).
    sandbox_world.faults.configure(lost_response_rate=1.0, actions={"CreateImage"})
    with pytest.raises(requests.HTTPError) as excinfo:
        copy_web(oapi("alpha", retries=1), sandbox_world)
    assert error_code(excinfo) == "9015"
    assert sandbox_world.counters(ALPHA)["CreateImage"] == 2
    assert len(alpha_images_named(oapi("alpha"), "web-copy")) == 1


def test_it_adds_latency(sandbox_world, oapi):
    sandbox_world.faults.configure(latency=0.3)
    started = time.monotonic()
    oapi("alpha").ReadAccounts()
    assert time.monotonic() - started >= 0.3


def test_a_hanging_oapi_call_outlasts_the_client(sandbox_world, oapi):
    sandbox_world.faults.configure(hang_seconds=0.6, actions={"ReadAccounts"})
    started = time.monotonic()
    oapi("alpha").ReadAccounts()
    assert time.monotonic() - started >= 0.6


def test_a_hanging_oos_call_hits_the_read_timeout(sandbox_world, oos):
    sandbox_world.faults.configure(hang_seconds=1.0, actions={"GetObject"}, oos=True)
    oos("alpha").put_object(Bucket="alpha-exports", Key="slow", Body=b"x")
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        oos("alpha", read_timeout=0.3).get_object(Bucket="alpha-exports", Key="slow")


def test_it_can_throttle_oos(sandbox_world, oos):
    sandbox_world.faults.configure(throttle_rate=1.0, oos=True, actions={"ListBuckets"})
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        oos("alpha").list_buckets()
    assert excinfo.value.response["Error"]["Code"] == "SlowDown"


def test_faults_leave_oos_alone_unless_asked(sandbox_world, oos):
    sandbox_world.faults.configure(throttle_rate=1.0)
    assert oos("alpha").list_buckets()["Buckets"]


def test_reset_clears_faults_and_counters(sandbox_world, oapi):
    oapi("alpha").ReadAccounts()
    sandbox_world.faults.configure(throttle_rate=1.0)
    sandbox_world.reset()
    assert sandbox_world.counters(ALPHA) == {}
    assert oapi("alpha").ReadAccounts()["Accounts"]


def test_it_rejects_nonsense_rates(sandbox_world):
    with pytest.raises(ValueError):
        sandbox_world.faults.configure(throttle_rate=2)
    with pytest.raises(ValueError):
        sandbox_world.faults.configure(throttle_codes=["1"])


# --- control endpoint ---------------------------------------------------------------------------


def test_the_control_endpoint_sets_faults(sandbox_world, oapi):
    state = control(sandbox_world, "/faults", {"throttle_rate": 1, "throttle_codes": ["25"], "actions": ["ReadImages"]})
    assert state["throttle_rate"] == 1.0 and state["actions"] == ["ReadImages"]
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").ReadImages()
    assert error_code(excinfo) == "25"
    assert oapi("alpha").ReadAccounts()
    control(sandbox_world, "/faults/reset", {})
    assert oapi("alpha").ReadImages()


def test_the_control_endpoint_reports_counters_and_the_world(sandbox_world, oapi):
    oapi("alpha").ReadAccounts()
    assert control(sandbox_world, f"/counters/{ALPHA}") == {"ReadAccounts": 1}
    described = control(sandbox_world, "/describe")
    assert set(described["regions"]) == set(sandbox_world.endpoints())
    control(sandbox_world, "/reset", {})
    assert control(sandbox_world, f"/counters/{ALPHA}") == {}


def test_the_control_endpoint_fails_exports_and_changes_durations(sandbox_world, oapi, wait_for):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    control(sandbox_world, "/faults/fail-export", {"image_id": web, "comment": "boom"})
    assert control(sandbox_world, "/durations", {"export_seconds": 0.1})["export_seconds"] == 0.1
    gw = oapi("alpha")
    task = gw.CreateImageExportTask(ImageId=web, OsuExport={"DiskImageFormat": "raw", "OsuBucket": "alpha-exports"})
    final = wait_for(
        lambda: gw.ReadImageExportTasks(Filters={"TaskIds": [task["ImageExportTask"]["TaskId"]]})["ImageExportTasks"][
            0
        ],
        lambda t: t["State"] in ("completed", "failed"),
    )
    assert (final["State"], final["Comment"]) == ("failed", "boom")


def test_the_control_endpoint_rejects_bad_input(sandbox_world):
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        control(sandbox_world, "/faults", {"throttle_rate": "lots"})
    assert excinfo.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        control(sandbox_world, "/nowhere")
    assert excinfo.value.code == 404


def test_created_counts_the_creates_that_made_something_by_name(sandbox_world, oapi):
    # The SDK's retry after a lost answer is a second CreateImage call but not a second image:
    # counters() sees two calls, created() one image under that name (the fault run's check).
    sandbox_world.faults.configure(lost_response_rate=1.0, actions={"CreateImage"})
    with pytest.raises(requests.HTTPError):
        copy_web(oapi("alpha", retries=1), sandbox_world)
    sandbox_world.faults.reset()
    copy_web(oapi("alpha"), sandbox_world, name="web-copy-2")
    oapi("alpha").CreateImageExportTask(ImageId=image_id(sandbox_world, "alpha-web-2025.01"), OsuExport={
        "DiskImageFormat": "qcow2", "OsuBucket": "alpha-exports", "OsuPrefix": "omiportal/x/"})
    assert sandbox_world.counters(ALPHA)["CreateImage"] == 3
    expected = {"CreateImage": {"web-copy": 1, "web-copy-2": 1}, "CreateImageExportTask": {"omiportal/x/": 1}}
    assert sandbox_world.created(ALPHA) == expected
    assert control(sandbox_world, f"/created/{ALPHA}") == expected
    control(sandbox_world, "/reset", {})
    assert sandbox_world.created(ALPHA) == {}
