"""``manage.py audit_verify``: exit 0 if the audit chain (and its signed checkpoints) is intact,
1 naming the first bad event or checkpoint if not.

``--export FILE [--checkpoint FILE]`` checks an exported file instead of the database.
Every database run is kept for the review pages (``integrity.latest_status()``).
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit import checkpoints, integrity
from audit.download_verify import verify_download
from audit.errors import AuditError


class Command(BaseCommand):
    help = ("Verify the audit trail's hash chain, its head and its signed checkpoints, or an export file. "
            "Exit status 1 if anything was altered or removed.")

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=2000, help="Events fetched per database round trip.")
        parser.add_argument("--export", metavar="FILE",
                            help="Check a CSV or JSON Lines export instead of the database.")
        parser.add_argument("--checkpoint", metavar="FILE",
                            help="With --export: a checkpoint file the export must agree with.")

    def handle(self, *args, chunk_size: int, export: str | None, checkpoint: str | None, **options):
        if checkpoint and not export:
            raise CommandError("--checkpoint goes with --export.", returncode=2)
        if export:
            return self._export(export, checkpoint)
        result = integrity.run_verification(chunk_size=chunk_size)
        if not result.ok:
            raise CommandError(result.describe(), returncode=1)
        self.stdout.write(self.style.SUCCESS(f"OK: {result.message}."))

    def _export(self, export: str, checkpoint_file: str | None):
        checkpoint = None
        if checkpoint_file:
            path = Path(checkpoint_file)
            try:
                checkpoint = checkpoints.parse(path.name, path.read_bytes())
            except (OSError, AuditError) as exc:
                raise CommandError(f"Checkpoint {checkpoint_file} cannot be used: {exc}.", returncode=1) from None
            problem = checkpoints.check_signature(checkpoint)
            if problem:
                raise CommandError(f"Checkpoint {checkpoint_file} failed ({problem.reason}): {problem.message}.",
                                   returncode=1)
        result = verify_download(export, checkpoint=checkpoint)
        if not result.ok:
            where = f"at event #{result.first_bad_seq}" if result.first_bad_seq is not None else "in the file"
            raise CommandError(f"Export {export} broken {where} ({result.reason}): {result.message}.", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"OK: {result.message}."))
