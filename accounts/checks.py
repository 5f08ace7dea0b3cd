"""Start-up checks: the credential key ring must parse and cover every stored key id."""

from collections import defaultdict

from django.conf import settings
from django.core.checks import Error, register
from django.db import DatabaseError

from accounts import sealed, vault

LISTED_ROWS = 10
UNREADABLE = "<unreadable>"


@register()
def credential_key_ring_check(app_configs=None, **kwargs):
    try:
        ring = vault.parse_key_ring(settings.OMIPORTAL_CREDENTIAL_KEYS)
    except vault.KeyRingError as exc:
        return [Error(str(exc), hint="Fix OMIPORTAL_CREDENTIAL_KEYS (see the README).", id="omiportal.E001")]
    try:
        rows = rows_by_key_id()
    except DatabaseError:
        return []  # no database yet (before migrate): nothing stored to check
    missing = sorted(set(rows) - set(ring.keys))
    if missing:
        unopenable = sorted({row for kid in missing for row in rows[kid]})
        listed = ", ".join(unopenable[:LISTED_ROWS]) + (" …" if len(unopenable) > LISTED_ROWS else "")
        return [Error(
            f"Stored sealed values (cloud keys, pasted links) are sealed with key id(s) {', '.join(missing)}, "
            f"which OMIPORTAL_CREDENTIAL_KEYS lacks; {len(unopenable)} row(s) cannot be opened: {listed}.",
            hint="Put the old key back in the ring (after the active one) and run rotate_credential_keys.",
            id="omiportal.E002",
        )]
    return []


def rows_by_key_id() -> dict[str, list[str]]:
    """Every key id the stored sealed values name (UNREADABLE for a damaged value), with the rows
    (kind and public id, never contents) that use it."""
    rows = defaultdict(list)
    for model, columns in sealed.sealed_models():
        values = model.objects.filter(sealed.holding(columns)).values_list("public_id", *columns)
        for public_id, *sealed_values in values.iterator(chunk_size=1000):
            for value in sealed_values:
                if not value:
                    continue
                try:
                    kid = vault.key_id_of(value)
                except vault.VaultError:
                    kid = UNREADABLE
                rows[kid].append(sealed.row_label(model, public_id))
    return rows
