"""``manage.py audit_verify``: exit 0 if the audit chain is intact, 1 (naming the first bad event) if not."""

from django.core.management.base import BaseCommand, CommandError

from omiportal.audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and its head. Exit status 1 if anything was altered or removed."

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=2000, help="Events fetched per database round trip.")

    def handle(self, *args, chunk_size: int, **options):
        result = verify_chain(chunk_size=chunk_size)
        if not result.ok:
            where = f"at event #{result.first_bad_seq}" if result.first_bad_seq else "at the chain head"
            raise CommandError(
                f"Audit chain broken {where} ({result.reason}): {result.message}. "
                f"{result.count} event(s) verified before it.",
                returncode=1,
            )
        self.stdout.write(self.style.SUCCESS(f"OK: {result.message}."))
