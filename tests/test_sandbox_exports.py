"""Exports in the sandbox: task lifecycle, what lands in the bucket, the manifest, failures,
cancellation, ownership rules and paging of ReadImageExportTasks."""

import hashlib
import json
import re
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.fixtures_sandbox import error_code, export, manifest_key, read_task

ALPHA = "111122223333"


def image_id(sandbox, name):
    return next(i.image_id for i in sandbox.world.images.values() if i.name == name)


def start_export(gw, image, bucket, prefix="exports/"):
    return gw.CreateImageExportTask(
        ImageId=image, OsuExport={"DiskImageFormat": "qcow2", "OsuBucket": bucket, "OsuPrefix": prefix}
    )["ImageExportTask"]


def test_it_reports_a_queued_task_appending_the_image_id_to_the_prefix(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    task = start_export(oapi("alpha"), web, "alpha-exports", prefix="share-7/")
    assert re.fullmatch(r"image-export-[0-9a-f]{8}", task["TaskId"])
    assert task["State"] == "pending/queued"
    assert task["Progress"] == 0
    assert task["ImageId"] == web
    assert task["OsuExport"] == {
        "DiskImageFormat": "qcow2",
        "OsuBucket": "alpha-exports",
        "OsuPrefix": f"share-7/{web}/",
    }


def test_it_progresses_then_completes(sandbox_world, oapi, wait_for):
    sandbox_world.set_durations(export_seconds=1.0)
    gw = oapi("alpha")
    task = start_export(gw, image_id(sandbox_world, "alpha-web-2025.01"), "alpha-exports")
    seen = []

    def observe():
        current = read_task(gw, task["TaskId"])
        seen.append((current["State"], current["Progress"]))
        return current

    final = wait_for(observe, lambda t: t["State"] == "completed")
    assert final["Progress"] == 100
    states = [state for state, _ in seen]
    assert states[0] == "pending/queued"
    progress = [p for state, p in seen if state == "pending"]
    assert progress and all(0 < p < 100 for p in progress)
    assert progress == sorted(progress)


def test_it_writes_snapshots_and_a_manifest_under_the_prefix(sandbox_world, oapi, oos, wait_for):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    task = export(oapi("alpha"), web, "alpha-exports", wait_for, prefix="share-7/")
    assert task["State"] == "completed"
    keys = {o["Key"] for o in oos("alpha").list_objects_v2(Bucket="alpha-exports", Prefix="share-7/")["Contents"]}
    snapshot = sandbox_world.world.images[web].snapshots[0].snapshot_id
    assert keys == {f"share-7/{web}/manifest.json", f"share-7/{web}/{snapshot}.qcow2"}
    assert task["OsuExport"]["OsuManifestUrl"].endswith(f"/alpha-exports/share-7/{web}/manifest.json")


def test_its_manifest_embeds_snapshot_urls_valid_seven_days_from_completion(sandbox_world, oapi, oos, wait_for):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    task = export(oapi("alpha"), web, "alpha-exports", wait_for)
    body = oos("alpha").get_object(Bucket="alpha-exports", Key=manifest_key(task))["Body"].read()
    manifest = json.loads(body)
    assert manifest["Version"] == "1"
    assert manifest["Image"]["ImageId"] == web
    assert manifest["Image"]["ImageName"] == "alpha-web-2025.01"
    completed = datetime.fromisoformat(manifest["CreationDate"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(manifest["ExpirationDate"].replace("Z", "+00:00"))
    assert expires - completed == timedelta(days=7)
    [snapshot] = manifest["Snapshots"]
    query = parse_qs(urlsplit(snapshot["Url"]).query)
    assert query["X-Amz-Expires"] == ["604800"]
    assert query["X-Amz-Date"] == [completed.strftime("%Y%m%dT%H%M%SZ")]
    # Anyone holding the URL can download the snapshot: it is a bearer secret.
    download = requests.get(snapshot["Url"], timeout=5)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == snapshot["Sha256"]


def test_it_fails_the_seeded_broken_image_with_a_comment(sandbox_world, oapi, wait_for):
    task = export(oapi("alpha"), image_id(sandbox_world, "alpha-legacy-broken"), "alpha-exports", wait_for)
    assert task["State"] == "failed"
    assert "not readable" in task["Comment"]


def test_it_fails_an_export_on_demand(sandbox_world, oapi, oos, wait_for):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    sandbox_world.faults.fail_export(web, comment="Disk read error (injected)")
    task = export(oapi("alpha"), web, "alpha-exports", wait_for)
    assert (task["State"], task["Comment"]) == ("failed", "Disk read error (injected)")
    assert "Contents" not in oos("alpha").list_objects_v2(Bucket="alpha-exports")


def test_it_refuses_to_export_a_shared_image(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        start_export(oapi("beta"), image_id(sandbox_world, "alpha-db-base"), "beta-exports")
    assert error_code(excinfo) == "4045"


def test_it_refuses_to_export_a_public_image(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        start_export(oapi("alpha"), image_id(sandbox_world, "Ubuntu-24.04-2025.01.15-0"), "alpha-exports")
    assert excinfo.value.response.status_code == 400
    assert error_code(excinfo) == "4045"


def test_it_exports_a_copy_of_a_public_image(sandbox_world, oapi, wait_for):
    gw = oapi("alpha")
    copy = gw.CreateImage(
        SourceImageId=image_id(sandbox_world, "Ubuntu-24.04-2025.01.15-0"),
        SourceRegionName="eu-west-2",
        ImageName="ubuntu-for-export",
    )["Image"]
    with pytest.raises(requests.HTTPError) as excinfo:
        start_export(gw, copy["ImageId"], "alpha-exports")  # still pending
    assert error_code(excinfo) == "6001"
    wait_for(
        lambda: gw.ReadImages(Filters={"ImageIds": [copy["ImageId"]]})["Images"][0]["State"],
        lambda state: state == "available",
    )
    assert export(gw, copy["ImageId"], "alpha-exports", wait_for)["State"] == "completed"


def test_it_hides_images_the_account_cannot_see(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        start_export(oapi("gamma"), image_id(sandbox_world, "beta-app-1.0"), "gamma-exports")
    assert error_code(excinfo) == "5023"


@pytest.mark.parametrize("bucket", ["beta-exports", "no-such-bucket"])
def test_it_needs_a_bucket_of_the_account(sandbox_world, oapi, bucket):
    with pytest.raises(requests.HTTPError) as excinfo:
        start_export(oapi("alpha"), image_id(sandbox_world, "alpha-web-2025.01"), bucket)
    assert error_code(excinfo) == "4002"


def test_it_refuses_an_unknown_disk_format(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").CreateImageExportTask(
            ImageId=image_id(sandbox_world, "alpha-web-2025.01"),
            OsuExport={"DiskImageFormat": "vmdk", "OsuBucket": "alpha-exports"},
        )
    assert error_code(excinfo) == "4047"


def test_it_cancels_only_a_queued_task(sandbox_world, oapi, wait_for):
    sandbox_world.set_durations(export_seconds=0.5)
    gw = oapi("alpha")
    web = image_id(sandbox_world, "alpha-web-2025.01")
    queued = start_export(gw, web, "alpha-exports")
    gw.DeleteExportTask(ExportTaskId=queued["TaskId"])
    assert read_task(gw, queued["TaskId"])["State"] == "cancelled"

    running = start_export(gw, web, "alpha-exports", prefix="again/")
    wait_for(lambda: read_task(gw, running["TaskId"]), lambda t: t["State"] != "pending/queued")
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.DeleteExportTask(ExportTaskId=running["TaskId"])
    assert error_code(excinfo) == "6003"
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.DeleteExportTask(ExportTaskId="image-export-00000000")
    assert error_code(excinfo) == "5058"


def test_it_pages_export_tasks(sandbox_world, oapi):
    gw = oapi("alpha")
    web = image_id(sandbox_world, "alpha-web-2025.01")
    started = [start_export(gw, web, "alpha-exports", prefix=f"p{n}/")["TaskId"] for n in range(5)]
    pages, token = [], None
    while True:
        params = {"ResultsPerPage": 2, "Filters": {"TaskIds": started}}
        if token:
            params["NextPageToken"] = token
        page = gw.ReadImageExportTasks(**params)
        pages.append([t["TaskId"] for t in page["ImageExportTasks"]])
        token = page.get("NextPageToken")
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [task for page in pages for task in page] == started
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.ReadImageExportTasks(ResultsPerPage=0)
    assert error_code(excinfo) == "4047"
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.ReadImageExportTasks(ResultsPerPage=2, NextPageToken="bm90LWEtdG9rZW4=")
    assert error_code(excinfo) == "4091"


def test_it_only_shows_the_accounts_own_tasks(sandbox_world, oapi):
    task = start_export(oapi("alpha"), image_id(sandbox_world, "alpha-web-2025.01"), "alpha-exports")
    assert oapi("beta").ReadImageExportTasks(Filters={"TaskIds": [task["TaskId"]]})["ImageExportTasks"] == []


def test_it_tags_an_export_task(sandbox_world, oapi):
    gw = oapi("alpha")
    task = start_export(gw, image_id(sandbox_world, "alpha-web-2025.01"), "alpha-exports")
    gw.CreateTags(ResourceIds=[task["TaskId"]], Tags=[{"Key": "share", "Value": "7"}])
    assert read_task(gw, task["TaskId"])["Tags"] == [{"Key": "share", "Value": "7"}]


def test_it_counts_calls_per_account_and_action(sandbox_world, oapi, wait_for):
    export(oapi("alpha"), image_id(sandbox_world, "alpha-web-2025.01"), "alpha-exports", wait_for)
    counts = sandbox_world.counters(ALPHA)
    assert counts["CreateImageExportTask"] == 1
    assert counts["ReadImageExportTasks"] >= 1
    assert "CreateImage" not in counts


def test_it_exports_into_the_bucket_of_the_osu_api_key(sandbox_world, oapi, oos, wait_for):
    gw = oapi("alpha")
    beta = sandbox_world.account("beta")
    task = gw.CreateImageExportTask(
        ImageId=image_id(sandbox_world, "alpha-web-2025.01"),
        OsuExport={
            "DiskImageFormat": "raw",
            "OsuBucket": "beta-exports",
            "OsuApiKey": {"ApiKeyId": beta["access_key"], "SecretKey": beta["secret_key"]},
        },
    )["ImageExportTask"]
    final = wait_for(lambda: read_task(gw, task["TaskId"]), lambda t: t["State"] == "completed")
    assert oos("beta").head_object(Bucket="beta-exports", Key=manifest_key(final))
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.CreateImageExportTask(
            ImageId=image_id(sandbox_world, "alpha-web-2025.01"),
            OsuExport={
                "DiskImageFormat": "raw",
                "OsuBucket": "beta-exports",
                "OsuApiKey": {"ApiKeyId": beta["access_key"], "SecretKey": "WRONG"},
            },
        )
    assert error_code(excinfo) == "4000"


def start_exports(sandbox, gw, count):
    """Start `count` exports of alpha's web image at once; (task id, duration the sandbox gave it)."""
    web = image_id(sandbox, "alpha-web-2025.01")
    started = [start_export(gw, web, "alpha-exports", prefix=f"spread-{n}/")["TaskId"] for n in range(count)]
    return [(task, sandbox.world.tasks[task].duration) for task in started]


def test_a_spread_gives_exports_started_together_their_own_durations_within_it(sandbox_world, oapi):
    sandbox_world.set_durations(export_seconds=5.0, export_spread_seconds=10.0)
    durations = [duration for _, duration in start_exports(sandbox_world, oapi("alpha"), 8)]
    assert all(5.0 <= duration < 15.0 for duration in durations)
    assert len(set(durations)) == len(durations)
    assert max(durations) - min(durations) > 2.0  # spread over the window, not bunched at one end


def test_a_spread_gives_a_task_id_the_same_duration_on_every_run(sandbox_world, oapi):
    sandbox_world.set_durations(export_seconds=5.0, export_spread_seconds=10.0)
    first = start_exports(sandbox_world, oapi("alpha"), 4)
    sandbox_world.reset()  # the seeded world again: the same task ids come back
    sandbox_world.set_durations(export_seconds=5.0, export_spread_seconds=10.0)
    assert start_exports(sandbox_world, oapi("alpha"), 4) == first


def test_without_a_spread_every_export_takes_export_seconds(sandbox_world, oapi):
    sandbox_world.set_durations(export_seconds=5.0)
    assert sandbox_world.durations["export_spread_seconds"] == 0.0
    assert {duration for _, duration in start_exports(sandbox_world, oapi("alpha"), 4)} == {5.0}


def test_exports_started_together_complete_as_far_apart_as_their_durations(sandbox_world, oapi, wait_for):
    sandbox_world.set_durations(export_seconds=0.1, export_spread_seconds=1.0)
    gw = oapi("alpha")
    (first, first_duration), (second, second_duration) = start_exports(sandbox_world, gw, 2)
    for task in (first, second):
        wait_for(lambda task=task: read_task(gw, task), lambda t: t["State"] == "completed", timeout=3)
    tasks = sandbox_world.world.tasks
    apart = (tasks[second].completed_at - tasks[first].completed_at).total_seconds()
    started_apart = tasks[second].started - tasks[first].started
    assert apart == pytest.approx(second_duration - first_duration + started_apart, abs=0.05)
