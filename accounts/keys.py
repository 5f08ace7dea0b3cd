"""Opening a cloud account's keys for the cloud layer: the bridge between stored accounts and OUTSCALE.

This is the only place in the portal that opens sealed keys (DESIGN §5): the
plaintext goes straight into a Credentials object handed to the cloud client,
in the worker or service path that is about to call OUTSCALE.
"""

import contextlib
import threading
from contextvars import ContextVar

from accounts import vault
from audit import recorder
from audit.recorder import record
from outscale.credentials import Credentials

# What ``credentials_for`` raises when sealed keys do not open (recorded as a failed use first): the
# name callers catch, so that only this bridge and the services that seal import the vault.
KeysDoNotOpen = vault.VaultError

# Set by `opened_once()`: the keys opened so far in this sweep, by account pk, and the lock that
# guards that dict (held only to find or add an account's entry).
_opened: ContextVar[tuple[threading.Lock, dict] | None] = ContextVar("omiportal_opened_keys", default=None)


class _Once:
    """One account's keys within a sweep: threads that need them wait for the first opening (this
    account's lock), never for another account's."""

    __slots__ = ("creds", "lock")

    def __init__(self, creds: Credentials | None = None):
        self.lock, self.creds = threading.Lock(), creds


@contextlib.contextmanager
def opened_once():
    """Within this block (one sweep and the calls it makes side by side), each account's keys are
    opened and recorded once, whatever the number of calls made with them: a hand-off of hundreds
    of imports would otherwise add hundreds of identical `credential.used` events to the chain."""
    token = _opened.set((threading.Lock(), {}))
    try:
        yield
    finally:
        _opened.reset(token)


def credentials_for(account, *, purpose: str) -> Credentials:
    """Open an account's keys for one use (or one sweep, see `opened_once`), and record that use
    in the audit trail.

    Call it outside long transactions: the audit append holds the chain's lock until commit.
    A value that does not open is recorded as a failed use, then the VaultError propagates.
    """
    scope = _opened.get()
    if scope is None:
        return _open(account, purpose=purpose, sweep=False)
    lock, opened = scope
    with lock:
        once = opened.setdefault(account.pk, _Once())
    with once.lock:
        if once.creds is None:
            once.creds = _open(account, purpose=purpose, sweep=True)
        return once.creds


def open_ahead(uses) -> None:
    """Within `opened_once`: open the keys of the accounts in ``uses`` ((account, purpose) pairs)
    that this sweep has not opened yet, and record those uses together, in one append to the
    audit trail. A hand-off into hundreds of accounts would otherwise append one event per
    account from its threads, each waiting for the chain's lock in turn. Keys that do not open
    are left to `credentials_for`, which records the failure when a call needs them."""
    scope = _opened.get()
    if scope is None:
        return
    lock, opened = scope
    with lock:
        todo = {account.pk: (account, purpose) for account, purpose in uses if account.pk not in opened}
    ready = []
    for account, purpose in todo.values():
        try:
            ready.append((account, purpose, _decrypt(account)))
        except vault.VaultError:
            continue
    if not ready:
        return
    with recorder.atomic():
        for account, purpose, _ in ready:
            record(action="credential.used", team=account.team, target=account, details=_details(account, purpose))
    with lock:
        for account, _, creds in ready:
            opened.setdefault(account.pk, _Once(creds))


def _details(account, purpose: str, *, sweep: bool = True) -> dict:
    details = {"purpose": purpose, "account_id": account.account_id, "region": account.region}
    if sweep:
        details["scope"] = "this sweep's calls"
    return details


def _decrypt(account) -> Credentials:
    ids = {"team_id": account.team.public_id, "object_id": account.public_id}
    access_key = vault.decrypt(account.access_key_sealed, field="access_key", **ids)
    secret_key = vault.decrypt(account.secret_key_sealed, field="secret_key", **ids)
    return Credentials(access_key=access_key, secret_key=secret_key, region=account.region)


def _open(account, *, purpose: str, sweep: bool) -> Credentials:
    details = _details(account, purpose, sweep=sweep)
    try:
        creds = _decrypt(account)
    except vault.VaultError as exc:
        record(action="credential.used", outcome="failed", team=account.team, target=account,
               details={**details, "reason": str(exc)})
        raise
    record(action="credential.used", team=account.team, target=account, details=details)
    return creds


def open_pasted_link(recipient) -> str:
    """The manifest URL a recipient pasted, sealed until the import job hands it to OUTSCALE."""
    return vault.decrypt(recipient.link_sealed, team_id=recipient.team.public_id,
                         object_id=recipient.public_id, field="link")
