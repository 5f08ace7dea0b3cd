"""An endpoint's signing secrets: made by the portal, sealed by the vault, opened only to sign.

A secret reads ``whsec_<base64 of 32 random bytes>`` (the Standard Webhooks form, which the
``standardwebhooks`` library takes as is). It is shown once, when the endpoint is made or its
secret rotated; the database keeps it sealed, bound to the team, the endpoint and the field, so a
value copied to another row does not open. Nothing else in the app opens it.
"""

import base64
import secrets as random
from datetime import datetime

from standardwebhooks import Webhook

from accounts import vault
from accounts.vault import VaultError as SecretUnavailable  # noqa: F401 - what signature() raises when it cannot

PREFIX = "whsec_"
SECRET_BYTES = 32
FIELD = "webhook_secret"
PREVIOUS_FIELD = "webhook_previous_secret"


def new_secret() -> str:
    return PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def _ids(endpoint) -> dict:
    return {"team_id": endpoint.team.public_id, "object_id": endpoint.public_id}


def seal(endpoint, secret: str, *, previous: bool = False) -> str:
    return vault.seal(secret, field=PREVIOUS_FIELD if previous else FIELD, **_ids(endpoint))


def signature(endpoint, *, msg_id: str, timestamp: datetime, body: str, now: datetime) -> str:
    """The ``webhook-signature`` header: one ``v1,…`` signature by the current secret, and one by
    the previous secret while a rotation's overlap lasts (space-separated, as the spec allows)."""
    sealed = [(endpoint.secret_sealed, FIELD)]
    if endpoint.previous_secret_sealed and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        sealed.append((endpoint.previous_secret_sealed, PREVIOUS_FIELD))
    return " ".join(Webhook(vault.decrypt(value, field=field, **_ids(endpoint))).sign(msg_id, timestamp, body)
                    for value, field in sealed)


def reseal_as_previous(endpoint) -> str:
    """The current secret, sealed as the previous one (a rotation): a value opens only under the
    field it was sealed with."""
    return vault.seal(vault.decrypt(endpoint.secret_sealed, field=FIELD, **_ids(endpoint)), field=PREVIOUS_FIELD,
                      **_ids(endpoint))
