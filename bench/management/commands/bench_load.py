"""python manage.py bench_load [--users 100] [--transfers 1000] [--duration 240] [--think 2 5] [--workers 2]

A load benchmark on loopback (not a test): the sandbox, the portal under gunicorn as the README
recommends, one person alone (the baseline), then N RQ workers on the transfers while U people who
think between clicks (Locust) browse and accept. Point DATABASE_URL at a throwaway database; see
bench/load.py.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bench import load


class Command(BaseCommand):
    help = ("Load benchmark: one person alone, then simulated people who think browse the portal while a batch "
            "of transfers runs (loopback only).")

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=100, help="simulated people under load (Locust users)")
        parser.add_argument("--transfers", type=int, default=1000, help="transfers requested and approved")
        parser.add_argument("--duration", type=float, default=240,
                            help="seconds of load (the people's arrival included)")
        parser.add_argument("--think", type=float, nargs=2, default=(2.0, 5.0), metavar=("LOW", "HIGH"),
                            help="seconds between one person's clicks under load")
        parser.add_argument("--baseline", type=float, default=60, help="seconds of the one-person baseline")
        parser.add_argument("--spawn-rate", type=float, default=2, help="people arriving per second")
        parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
        parser.add_argument("--worker-nice", type=int, default=load.WORKER_NICE,
                            help="OMIPORTAL_WORKER_NICE of the RQ workers (the README's: 10; 0: beside the web tier)")
        parser.add_argument("--sandbox-nice", type=int, default=0,
                            help="nice of the sandbox's threads during the load (it stands in for a remote cloud)")
        parser.add_argument("--web-class", choices=("sync", "gthread"),
                            help="gunicorn worker class (default: the README's)")
        parser.add_argument("--web-workers", type=int, help="gunicorn processes (default: the README's)")
        parser.add_argument("--web-threads", type=int, help="gunicorn threads per process (default: the README's)")
        parser.add_argument("--web-keep-alive", type=int,
                            help="gunicorn keep-alive seconds (gthread; sync workers close after each answer)")
        parser.add_argument("--export-seconds", type=float, default=5, help="sandbox export duration")
        parser.add_argument("--import-seconds", type=float, default=5, help="sandbox import duration")
        parser.add_argument("--background-last", action="store_true",
                            help="leave the requests' pre-flight checks and mails queued for the load phase (as "
                                 "until 2026-12-06) instead of running them before the baseline, as a deployment "
                                 "has by the time a request is approved")
        parser.add_argument("--tuned", action="store_true",
                            help="the workers at the benchmark's old pace (sweeps 1-5 s, reconciler every 5 s with a "
                                 "15 s grace, 50 calls/s) instead of the shipped settings")
        parser.add_argument("--out", default=str(load.BASE_DIR / "bench-results"), help="results directory")
        parser.add_argument("--name", default="load.json", help="results file name (the chart: same name, .png)")
        parser.add_argument("--yes", action="store_true",
                            help="run even though the database holds data the benchmark did not create")

    def handle(self, *args, **opts):
        for name, low, high in (("users", 1, 1000), ("transfers", 1, 20000), ("duration", 1, 3600),
                                ("baseline", 1, 3600), ("workers", 1, 32), ("web_workers", 1, 32),
                                ("web_threads", 1, 64), ("web_keep_alive", 0, 3600), ("spawn_rate", 0.1, 1000),
                                ("worker_nice", 0, 19), ("sandbox_nice", 0, 19)):
            if opts[name] is not None and not low <= opts[name] <= high:
                raise CommandError(f"--{name.replace('_', '-')} must be between {low} and {high}")
        low, high = opts["think"]
        if not 0 <= low <= high <= 60:
            raise CommandError("--think LOW HIGH: 0 <= LOW <= HIGH <= 60 seconds")
        options = load.Options(users=opts["users"], transfers=opts["transfers"], duration=opts["duration"],
                               think=(low, high), baseline_seconds=opts["baseline"], spawn_rate=opts["spawn_rate"],
                               workers=opts["workers"], worker_nice=opts["worker_nice"],
                               sandbox_nice=opts["sandbox_nice"],
                               web_class=opts["web_class"], web_workers=opts["web_workers"],
                               web_threads=opts["web_threads"], web_keep_alive=opts["web_keep_alive"],
                               export_seconds=opts["export_seconds"],
                               import_seconds=opts["import_seconds"], tuned=opts["tuned"],
                               background_first=not opts["background_last"],
                               out_dir=Path(opts["out"]), name=opts["name"],
                               yes=opts["yes"])
        try:
            result = load.run(options, log=lambda line: self.stdout.write(line))
        except load.Refused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        self.stdout.write(load.table(result))
        chart = f", chart {result['chart']}" if result.get("chart") else ""
        self.stdout.write(f"\nResults: {result['path']}{chart}")
