"""Re-seal every value the vault sealed (cloud keys, pasted links) under the active key of the ring.

Resumable and idempotent: rows are taken in primary-key order, each batch commits on its own, and
only values still sealed under another key are picked up, so an interrupted run simply continues
and a second run changes nothing. A row that cannot be opened (its key is missing, or it was
damaged or copied from another row) is reported by kind and public id, never by content, and
skipped: the rest is rotated, and the command exits non-zero while any such row remains.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import sealed, vault
from audit.context import job_context
from audit.recorder import record

LISTED_ROWS = 20


def _prefix() -> str:
    return f"{vault.VERSION}${vault.key_ring().active_kid}$"


def stale_rows() -> list[tuple]:
    """(model, columns, queryset of its rows with a value under another key) for every sealed model."""
    prefix = _prefix()
    return [(model, columns, model.objects.filter(sealed.not_under(columns, prefix)))
            for model, columns in sealed.sealed_models()]


def _listed(labels: list[str]) -> str:
    return ", ".join(labels[:LISTED_ROWS]) + (" …" if len(labels) > LISTED_ROWS else "")


class Command(BaseCommand):
    help = ("Re-encrypt every sealed value (cloud keys, pasted links) under the active key "
            "(first in OMIPORTAL_CREDENTIAL_KEYS).")

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true",
                            help="Change nothing; exit 1 while any sealed value still uses an old key.")
        parser.add_argument("--batch-size", type=int, default=100)

    def handle(self, *args, check=False, batch_size=100, **options):
        active = vault.key_ring().active_kid
        if check:
            pending = [sealed.row_label(model, public_id) for model, _, rows in stale_rows()
                       for public_id in rows.order_by("pk").values_list("public_id", flat=True)]
            if pending:
                raise CommandError(f"{len(pending)} row(s) still use a key other than {active!r}: {_listed(pending)}.")
            self.stdout.write(f"All stored sealed values use the active key {active!r}.")
            return
        done, unopened = 0, []
        with job_context(job_id="cmd-rotate-credential-keys"):
            for model, columns, rows in stale_rows():
                last = 0
                while True:
                    batch = list(rows.filter(pk__gt=last).select_related("team").order_by("pk")[:batch_size])
                    if not batch:
                        break
                    last = batch[-1].pk
                    with transaction.atomic():
                        for row in batch:
                            try:
                                done += self._reseal(model, columns, row, active)
                            except vault.VaultError as exc:
                                unopened.append(sealed.row_label(model, row.public_id))
                                record(action="credential.rotated", outcome="failed", actor=None, team=row.team,
                                       target=row, details={"reason": str(exc)})
                    self.stdout.write(f"Re-sealed {done} row(s)…")
        self.stdout.write(self.style.SUCCESS(f"Done: {done} row(s) re-sealed under {active!r}."))
        if unopened:
            raise CommandError(
                f"{len(unopened)} row(s) could not be opened and were skipped: {_listed(unopened)}. Put their key "
                "back in the ring and run this again, or replace them (new keys for an account, a new link).")

    def _reseal(self, model, columns: dict, row, active: str) -> int:
        prefix, before, after = _prefix(), set(), {}
        for column, field in columns.items():
            value = getattr(row, column)
            if not value or value.startswith(prefix):
                continue
            before.add(vault.key_id_of(value))
            after[column] = vault.reseal(value, team_id=row.team.public_id, object_id=row.public_id, field=field)
        # Only over the values it read: keys replaced meanwhile, or a link wiped when its import
        # started, are not brought back.
        if not after or not model.objects.filter(pk=row.pk, **{c: getattr(row, c) for c in after}).update(**after):
            return 0
        record(action="credential.rotated", actor=None, team=row.team, target=row,
               details={"fields": sorted(columns[c] for c in after), "from_key_ids": sorted(before),
                        "to_key_id": active})
        return 1
