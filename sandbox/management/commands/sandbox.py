"""`manage.py sandbox`: serve the OUTSCALE sandbox, or print what it serves.

    DJANGO_DEBUG=true python manage.py sandbox --base-port 8700 --export-seconds 30
    DJANGO_DEBUG=true python manage.py sandbox --base-port 8700 --describe

With `--base-port 8700` the ports are fixed: control 8700, OAPI 8701-8705 and OOS 8711-8715 (Regions
in the order of outscale.regions.REGIONS), so other processes can be pointed at them.
"""

from __future__ import annotations

import json
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from sandbox.server import Sandbox


def sandbox_from_options(options: dict) -> Sandbox:
    """Build (without starting) the sandbox the command line describes."""
    sb = Sandbox(
        host=options["host"],
        base_port=options["base_port"],
        export_seconds=options["export_seconds"],
        export_spread_seconds=options["export_spread"],
        import_seconds=options["import_seconds"],
        copy_seconds=options["copy_seconds"],
    )
    actions = {a.strip() for a in (options.get("fault_actions") or "").split(",") if a.strip()}
    sb.faults.configure(
        throttle_rate=options["throttle_rate"],
        error_rate=options["error_rate"],
        lost_response_rate=options["lost_response_rate"],
        latency=options["latency"],
        hang_seconds=options["hang_seconds"],
        actions=actions or None,
        oos=options["faults_on_oos"],
        hold_seconds=options.get("hold_seconds") or 0.0,
        hold_actions={a.strip() for a in (options.get("hold_actions") or "").split(",") if a.strip()} or None,
    )
    return sb


class Command(BaseCommand):
    help = "Serve the local OUTSCALE sandbox (OAPI + OOS for the five Regions), or describe it."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (keep it on loopback)")
        parser.add_argument("--base-port", type=int, default=8700, help="0 picks free ports")
        parser.add_argument("--export-seconds", type=float, default=30.0)
        parser.add_argument(
            "--export-spread",
            type=float,
            default=0.0,
            help="seconds over which export durations are spread (deterministic per task)",
        )
        parser.add_argument("--import-seconds", type=float, default=30.0)
        parser.add_argument("--copy-seconds", type=float, default=None, help="default: a third of --import-seconds")
        parser.add_argument("--throttle-rate", type=float, default=0.0, help="share of OAPI calls answered 429/503")
        parser.add_argument("--error-rate", type=float, default=0.0, help="share of OAPI calls answered 500")
        parser.add_argument(
            "--lost-response-rate",
            type=float,
            default=0.0,
            help="share of OAPI calls executed whose answer is then lost (500)",
        )
        parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
        parser.add_argument("--hang-seconds", type=float, default=0.0, help="every targeted call sleeps this long")
        parser.add_argument("--hold-seconds", type=float, default=0.0,
                            help="targeted calls are held this long before they are applied, then answered")
        parser.add_argument("--hold-actions", default="", help="comma-separated actions held (default: every one)")
        parser.add_argument("--fault-actions", default="", help="comma-separated actions the faults target")
        parser.add_argument("--faults-on-oos", action="store_true", help="apply the faults to OOS too")
        parser.add_argument("--describe", action="store_true", help="print endpoints, accounts and keys; exit")
        parser.add_argument("--describe-file", default="", help="also write the describe JSON to this file")

    def handle(self, *args, **options):
        try:
            sb = sandbox_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["describe"]:
            if not options["base_port"]:
                raise CommandError("--describe needs a fixed --base-port (ports are only known once bound)")
            self._write_describe(sb, options)
            return
        try:
            sb.start()
        except OSError as exc:
            raise CommandError(f"cannot bind the sandbox ports: {exc}") from exc
        self._write_describe(sb, options, summary=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            stop.wait()
        finally:
            sb.stop()
            self.stdout.write("sandbox stopped")

    def _write_describe(self, sb: Sandbox, options: dict, summary: bool = False) -> None:
        described = sb.describe()
        text = json.dumps(described, indent=2)
        if options["describe_file"]:
            with open(options["describe_file"], "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        if not summary:
            self.stdout.write(text)
            return
        self.stdout.write(f"OUTSCALE sandbox running; control endpoint {described['control']}")
        self.stdout.write("OMIPORTAL_OUTSCALE_ENDPOINTS=" + json.dumps(described["regions"]))
        for account in described["accounts"]:
            self.stdout.write(
                f"  {account['name']:<20} {account['account_id']} {account['region']:<20} "
                f"access key {account['access_key']}  bucket {account['bucket']}"
            )
        self.stdout.write("Secret keys: --describe or GET the control endpoint. Ctrl-C to stop.")
