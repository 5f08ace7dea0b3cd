"""Named lists of recipient accounts that apps above transfers offer on the share form.

The distribution app keeps recipient groups ("all production accounts"), but transfers may not
import it (the layers contract in pyproject.toml). So, as transfers/events.py does for events, this
module is a registry: an app registers a ``Provider`` from its AppConfig.ready(), and the share form
asks it for the team's lists and, when one is chosen, for its accounts *now*. The form then ticks
those accounts; the request names exactly the accounts ticked when it is sent, which the approver
signs one by one (the digest), as for any request. A list that changes afterwards changes no request.
"""

from collections.abc import Callable
from typing import NamedTuple

from django.http import Http404

UNKNOWN_SOURCE = "No such recipient list."


class RecipientSource(NamedTuple):
    key: str  # "<prefix>:<id>", safe in a query string
    label: str


class Provider(NamedTuple):
    prefix: str  # letters only: the part of a key before ":"
    # choices(*, team) -> [RecipientSource]: what the team may pick, in the order shown.
    choices: Callable[..., list[RecipientSource]]
    # accounts(*, access, ident) -> [CloudAccount]: the list's accounts now. Raises
    # accounts.access.NotInTeam for another team's list (a 404, recorded by the view's boundary).
    accounts: Callable[..., list]


_providers: dict[str, Provider] = {}


def register(provider: Provider) -> None:
    if not provider.prefix.isalpha():
        raise ValueError(f"recipient source prefix {provider.prefix!r}: letters only")
    _providers[provider.prefix] = provider


def sources_for_team(*, team) -> list[RecipientSource]:
    return [source for provider in _providers.values() for source in provider.choices(team=team)]


def source_accounts(*, access, key: str) -> list:
    """The accounts of the list ``key`` for this team, read now; a 404 for a key nobody answers."""
    prefix, _, ident = (key or "").partition(":")
    provider = _providers.get(prefix)
    if provider is None or not ident:
        raise Http404(UNKNOWN_SOURCE)
    return provider.accounts(access=access, ident=ident)
