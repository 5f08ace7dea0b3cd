"""The PNG of `bench_transfers`: OAPI calls per transfer and detection lag against the number of
transfers, for the portal (batched sweeps) and the peer pattern (each transfer polled on its own)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


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


def draw(result: dict, path: Path) -> Path:
    runs = result["runs"]
    o = result["options"]
    # A bare Figure, not pyplot: no GUI backend to pick and no global figure to close.
    fig = Figure(figsize=(10, 4), dpi=100)
    left, right = fig.subplots(1, 2)
    styles = {"portal": ("tab:blue", "o", "portal (batched sweeps)"),
              "peer": ("tab:red", "s", "peer pattern (one waiter per transfer)")}
    for pattern, (color, marker, label) in styles.items():
        xs, ys = _series(runs, pattern, lambda r: r["oapi_calls_per_transfer"])
        if xs:
            left.plot(xs, ys, marker=marker, color=color, label=label)
        xs, ys = _series(runs, pattern, _worst_p95)
        if xs:
            right.plot(xs, ys, marker=marker, color=color, label=f"{pattern} p95 (worst phase)")
        xs, ys = _series(runs, pattern, lambda r: r["detection_lag_seconds"]["import"].get("p50"))
        if xs:
            right.plot(xs, ys, marker=marker, color=color, linestyle="--", alpha=0.6, label=f"{pattern} p50 (import)")
    left.axhline(2.2, color="gray", linestyle=":", label="goal 2.2")
    right.axhline(float(o["sweep_max"]) + 1, color="gray", linestyle=":", label="sweep interval + 1 s")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent transfers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("OAPI calls per completed transfer")
    right.set_ylabel("detection lag, seconds")
    right.set_yscale("log")
    # Results written before the spread existed have no `export_spread`.
    spread = f" + up to {o['export_spread']}s" if o.get("export_spread") else ""
    fig.suptitle(f"bench_transfers: {o['workers']} workers, {float(o['latency']) * 1000:.0f} ms latency, "
                 f"export {o['export_seconds']}s{spread}, import {o['import_seconds']}s", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
