"""Start-up checks: the credential key ring must parse and cover every stored key id."""

from django.conf import settings
from django.core.checks import Error, register
from django.db import DatabaseError

from accounts import vault


@register()
def credential_key_ring_check(app_configs=None, **kwargs):
    try:
        ring = vault.parse_key_ring(settings.OMIPORTAL_CREDENTIAL_KEYS)
    except vault.KeyRingError as exc:
        return [Error(str(exc), hint="Fix OMIPORTAL_CREDENTIAL_KEYS (see the README).", id="omiportal.E001")]
    try:
        used = stored_key_ids()
    except DatabaseError:
        return []  # no database yet (before migrate): nothing stored to check
    missing = sorted(used - set(ring.keys))
    if missing:
        return [Error(
            f"Stored cloud credentials are sealed with key id(s) {', '.join(missing)}, "
            "which OMIPORTAL_CREDENTIAL_KEYS lacks; they cannot be opened.",
            hint="Put the old key back in the ring (after the active one) and run rotate_credential_keys.",
            id="omiportal.E002",
        )]
    return []


def stored_key_ids() -> set[str]:
    from accounts.models import CloudAccount

    kids = set()
    rows = CloudAccount.objects.values_list("access_key_sealed", "secret_key_sealed").iterator(chunk_size=1000)
    for sealed_pair in rows:
        for sealed in sealed_pair:
            try:
                kids.add(vault.key_id_of(sealed))
            except vault.VaultError:
                kids.add("<unreadable>")
    return kids
