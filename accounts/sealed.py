"""Where the portal keeps values sealed by the vault: every column, for key rotation and its checks.

Each model named here has a ``team`` and a ``public_id``: with the vault field, they are the
associated data a value was sealed with. Models above accounts (a pasted link is a transfers
Recipient) are looked up by name, since accounts may not import them.
"""

from django.apps import apps
from django.db.models import Q

# (app label, model name, {column: vault field})
SEALED = (
    ("accounts", "CloudAccount", {"access_key_sealed": "access_key", "secret_key_sealed": "secret_key"}),
    ("transfers", "Recipient", {"link_sealed": "link"}),
)
LABELS = {"CloudAccount": "cloud account", "Recipient": "pasted link"}


def sealed_models():
    """(model, {column: vault field}) for every model that keeps sealed values."""
    return [(apps.get_model(app, name), columns) for app, name, columns in SEALED]


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
    return f"{LABELS.get(model.__name__, model.__name__)} {public_id}"
