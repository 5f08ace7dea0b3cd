"""What the apps above accounts keep pointing at a cloud account, and the sealed values they keep.

accounts sits below transfers and may not import it (the layers contract in pyproject.toml). Yet
deleting, retiring or re-keying an account must know whether shares, exports or imports use it,
and key rotation must reach every sealed column. So each app above tells accounts at start-up,
from its AppConfig.ready(): ``register_uses`` for what points at an account, ``register_sealed``
for a model with sealed columns. accounts then asks without knowing who answers.
"""

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import BooleanField, Exists, OuterRef, Value


@dataclass(frozen=True)
class AccountUses:
    # Given OuterRef("pk") of a CloudAccount query: an Exists() true when something points at it.
    history: Callable[[OuterRef], Exists]
    # How many transfers still depend on the account being what was approved (not yet ended).
    in_flight: Callable[[object], int]


@dataclass(frozen=True)
class SealedColumns:
    model: type
    columns: dict[str, str]  # column → vault field (the associated data it was sealed with)
    label: str  # how a person calls a row of it ("pasted link")


_uses: list[AccountUses] = []
_sealed: list[SealedColumns] = []


def register_uses(uses: AccountUses) -> None:
    if uses not in _uses:
        _uses.append(uses)


def register_sealed(entry: SealedColumns) -> None:
    if entry not in _sealed:
        _sealed.append(entry)


def used():
    """For a CloudAccount query (filter or annotate): true when something above still points at it."""
    exists = [uses.history(OuterRef("pk")) for uses in _uses]
    if not exists:
        return Value(False, output_field=BooleanField())
    return functools.reduce(operator.or_, exists)


def in_flight(account) -> int:
    return sum(uses.in_flight(account) for uses in _uses)


def sealed_elsewhere() -> list[SealedColumns]:
    return list(_sealed)
