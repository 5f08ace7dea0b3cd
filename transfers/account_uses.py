"""What transfers keeps pointing at a cloud account, and its sealed column, told to accounts at
start-up (accounts.dependents): accounts sits below and may not import transfers."""

from django.db.models import Exists

from accounts import dependents
from transfers.models import Export, Recipient, Share


def _history(account_ref) -> Exists:
    # Shares it is the source of, exports from it, imports into it: they keep its history.
    return (Exists(Share.objects.filter(source_account=account_ref))
            | Exists(Export.objects.filter(account=account_ref))
            | Exists(Recipient.objects.filter(target_account=account_ref)))


def _in_flight(account) -> int:
    # Shares waiting for approval or under way from it, imports into it not yet ended.
    waiting = [Share.State.REQUESTED, *Share.ACTIVE_STATES]
    return (Share.objects.filter(source_account=account, state__in=waiting).count()
            + Recipient.objects.filter(target_account=account, state__in=Recipient.OPEN_STATES).count())


def register() -> None:
    dependents.register_uses(dependents.AccountUses(history=_history, in_flight=_in_flight))
    dependents.register_sealed(dependents.SealedColumns(Recipient, {"link_sealed": "link"}, "pasted link"))
