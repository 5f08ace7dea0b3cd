"""python manage.py bench_load [--users 50] [--transfers 500] [--duration 60] [--workers 2]

A load benchmark on loopback (not a test): the sandbox, N RQ workers and the portal under gunicorn,
U simulated people browsing and accepting while the transfers run. Point DATABASE_URL at a
throwaway database; see bench/load.py.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bench import load


class Command(BaseCommand):
    help = "Load benchmark: simulated people browse the portal while a batch of transfers runs (loopback only)."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=50, help="simulated people (threads)")
        parser.add_argument("--transfers", type=int, default=500, help="transfers requested and approved")
        parser.add_argument("--duration", type=float, default=60, help="seconds the people browse")
        parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
        parser.add_argument("--export-seconds", type=float, default=5, help="sandbox export duration")
        parser.add_argument("--import-seconds", type=float, default=5, help="sandbox import duration")
        parser.add_argument("--out", default=str(load.BASE_DIR / "bench-results"), help="results directory")
        parser.add_argument("--yes", action="store_true",
                            help="run even though the database holds data the benchmark did not create")

    def handle(self, *args, **opts):
        for name, low, high in (("users", 1, 1000), ("transfers", 1, 20000), ("duration", 1, 3600),
                                ("workers", 1, 32), ("web_workers", 1, 32)):
            if not low <= opts[name] <= high:
                raise CommandError(f"--{name.replace('_', '-')} must be between {low} and {high}")
        options = load.Options(users=opts["users"], transfers=opts["transfers"], duration=opts["duration"],
                               workers=opts["workers"], web_workers=opts["web_workers"],
                               export_seconds=opts["export_seconds"], import_seconds=opts["import_seconds"],
                               out_dir=Path(opts["out"]), yes=opts["yes"])
        try:
            result = load.run(options, log=lambda line: self.stdout.write(line))
        except load.Refused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        self.stdout.write(load.table(result))
        self.stdout.write(f"\nResults: {result['path']}")
