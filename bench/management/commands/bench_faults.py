"""python manage.py bench_faults [--small] [--hosts 2 --skew 5 [--kill] [--hosts-small]]
[--main 1000] [--others 200] [--distinct 0.2] [--workers 2]
[--latency 0.1] [--throttle 0.3] [--lost 0.05] [--held 0.05] [--hold-seconds GRACE+15] [--out DIR]

The production-defaults fault run (issue 14's proof; not a test, though `--small` runs in CI through
tests/test_bench_faults.py): transfers at the settings that ship against a sandbox that throttles,
loses answers and holds creates longer than the reconciler's grace. It prints the settings in
force, the figures and each check, writes <out>/faults.json (faults-small.json with --small), and
exits non-zero when a check fails. With ``--hosts N`` the workers are spread over N "hosts" (state
directories and host ids of their own, every host after the first with its clock ``--skew`` seconds
off through libfaketime, one checkpoint bucket), ``--kill`` kills a worker of the first host midway,
and the run also checks that the chain and checkpoints verify from every host (bench/hosts.py);
``--hosts-small`` is that run's CI form (tests/test_hosts.py). It writes faults-hosts.json
(faults-hosts-small.json). Point DATABASE_URL at a throwaway database; see
bench/faults.py.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bench import faults, load


class Command(BaseCommand):
    help = "Production-defaults fault run: every transfer ends, each create once, nothing untracked (loopback)."

    def add_arguments(self, parser):
        parser.add_argument("--small", action="store_true",
                            help=f"the CI form: {faults.SMALL['main']} + {faults.SMALL['others']} transfers, "
                                 "short cloud durations (the portal's settings stay as shipped)")
        parser.add_argument("--hosts-small", action="store_true",
                            help="the multi-host CI form: 2 hosts, the second 5 s ahead, a worker killed, "
                                 "14 transfers, short sweeps and timeouts (each printed with its reason)")
        parser.add_argument("--hosts", type=int, help="process groups (hosts) the workers are spread over (1)")
        parser.add_argument("--skew", type=float, help="seconds each host after the first is off (ahead, behind...)")
        parser.add_argument("--kill", action="store_true", help="SIGKILL a worker of host 1 once imports start")
        parser.add_argument("--checkpoint-every", type=int,
                            help="seconds between audit checkpoints with more than one host (60)")
        parser.add_argument("--main", type=int, help="imports auto-accepted into the one recipient account (1000)")
        parser.add_argument("--others", type=int, help="imports spread over the other accounts (200)")
        parser.add_argument("--distinct", type=float, help="share of transfers with an OMI of their own (0.2)")
        parser.add_argument("--workers", type=int, help="RQ worker processes (2)")
        parser.add_argument("--latency", type=float, help="seconds the sandbox adds to each call (0.1)")
        parser.add_argument("--throttle", type=float, help="share of OAPI calls throttled (0.3)")
        parser.add_argument("--lost", type=float, help="share of OAPI answers lost after the action ran (0.05)")
        parser.add_argument("--errors", type=float, help="share of OAPI calls failed with a 500 first (0)")
        parser.add_argument("--held", type=float, help="share of creates held before they are applied (0.05)")
        parser.add_argument("--hold-seconds", type=float,
                            help="how long a held create waits (default: the reconciler's grace + 15 s)")
        parser.add_argument("--export-seconds", type=float, help="sandbox export duration (20; --small 4)")
        parser.add_argument("--import-seconds", type=float, help="sandbox import duration (10; --small 3)")
        parser.add_argument("--copy-seconds", type=float, help="sandbox copy-first duration (5; --small 2)")
        parser.add_argument("--timeout", type=float, help="seconds the transfers may take (1800; --small 600)")
        parser.add_argument("--out", default=str(load.BASE_DIR / "bench-results"),
                            help="directory for faults.json (docs/performance for the committed figures)")
        parser.add_argument("--yes", action="store_true",
                            help="run even though the database holds data the benchmarks did not create")

    def handle(self, *args, **opts):
        given = {name: opts[name] for name in ("main", "others", "distinct", "workers", "latency", "throttle", "lost",
                                               "errors", "held", "hold_seconds", "export_seconds", "import_seconds",
                                               "copy_seconds", "timeout", "hosts", "skew", "checkpoint_every")
                 if opts[name] is not None}
        if opts["kill"]:
            given["kill"] = True
        for name, low, high in (("main", 0, 20000), ("others", 0, 20000), ("workers", 1, 32), ("latency", 0, 10),
                                ("hold_seconds", 0, 3600), ("timeout", 10, 86400), ("hosts", 1, 8), ("skew", -60, 60),
                                ("checkpoint_every", 1, 3600)):
            if name in given and not low <= given[name] <= high:
                raise CommandError(f"--{name.replace('_', '-')} must be between {low} and {high}")
        for name in ("distinct", "throttle", "lost", "errors", "held"):
            if name in given and not 0 <= given[name] <= 1:
                raise CommandError(f"--{name} is a share, between 0 and 1")
        extra = {"out_dir": Path(opts["out"]), "yes": opts["yes"]}
        if opts["hosts_small"]:
            options = faults.hosts_small(**given, **extra)
        elif opts["small"]:
            options = faults.small(**given, **extra)
        else:
            options = faults.Options(**given, **extra)
        if options.main + options.others < 1:
            raise CommandError("--main and --others add up to no transfer")
        try:
            result = faults.run(options, log=lambda line: self.stdout.write(line))
        except load.Refused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        self.stdout.write(faults.table(result))
        self.stdout.write(f"\nResults: {result['path']}")
        failed = [name for name, c in result["checks"].items() if not c["met"]]
        if failed:
            raise CommandError(f"the fault run failed {len(failed)} check(s): {', '.join(failed)}")
