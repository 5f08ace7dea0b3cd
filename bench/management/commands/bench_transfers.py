"""python manage.py bench_transfers [--transfers 1000] [--workers 2] [--latency 0.1] [--export-seconds 20]
[--export-spread 0] [--import-seconds 10] [--workload both|export,export-distinct,export-fleet]
[--fleet-accounts 200] [--tuned] [--no-peer]
[--chart docs/performance/transfers.png]

A benchmark on loopback (not a test): the sandbox, a Redis and N RQ workers run the transfers the
portal's way (batched sweeps) and the peers' way (each transfer polled on its own) on the export
path, and same-Region transfers (grant → copy → revoke), and it prints calls per transfer,
detection and hand-off lag, overhead and CPU, and the same-Region time against the copy time. It
runs at the settings that ship unless told `--tuned` (sweeps 1-5 s, grace 300 s, 50 calls/s) or
`--sweep-min`/`--sweep-max`, and prints the settings in force, each changed one with its reason.
Point DATABASE_URL at a throwaway database; see bench/transfers.py.
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bench import chart, load, workloads
from bench import transfers as bench


class Command(BaseCommand):
    help = "Transfer benchmark: OAPI calls and lags of batched polling against per-transfer polling (loopback)."

    def add_arguments(self, parser):
        parser.add_argument("--transfers", default="1000",
                            help="number of concurrent transfers; a comma-separated list runs each size in turn")
        parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
        parser.add_argument("--latency", type=float, default=0.1, help="latency the sandbox adds to each call (s)")
        parser.add_argument("--export-seconds", type=float, default=20, help="sandbox export duration")
        parser.add_argument("--export-spread", type=float, default=0,
                            help="seconds over which export durations are spread (deterministic per task)")
        parser.add_argument("--import-seconds", type=float, default=10, help="sandbox import duration")
        parser.add_argument("--copy-seconds", type=float, default=None, help="sandbox copy duration (import / 3)")
        parser.add_argument("--sweep-min", type=float, default=None,
                            help="OMIPORTAL_SWEEP_MIN_SECONDS, the peer interval too (default: as shipped; 1 --tuned)")
        parser.add_argument("--sweep-max", type=float, default=None,
                            help="OMIPORTAL_SWEEP_MAX_SECONDS (default: as shipped; 5 with --tuned)")
        parser.add_argument("--tuned", action="store_true",
                            help="the tuned set instead of the shipped settings: sweeps 1-5 s, reconciler every 10 s "
                                 "with a 300 s grace, 50 calls/s per account and process")
        parser.add_argument("--timeout", type=float, default=900, help="seconds each phase may take")
        parser.add_argument("--no-peer", action="store_true", help="skip the peer pattern")
        parser.add_argument("--workload", default="both",
                            help="export: every target in another Region (export, bucket, import); same-region: "
                                 "every target in the source's Region (grant, copy, revoke); both, one after the "
                                 "other; export-distinct: the export path with an image of its own per transfer; "
                                 "export-fleet: a release of a few images to many accounts (--fleet-accounts); "
                                 "several joined by commas")
        parser.add_argument("--fleet-accounts", type=int, default=200,
                            help="recipient accounts of the export-fleet workload")
        parser.add_argument("--out", default=str(load.BASE_DIR / "bench-results"), help="results directory")
        parser.add_argument("--chart", default=None, help="write the PNG chart here")
        parser.add_argument("--chart-from", default=None, metavar="JSON",
                            help="only draw --chart from earlier results (files joined by commas)")
        parser.add_argument("--yes", action="store_true",
                            help="run even though the database holds data the benchmark did not create")

    def handle(self, *args, **opts):
        if opts["chart_from"]:
            return self._chart_only(opts)
        try:
            sizes = [int(x) for x in str(opts["transfers"]).split(",") if x.strip()]
        except ValueError:
            raise CommandError("--transfers takes numbers, e.g. 1000 or 50,200,1000") from None
        for name, value, low, high in (("transfers", min(sizes, default=0), 1, 20000),
                                       ("transfers", max(sizes, default=0), 1, 20000),
                                       ("workers", opts["workers"], 1, 32), ("latency", opts["latency"], 0, 10),
                                       ("export-spread", opts["export_spread"], 0, 3600),
                                       ("fleet-accounts", opts["fleet_accounts"], 1, 5000)):
            if not low <= value <= high:
                raise CommandError(f"--{name} must be between {low} and {high}")
        chosen = []
        for name in str(opts["workload"]).split(","):
            name = name.strip()
            if name not in (*workloads.WORKLOADS, workloads.DISTINCT, workloads.FLEET, "both"):
                raise CommandError(f"--workload: {name!r} is not one of {', '.join(workloads.WORKLOADS)}, "
                                   f"{workloads.DISTINCT}, {workloads.FLEET} or both")
            chosen += list(workloads.WORKLOADS) if name == "both" else [name]
        options = bench.Options(
            sizes=sizes, workers=opts["workers"], latency=opts["latency"], export_seconds=opts["export_seconds"],
            export_spread=opts["export_spread"], import_seconds=opts["import_seconds"],
            copy_seconds=opts["copy_seconds"], sweep_min=opts["sweep_min"], sweep_max=opts["sweep_max"],
            tuned=opts["tuned"], timeout=opts["timeout"], peer=not opts["no_peer"], out_dir=Path(opts["out"]),
            workloads=chosen, fleet_accounts=opts["fleet_accounts"],
            chart=Path(opts["chart"]) if opts["chart"] else None, yes=opts["yes"])
        try:
            result = bench.run(options, log=lambda line: self.stdout.write(line))
        except load.Refused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        self.stdout.write(bench.table(result))
        self.stdout.write(f"\nResults: {result['path']}" + (f"\nChart: {result['chart']}" if "chart" in result else ""))

    def _chart_only(self, opts):
        if not opts["chart"]:
            raise CommandError("--chart-from needs --chart PATH")
        merged = None
        for name in opts["chart_from"].split(","):
            data = json.loads(Path(name).read_text())
            if merged is None:
                merged = data
            else:  # a size in both: its phases joined, the later file's winning
                by_size = {e["transfers"]: e for e in merged["runs"]}
                for entry in data["runs"]:
                    by_size.setdefault(entry["transfers"], {}).update(entry)
                merged["runs"] = sorted(by_size.values(), key=lambda e: e["transfers"])
        self.stdout.write(f"Chart: {chart.draw(merged, Path(opts['chart']))}")
