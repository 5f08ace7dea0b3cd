"""What distribution keeps pointing at a cloud account, told to accounts at start-up
(accounts.dependents): accounts sits below and may not import distribution.

Each part adds its own rows here. Their foreign keys protect the account, so an account they name is
retired (keys wiped, out of every picker), never deleted: deleting it would fail on them anyway.
"""

from django.db.models import Exists

from accounts import dependents
from distribution.models import GroupMember, InventoryEntry, StandingRecipient


def _history(account_ref) -> Exists:
    # Recipient groups: any invitation or membership of the account, whatever its state.
    return Exists(GroupMember.objects.filter(account=account_ref))


def _in_flight(account) -> int:
    return 0  # a group membership never holds up retiring the account: a retired account is in no group's list


def _signed_history(account_ref) -> Exists:
    # Standing approvals: an account signed for stays on their record (its bound id and Region).
    return Exists(StandingRecipient.objects.filter(account=account_ref))


def _inventory_history(account_ref) -> Exists:
    # The inventory: a copy known in the account (an orphan included) keeps its record.
    return Exists(InventoryEntry.objects.filter(account=account_ref))


def register() -> None:
    dependents.register_uses(dependents.AccountUses(history=_history, in_flight=_in_flight))
    # A retired account stops the approvals that name it (their digest no longer matches): nothing to wait for.
    dependents.register_uses(dependents.AccountUses(history=_signed_history, in_flight=_in_flight))
    dependents.register_uses(dependents.AccountUses(history=_inventory_history, in_flight=_in_flight))
