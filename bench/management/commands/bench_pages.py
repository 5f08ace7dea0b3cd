"""python manage.py bench_pages [--sizes 10000,1000000] [--requests 30] [--rounds 2] [--no-export] [--no-verify]

Page costs over a large audit trail (not a test: it prints figures). Fills one throwaway database
per size, beside the one DATABASE_URL names (e.g. benchpages_10k, benchpages_1m), with shares and a
valid audit chain, then measures the dashboard, share lists, audit pages, event detail and the
Django admin's change list, the CSV export beside psql \\copy, and audit_verify beside a bare loop.
See bench/pages.py.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bench import load, pages


class Command(BaseCommand):
    help = "Page, export and verification costs at 10k and 1M audit events (throwaway databases only)."

    def add_arguments(self, parser):
        parser.add_argument("--sizes", default="10000,1000000", help="audit events per database, comma-separated")
        parser.add_argument("--shares-per-event", type=float, default=0.1, help="shares filled per audit event")
        parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
        parser.add_argument("--no-export", action="store_true", help="skip the CSV export and psql \\copy")
        parser.add_argument("--no-verify", action="store_true", help="skip audit_verify and the bare loop")
        parser.add_argument("--rounds", type=int, default=2,
                            help="export and verification rounds, alternated with their baselines; the fastest counts")
        parser.add_argument("--out", default=str(pages.BASE_DIR / "bench-results"),
                            help="directory for pages.json (docs/performance for the committed figures)")
        parser.add_argument("--yes", action="store_true",
                            help="run even though the database holds data the benchmarks did not create")

    def handle(self, *args, **opts):
        try:
            sizes = tuple(sorted(int(part) for part in opts["sizes"].split(",") if part.strip()))
        except ValueError:
            raise CommandError("--sizes takes comma-separated integers, e.g. 10000,1000000") from None
        if not sizes or not all(100 <= size <= 5_000_000 for size in sizes):
            raise CommandError("each size must be between 100 and 5,000,000")
        if not 1 <= opts["requests"] <= 1000:
            raise CommandError("--requests must be between 1 and 1000")
        if not 1 <= opts["rounds"] <= 10:
            raise CommandError("--rounds must be between 1 and 10")
        options = pages.Options(sizes=sizes, shares_per_event=opts["shares_per_event"], requests=opts["requests"],
                                export=not opts["no_export"], verify=not opts["no_verify"],
                                out_dir=Path(opts["out"]), yes=opts["yes"], rounds=opts["rounds"])
        try:
            report = pages.run(options, log=lambda line: self.stdout.write(line))
        except load.Refused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        self.stdout.write(pages.table(report))
        self.stdout.write(f"\nResults: {report['path']}")
