"""The PNG of `bench_transfers`: how the cost of a transfer grows with the number of transfers.
Four panels against the number of concurrent transfers: OAPI calls, worker CPU seconds and wall
seconds per transfer, and the worst detection lag p95; for the portal with shared source images,
with a distinct image per transfer and with a release to many accounts, and the peer pattern
(each transfer polled on its own) where it ran."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

PATTERNS = {"portal": ("tab:blue", "o", "portal, shared images"),
            "portal_distinct": ("tab:green", "^", "portal, an image per transfer"),
            "portal_fleet": ("tab:purple", "D", "portal, a release to many accounts"),
            "peer": ("tab:red", "s", "peer pattern (one waiter per transfer)")}


def _worst_p95(run: dict) -> float | None:
    values = [d["p95"] for d in run["detection_lag_seconds"].values() if d.get("count")]
    return max(values) if values else None


def _series(runs: list[dict], pattern: str, value) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for entry in sorted(runs, key=lambda e: e["transfers"]):
        if pattern in entry and value(entry[pattern]) is not None:
            xs.append(entry["transfers"])
            ys.append(value(entry[pattern]))
    return xs, ys


PANELS = (
    ("OAPI calls per completed transfer", lambda r: r["oapi_calls_per_transfer"]),
    ("worker CPU seconds per transfer", lambda r: r["worker_cpu_seconds_per_transfer"]),
    ("wall seconds per transfer (phase wall / n)", lambda r: r["wall_seconds"] / max(1, r["transfers"])),
    ("worst detection lag p95, seconds", _worst_p95),
)


def draw(result: dict, path: Path) -> Path:
    runs = result["runs"]
    o = result["options"]
    # A bare Figure, not pyplot: no GUI backend to pick and no global figure to close.
    fig = Figure(figsize=(13, 3.8), dpi=100)
    axes = fig.subplots(1, len(PANELS))
    for ax, (label, value) in zip(axes, PANELS, strict=True):
        for pattern, (color, marker, name) in PATTERNS.items():
            xs, ys = _series(runs, pattern, value)
            if xs:
                ax.plot(xs, ys, marker=marker, color=color, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("concurrent transfers")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].axhline(2.2, color="tab:blue", linestyle=":", alpha=0.6, label="goal 2.2 (shared)")
    axes[0].axhline(3.05, color="tab:green", linestyle=":", alpha=0.6, label="goal 3.05 (distinct)")
    axes[3].axhline(float(o["sweep_max"]) + 1, color="gray", linestyle=":", label="sweep interval + 1 s")
    axes[0].set_yscale("log")  # the peer pattern's twenty calls beside the portal's two
    axes[3].set_yscale("log")
    for ax in axes:
        ax.legend(fontsize=6)
    # Results written before the spread existed have no `export_spread`.
    spread = f" + up to {o['export_spread']}s" if o.get("export_spread") else ""
    rate = next((r["value"] for r in result.get("settings", []) if r.get("where") == "workers"
                 and r.get("setting") == "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND"), None)
    pace = f", {rate} calls/s per account, sweeps {o['sweep_min']}-{o['sweep_max']} s" if rate else ""
    fig.suptitle(f"bench_transfers: {o['workers']} workers, {float(o['latency']) * 1000:.0f} ms latency, "
                 f"export {o['export_seconds']}s{spread}, import {o['import_seconds']}s{pace}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
