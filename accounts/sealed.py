"""Where the portal keeps values sealed by the vault: every column, for key rotation and its checks.

Each model named here has a ``team`` and a ``public_id``: with the vault field, they are the
associated data a value was sealed with. Models above accounts (a pasted link is a transfers
Recipient) are registered by their app at start-up (accounts.dependents), since accounts may not
import them.
"""

from django.db.models import Q

from accounts import dependents
from accounts.models import CloudAccount

OWN = dependents.SealedColumns(CloudAccount, {"access_key_sealed": "access_key", "secret_key_sealed": "secret_key"},
                               "cloud account")


def _entries() -> list[dependents.SealedColumns]:
    return [OWN, *dependents.sealed_elsewhere()]


def sealed_models():
    """(model, {column: vault field}) for every model that keeps sealed values."""
    return [(entry.model, entry.columns) for entry in _entries()]


def holding(columns) -> Q:
    """Rows with at least one sealed value (wiped ones are empty: a retired account, a used link)."""
    condition = Q()
    for column in columns:
        condition |= Q(**{f"{column}__gt": ""})
    return condition


def not_under(columns, prefix: str) -> Q:
    """Rows with a sealed value that does not start with ``prefix`` (another key id)."""
    condition = Q()
    for column in columns:
        condition |= Q(**{f"{column}__gt": ""}) & ~Q(**{f"{column}__startswith": prefix})
    return condition


def row_label(model, public_id) -> str:
    label = next((entry.label for entry in _entries() if entry.model is model), model.__name__)
    return f"{label} {public_id}"
