"""Who and where an audit event comes from: the current request, job or command.

A ``ContextVar`` rather than a thread-local, so it follows the code into
``asgiref`` thread hops and never leaks between requests handled by one thread.
"""

import contextlib
import ipaddress
import unicodedata
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

USER_AGENT_MAX = 512


@dataclass(frozen=True)
class AuditContext:
    request_id: str
    ip: str | None = None
    user_agent: str = ""
    # Kept whole so ``request.user`` is read when an event is recorded: the auth
    # middleware runs after ours and may not have set it yet.
    request: HttpRequest | None = None
    # For jobs and commands: who the work is done for (None: the system).
    actor: Any = None
    # A job's events may wait in the pending table when another transaction holds the chain head,
    # as a request's always may (audit/recorder.py): for work run side by side in many threads.
    park: bool = False


_current: ContextVar[AuditContext | None] = ContextVar("omiportal_audit_context", default=None)


def current() -> AuditContext | None:
    return _current.get()


def _keeping_denials():
    # A request, job or command is where a denial rolled back with its transaction is written
    # again (see audit.recorder.keeping_denials). Imported here: the recorder imports us.
    from audit.recorder import keeping_denials

    return keeping_denials()


def clean_user_agent(value: str) -> str:
    """Drop control characters (C0, DEL, C1: newlines, ANSI escapes) and truncate.

    The user agent is the one free-text field taken straight from the client, so
    it is cleaned on the way in; everything else is stored verbatim and escaped
    on display (see ``audit.text.safe_text``).
    """
    cleaned = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs"))
    return cleaned[:USER_AGENT_MAX]


def normalise_ip(value: str | None) -> str | None:
    """A valid address in the form the database gives back, or None."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # PostgreSQL's inet prints mapped addresses as ::ffff:1.2.3.4; Python 3.11 doesn't.
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: for the audit trail and for lock-outs (AXES_CLIENT_IP_CALLABLE).

    Each proxy appends the address it was connected from to X-Forwarded-For, so with N trusted
    proxies the client is the N-th entry from the right (REMOTE_ADDR being the nearest proxy).
    Anything further left is whatever the client wrote there. With none trusted: REMOTE_ADDR.
    """
    trusted = settings.OMIPORTAL_TRUSTED_PROXIES
    if not trusted:
        return normalise_ip(request.META.get("REMOTE_ADDR"))
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < trusted:
        # The request did not come through every proxy: the connection is all we can believe.
        return normalise_ip(request.META.get("REMOTE_ADDR"))
    return normalise_ip(hops[-trusted])


@contextlib.contextmanager
def request_context(*, request: HttpRequest) -> Iterator[AuditContext]:
    context = AuditContext(
        request_id=uuid.uuid4().hex,
        ip=client_ip(request),
        user_agent=clean_user_agent(request.META.get("HTTP_USER_AGENT", "")),
        request=request,
    )
    token = _current.set(context)
    try:
        with _keeping_denials():
            yield context
    finally:
        _current.reset(token)


@contextlib.contextmanager
def job_context(*, job_id: str | None = None, actor: Any = None, park: bool = False) -> Iterator[AuditContext]:
    """Attribute events recorded inside to a background job or a management command.

    ``request_id`` becomes the job id (RQ's, e.g. ``share-export-<uuid>``) or
    ``cmd-<hex>`` for a command, so one run's events can be found together.
    ``actor`` is the user the work is done for; None means the system. ``park``: events wait to
    be chained rather than for the head when another transaction holds it (AuditContext.park).
    """
    context = AuditContext(request_id=job_id or f"cmd-{uuid.uuid4().hex}", actor=actor, park=park)
    token = _current.set(context)
    try:
        with _keeping_denials():
            yield context
    finally:
        _current.reset(token)
