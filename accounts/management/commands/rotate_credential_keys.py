"""Re-seal every stored cloud key under the active key of the ring.

Resumable and idempotent: each batch commits on its own and only rows still
sealed under another key are picked up, so an interrupted run simply continues
and a second run changes nothing.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Q

from accounts import vault
from accounts.models import CloudAccount
from omiportal.audit.context import job_context
from omiportal.audit.recorder import record

FIELDS = ("access_key", "secret_key")


def stale_accounts():
    prefix = f"{vault.VERSION}${vault.key_ring().active_kid}$"
    stale = Q()
    for field in FIELDS:
        stale |= ~Q(**{f"{field}_sealed__startswith": prefix})
    return CloudAccount.objects.filter(stale)


class Command(BaseCommand):
    help = "Re-encrypt stored cloud credentials under the active key (first in OMIPORTAL_CREDENTIAL_KEYS)."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true",
                            help="Change nothing; exit 1 while any credential still uses an old key.")
        parser.add_argument("--batch-size", type=int, default=100)

    def handle(self, *args, check=False, batch_size=100, **options):
        active = vault.key_ring().active_kid
        if check:
            pending = stale_accounts().count()
            if pending:
                raise CommandError(f"{pending} cloud account(s) still use a key other than {active!r}.")
            self.stdout.write(f"All stored credentials use the active key {active!r}.")
            return
        done = 0
        with job_context(job_id="cmd-rotate-credential-keys"):
            while True:
                with transaction.atomic():
                    batch = list(
                        stale_accounts().select_related("team").select_for_update(of=("self",)).order_by("pk")[:batch_size]
                    )
                    for account in batch:
                        self._reseal(account, active)
                if not batch:
                    break
                done += len(batch)
                self.stdout.write(f"Re-sealed {done} account(s)…")
        self.stdout.write(self.style.SUCCESS(f"Done: {done} account(s) re-sealed under {active!r}."))

    def _reseal(self, account: CloudAccount, active: str) -> None:
        before = {}
        for field in FIELDS:
            name = f"{field}_sealed"
            sealed = getattr(account, name)
            before[field] = vault.key_id_of(sealed)
            setattr(account, name, vault.reseal(sealed, team_id=account.team.public_id,
                                                object_id=account.public_id, field=field))
        account.save(update_fields=[f"{field}_sealed" for field in FIELDS])
        record(action="credential.rotated", actor=None, team=account.team, target=account,
               details={"from_key_ids": sorted(set(before.values())), "to_key_id": active})
