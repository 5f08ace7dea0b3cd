"""The bridge between stored cloud accounts and the cloud layer.

This is the only place in the portal that opens sealed keys (DESIGN §5): the
plaintext goes straight into a Credentials object handed to the cloud client,
in the worker or service path that is about to call OUTSCALE.
"""

from accounts import vault
from omiportal.outscale.credentials import Credentials


def credentials_for(account) -> Credentials:
    ids = {"team_id": account.team.public_id, "object_id": account.public_id}
    return Credentials(
        access_key=vault.decrypt(account.access_key_sealed, field="access_key", **ids),
        secret_key=vault.decrypt(account.secret_key_sealed, field="secret_key", **ids),
        region=account.region,
    )


def open_pasted_link(recipient) -> str:
    """The manifest URL a recipient pasted, sealed until the import job hands it to OUTSCALE."""
    return vault.decrypt(recipient.link_sealed, team_id=recipient.team.public_id,
                         object_id=recipient.public_id, field="link")
