"""``manage.py audit_checkpoint``: sign the audit chain head now and store the checkpoint.

Does nothing when nothing changed since the last checkpoint. ``--generate-key`` prints a
new signing key (for OMIPORTAL_AUDIT_SIGNING_KEY) and its public key, and touches nothing.
"""

from django.core.management.base import BaseCommand, CommandError

from audit import integrity, signing
from audit.errors import AuditError


class Command(BaseCommand):
    help = "Write a signed checkpoint of the audit chain head outside the database."

    def add_arguments(self, parser):
        parser.add_argument("--generate-key", action="store_true",
                            help="Print a new Ed25519 signing key and its public key, then exit.")

    def handle(self, *args, generate_key: bool, **options):
        if generate_key:
            private = signing.generate_private_key_b64()
            self.stdout.write(f"OMIPORTAL_AUDIT_SIGNING_KEY={private}\n"
                              f"# public key (for OMIPORTAL_AUDIT_VERIFY_KEYS after a rotation): "
                              f"{signing.public_key_b64(private)}")
            return
        try:
            outcome = integrity.write_checkpoint()
        except AuditError as exc:
            raise CommandError(str(exc), returncode=1) from None
        self.stdout.write(self.style.SUCCESS(outcome.message) if outcome.written else outcome.message)
