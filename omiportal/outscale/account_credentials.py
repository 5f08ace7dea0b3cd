"""The bridge between stored cloud accounts and the cloud layer.

This is the only place in the portal that opens sealed keys (DESIGN §5): the
plaintext goes straight into a Credentials object handed to the cloud client,
in the worker or service path that is about to call OUTSCALE.
"""

from accounts import vault
from omiportal.outscale.credentials import Credentials


def credentials_for(account, *, purpose: str) -> Credentials:
    """Open an account's keys for one use, and record that use in the audit trail.

    Call it outside long transactions: the audit append holds the chain's lock until commit.
    A value that does not open is recorded as a failed use, then the VaultError propagates.
    """
    from omiportal.audit.recorder import record

    ids = {"team_id": account.team.public_id, "object_id": account.public_id}
    details = {"purpose": purpose, "account_id": account.account_id, "region": account.region}
    try:
        access_key = vault.decrypt(account.access_key_sealed, field="access_key", **ids)
        secret_key = vault.decrypt(account.secret_key_sealed, field="secret_key", **ids)
    except vault.VaultError as exc:
        record(action="credential.used", outcome="failed", team=account.team, target=account,
               details={**details, "reason": str(exc)})
        raise
    record(action="credential.used", team=account.team, target=account, details=details)
    return Credentials(access_key=access_key, secret_key=secret_key, region=account.region)


def open_pasted_link(recipient) -> str:
    """The manifest URL a recipient pasted, sealed until the import job hands it to OUTSCALE."""
    return vault.decrypt(recipient.link_sealed, team_id=recipient.team.public_id,
                         object_id=recipient.public_id, field="link")
