"""bench_transfers, smoke-sized: five transfers on the export path the portal's way and the peers'
way (five more with an image each, and five as a release of two images to three accounts), and
four same-Region ones (grant → copy → revoke), on real worker processes against the sandbox.
Checks the report's shape, that every transfer completed, what each worker held and, in the same
Region, that it took no export and one launch permission added and removed per share; the
figures themselves are the benchmark's business, not a test's."""

import pytest

from bench import transfers as bench

pytestmark = pytest.mark.django_db(transaction=True)

CHANGED_BY_THE_BENCHMARK = ("OMIPORTAL_OUTSCALE_ENDPOINTS", "OMIPORTAL_SWEEP_MIN_SECONDS",
                            "OMIPORTAL_SWEEP_MAX_SECONDS", "OMIPORTAL_RECONCILE_GRACE_SECONDS",
                            "OMIPORTAL_RECONCILE_EVERY_SECONDS", "EMAIL_BACKEND")


def test_a_small_benchmark_completes_every_transfer_both_ways_and_reports_each_figure(settings, tmp_path):
    for name in CHANGED_BY_THE_BENCHMARK:
        setattr(settings, name, getattr(settings, name))  # restored after the test; the benchmark changes them
    options = bench.Options(sizes=[5], workers=1, latency=0.01, export_seconds=1.5, export_spread=1.0,
                            import_seconds=1.0, sweep_min=0.3, sweep_max=1.0, tuned=True, timeout=60, out_dir=tmp_path,
                            chart=tmp_path / "chart.png", workloads=["export", "export-distinct", "export-fleet"],
                            fleet_accounts=3)

    result = bench.run(options, log=lambda line: None)

    (entry,) = result["runs"]
    assert "same_region" not in entry
    for pattern in ("portal", "peer"):
        report = entry[pattern]
        assert report["completed"] == report["transfers"] == 5, report
        assert report["oapi_calls_per_transfer"] > 0
        assert {"CreateImage", "ReadImages"} <= set(report["oapi_calls_per_transfer_by_action"])
        assert set(report["detection_lag_seconds"]) == {"copy", "export", "import"}
        assert report["detection_lag_seconds"]["import"]["count"] == 5
        assert report["handoff_lag_seconds"]["count"] == 5
        assert {"p50", "p95", "max"} <= set(report["overhead_seconds"])
        assert report["worker_cpu_seconds_per_transfer"] > 0
        assert report["peak_calls_per_second_per_account"] > 0
    assert entry["goals"]["all_completed"]["met"]
    # A distinct image per transfer: one export each (none shared), every one completed.
    distinct = entry["portal_distinct"]
    assert distinct["completed"] == 5 and distinct["exports_created"] == 5, distinct
    assert distinct["oapi_calls_per_transfer_by_action"]["CreateImageExportTask"] == 1
    assert entry["goals_distinct"]["calls_per_transfer"]["goal"] == "<= 3.05"
    # A release to many accounts: each of its two images exported once, each account receiving
    # one import per image (3 accounts: the first two get both images, the third the first).
    fleet = entry["portal_fleet"]
    assert fleet["completed"] == 5 and fleet["exports_created"] == 2, fleet
    assert sorted(s["count"] for s in fleet["handoff_by_account"].values()) == [1, 2, 2]
    # Connections are reused (across phases too: a worker keeps its own, so a phase may open none).
    assert 0 <= fleet["oapi_connections"] < fleet["oapi_calls_total"]
    assert entry["goals_fleet"]["calls_per_transfer"]["goal"] == "<= 2.2"
    # The release's creates alone, from as many processes and threads, without the portal's work.
    floor = entry["creates_floor"]
    assert floor["creates"] == 5 and floor["errors"] == 0 and floor["answered_seconds"]["p95"] > 0, floor
    assert "the release's creates alone" in bench.table(result)
    # The cores kept busy while the hand-offs ran (a tick's rounding aside, within the machine's).
    busy = fleet["handoff_cpu"]
    assert busy["seconds"] > 0 and busy["workers_cores"] > 0 and busy["machine_cores"] <= busy["cores"] + 0.1, busy
    # Each kind of look: how many, how many saw nothing end first, how far apart at one account.
    looks = distinct["looks"]["ReadImageExportTasks"]
    assert looks["looks"] >= 1 and 0 <= looks["saw_nothing_new"] < looks["looks"] and looks["new_ends_per_look"] > 0
    assert "seconds_between_looks_at_an_account" in looks
    # What each worker held: memory, PostgreSQL connections (its threads' own), Redis.
    held = entry["portal"]["resources"]
    (worker,) = held["workers"].values()
    assert worker["peak_rss_mb"] > 20 and worker["peak_pg_connections"] >= 1, held
    assert held["redis_db_keys_bytes_peak_mb"] > 0 and held["redis_used_memory_peak_mb"] > 0
    assert [(row["transfers"], row["phase"]) for row in result["scaling"]] == [
        (5, "portal"), (5, "portal_distinct"), (5, "portal_fleet")]
    assert result["scaling"][0]["redis_db_mb_per_10k_transfers"] > 0
    assert result["options"]["export_spread"] == 1.0
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert "OAPI calls / transfer" in bench.table(result)
    # The hand-off's pace floor, at the account's shared allowance.
    parts = distinct["handoff_parts_seconds"]
    assert parts["floor"]["count"] == 5 and parts["pace_shared"]
    assert "hand-off floor p95 s" in bench.table(result)
    # Inside the sweeps that handed off, as the workers logged each part (transfers/services/laps.py).
    laps = distinct["handoff_laps_seconds"]
    assert laps["sweeps"] >= 1 and laps["imports"] == 5, laps
    assert {"look", "manifests", "completions", "starts", "written"} <= set(laps), laps
    assert 0 < laps["first_start_done"]["max"] < 30, laps
    assert "in the sweep: manifests p95 s" in bench.table(result)
    # Each setting that differs from the shipped one is reported with its reason.
    changed = {r["setting"]: r for r in result["settings"] if r["where"] == "workers" and r["changed"]}
    assert changed["OMIPORTAL_SWEEP_MIN_SECONDS"]["value"] == 0.3
    assert changed["OMIPORTAL_RECONCILE_GRACE_SECONDS"]["value"] == 300.0
    assert all(r["reason"] for r in changed.values())


def test_a_small_same_region_run_grants_copies_and_revokes_each_transfer_without_an_export(settings, tmp_path):
    for name in CHANGED_BY_THE_BENCHMARK:
        setattr(settings, name, getattr(settings, name))
    options = bench.Options(sizes=[4], workers=1, latency=0.01, import_seconds=1.0, copy_seconds=0.5, sweep_min=0.3,
                            sweep_max=1.0, tuned=True, timeout=60, out_dir=tmp_path, workloads=["same-region"])

    result = bench.run(options, log=lambda line: None)

    (entry,) = result["runs"]
    assert "portal" not in entry and "peer" not in entry
    report = entry["same_region"]
    assert report["completed"] == report["transfers"] == 4, report
    assert report["methods"] == {"launch_permission": 4}
    # No export: no task in the cloud, none on the shares.
    assert report["exports_created"] == 0 and report["export_rows"] == 0
    assert "CreateImageExportTask" not in report["oapi_calls"]
    # One UpdateImage addition and one removal per share, each grant removed, none left on the sources.
    assert report["grants"]["additions"] == report["grants"]["removals"] == 4
    assert report["oapi_calls"]["UpdateImage"] == 8
    assert report["grants"]["states"] == {"revoked": 4}
    assert report["permissions_left"] == {} and report["seeded_permissions_removed"] == {}
    assert report["oapi_calls"]["CreateImage"] == 4  # one copy each
    assert report["refused_by_the_cloud"] == {}
    # The time against the cloud's own copy time, and where it went, for every transfer.
    assert report["copy_seconds"]["count"] == 4 and 0.4 < report["copy_seconds"]["p50"] < 0.7
    assert report["over_copy_seconds"]["count"] == 4
    assert all(stage["count"] == 4 for stage in report["stages_seconds"].values()), report["stages_seconds"]
    goals = entry["same_region_goals"]
    assert all(goals[name]["met"] for name in ("all_completed", "no_export", "one_grant_one_removal",
                                                "no_permission_left")), goals
    assert "within_copy_plus_2s" in goals
    text = bench.table(result)
    assert "same Region (grant → copy → revoke)" in text and "end-to-end minus copy time" in text
