"""bench_transfers, smoke-sized: five transfers the portal's way and the peers' way, on real worker
processes against the sandbox. Checks the report's shape and that every transfer completed; the
figures themselves are the benchmark's business, not a test's."""

import pytest

from bench import transfers as bench

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_small_benchmark_completes_every_transfer_both_ways_and_reports_each_figure(settings, tmp_path):
    for name in ("OMIPORTAL_OUTSCALE_ENDPOINTS", "OMIPORTAL_SWEEP_MIN_SECONDS", "OMIPORTAL_SWEEP_MAX_SECONDS",
                 "OMIPORTAL_RECONCILE_GRACE_SECONDS", "OMIPORTAL_RECONCILE_EVERY_SECONDS", "EMAIL_BACKEND"):
        setattr(settings, name, getattr(settings, name))  # restored after the test; the benchmark changes them
    options = bench.Options(sizes=[5], workers=1, latency=0.01, export_seconds=1.5, export_spread=1.0,
                            import_seconds=1.0, sweep_min=0.3, sweep_max=1.0, tuned=True, timeout=60, out_dir=tmp_path,
                            chart=tmp_path / "chart.png")

    result = bench.run(options, log=lambda line: None)

    (entry,) = result["runs"]
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
    assert result["options"]["export_spread"] == 1.0
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert "OAPI calls / transfer" in bench.table(result)
    # Each setting that differs from the shipped one is reported with its reason.
    changed = {r["setting"]: r for r in result["settings"] if r["where"] == "workers" and r["changed"]}
    assert changed["OMIPORTAL_SWEEP_MIN_SECONDS"]["value"] == 0.3
    assert changed["OMIPORTAL_RECONCILE_GRACE_SECONDS"]["value"] == 300.0
    assert all(r["reason"] for r in changed.values())
