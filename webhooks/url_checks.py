"""Checking a webhook endpoint's URL, when it is saved and again before every delivery.

The portal sends requests to these URLs from inside its network, so a URL must not turn it into a
way in (server-side request forgery): https only, no user name or password, and a host whose every
address is public: no loopback, private, link-local, multicast, shared, reserved or unspecified
address. The host is resolved when the endpoint is saved and again at each delivery, and the
delivery connects to an address it has just checked (``Target.address``), so a name that later
resolves somewhere inside (DNS rebinding) is refused then too.

OMIPORTAL_WEBHOOK_ALLOW_HOSTS lists hosts (``127.0.0.1``) or host:port pairs exempt from the
address rules and allowed over plain http: a receiver on the operator's own machine, the tests'.
Empty by default; never needed in production.

Like link_checks.py for pasted links, the checks run on the raw text first, and no message quotes
the URL's path or query (a receiver may put a token there): only its host and addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

MAX_URL_LENGTH = 2000

MSG_EMPTY = "Enter the URL of the receiver, starting with https://."
MSG_TOO_LONG = f"This URL is too long (at most {MAX_URL_LENGTH} characters)."
MSG_BAD_CHARACTERS = ("The URL contains spaces, control characters, backslashes or non-ASCII characters; "
                      "write an international host name in its xn-- form.")
MSG_SCHEME = "Webhook URLs must start with https://: messages are sent over TLS only."
MSG_CREDENTIALS = ("The URL has a user name or password in it (an “@” before the host): put no credentials in a "
                   "webhook URL; every message is signed with the endpoint's secret instead.")
MSG_NO_HOST = "The URL names no host."
MSG_PORT = "The URL's port is not a number from 1 to 65535."
MSG_FRAGMENT = "The URL ends with a “#…” fragment, which is never sent to a server: remove it."
MSG_UNRESOLVED = "{host} does not resolve to any address: check the host name."
MSG_NOT_PUBLIC = ("{host} resolves to {address}, {kind}: webhooks are sent to public addresses only "
                  "(OMIPORTAL_WEBHOOK_ALLOW_HOSTS exempts a test receiver).")
MSG_IP_NOT_PUBLIC = ("{address} is {kind}: webhooks are sent to public addresses only "
                     "(OMIPORTAL_WEBHOOK_ALLOW_HOSTS exempts a test receiver).")

_DEFAULT_PORTS = {"http": 80, "https": 443}


class UrlRefused(ValidationError):
    """A webhook URL was refused; ``.messages`` holds one sentence."""


@dataclass(frozen=True)
class Target:
    """Where a checked URL sends: the scheme, the host (for the Host header and TLS), the port, the
    path and query, and the addresses it resolved to (every one checked; connect to the first)."""

    scheme: str
    host: str
    port: int
    path: str = field(repr=False)  # may hold a receiver's token: never in repr
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def allowed(host: str, port: int) -> bool:
    entries = {entry.strip().lower() for entry in settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS if entry.strip()}
    return host in entries or f"{host}:{port}" in entries or f"[{host}]:{port}" in entries


def check_url(url: str, *, resolve: bool = True) -> Target:
    """The URL's target if it may receive webhooks; ``UrlRefused`` with a sentence otherwise."""
    url = (url or "").strip()
    if not url:
        raise UrlRefused(MSG_EMPTY)
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(MSG_TOO_LONG)
    if not url.isascii() or any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise UrlRefused(MSG_BAD_CHARACTERS)
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or not rest:
        raise UrlRefused(MSG_SCHEME)
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority:
        raise UrlRefused(MSG_CREDENTIALS)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused(MSG_PORT) from None
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused(MSG_NO_HOST)
    if parts.fragment or url.endswith("#"):
        raise UrlRefused(MSG_FRAGMENT)
    port = port or _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise UrlRefused(MSG_PORT)
    exempt = allowed(host, port)
    if scheme != "https" and not exempt:
        raise UrlRefused(MSG_SCHEME)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    addresses = _addresses(host, port, exempt=exempt) if resolve else ()
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=addresses)


def _addresses(host: str, port: int, *, exempt: bool) -> tuple[str, ...]:
    literal = _ip(host)
    if literal is not None:
        if not exempt and _kind(literal):
            raise UrlRefused(MSG_IP_NOT_PUBLIC.format(address=literal, kind=_kind(literal)))
        return (str(literal),)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise UrlRefused(MSG_UNRESOLVED.format(host=host)) from None
    found = list(dict.fromkeys(info[4][0] for info in infos))
    if not found:
        raise UrlRefused(MSG_UNRESOLVED.format(host=host))
    if not exempt:
        for address in found:  # every one: a client may use any, and a resolver may rotate them
            kind = _kind(ipaddress.ip_address(address.split("%", 1)[0]))
            if kind:
                raise UrlRefused(MSG_NOT_PUBLIC.format(host=host, address=address, kind=kind))
    return tuple(found)


def _ip(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _kind(ip) -> str:
    """What makes an address unfit, in words ("" when it is public)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    for test, kind in ((ip.is_unspecified, "an unspecified address"), (ip.is_loopback, "a loopback address"),
                       (ip.is_link_local, "a link-local address"), (ip.is_multicast, "a multicast address"),
                       (ip.is_private, "a private address"), (ip.is_reserved, "a reserved address")):
        if test:
            return kind
    return "" if ip.is_global else "not a public address"
