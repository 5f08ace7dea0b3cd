"""The portal's mark on the images it creates, so that it adopts only its own.

An image name says nothing about who made it: a person in the recipient account can create an
image under the copy's name between approval and import, and a lookup by name would then adopt,
tag and show it as the approved copy. So each CreateImage the portal sends carries a mark that
only the portal can write, checked before any image found by name is adopted.

Where: CreateImage takes no tags (its parameters in the OAPI spec shipped in osc-sdk-python:
Description is the only free text set at creation), and tags added after the create would leave
the image unmarked until then, so the mark is in the Description, written with the image.

Beside the mark, the image the copy came from (``[from ami-… omiportal-mark:…]``): written with the
image at no extra call, it names a copy's source on the copy itself, where a tag would cost a
``CreateTags`` of its own per source image (tags are written many images to a call only when their
values are equal). Read back by `source_of` (the inventory's orphans). Not authenticated: the
portal's records, not the cloud's, say where its copies came from.

What: an HMAC-SHA256 of the subject (which transfer and which attempt) under a key the portal hands
in (``config.mark_keys``: DJANGO_SECRET_KEY and its fallbacks). The account's owner can read and
edit the description, but cannot make the mark of a subject without the key. Not the credential key
ring: `rotate_credential_keys` re-seals what the database holds and then retires old keys, and a
mark in the cloud cannot be re-sealed. A secret key is rotated the Django way (the old one kept in
DJANGO_SECRET_KEY_FALLBACKS until the transfers in flight have ended), and marks made under a
fallback are still recognised.
"""

import hmac
import re

from django.utils.crypto import salted_hmac

from outscale import config

_SALT = "outscale.marks"
PREFIX = "omiportal-mark:"
_LENGTH = 32  # hex characters: 128 bits
# What `marked` adds to a description: " [" + the mark + "]", and "from <image id> " before the
# mark (an OUTSCALE image id: "ami-" and 8 hex digits; a longer one takes room from the text).
SPACE = len(" []") + len(PREFIX) + _LENGTH
SOURCE_SPACE = len("from ami-00000000 ")
_SOURCE = re.compile(r"\[from (\S{1,64}) $")


def _mark(subject: str, secret) -> str:
    return PREFIX + salted_hmac(_SALT, subject, secret=secret, algorithm="sha256").hexdigest()[:_LENGTH]


def mark(subject: str) -> str:
    """The portal's mark for ``subject`` (e.g. ``recipient:<public id>:<attempt>``)."""
    return _mark(subject, _keys()[0])


def marked(description: str, *, subject: str, source: str = "") -> str:
    """``description`` with the mark of ``subject`` appended (after the ``source`` image's id)."""
    return (description + suffix(subject, source=source)).strip()


def suffix(subject: str, *, source: str = "") -> str:
    """What `marked` appends to a description."""
    return f" [from {source} {mark(subject)}]" if source else f" [{mark(subject)}]"


def source_of(description: str | None) -> str:
    """The source image id written beside the portal's mark, "" when there is none."""
    text = description or ""
    start = text.rfind(PREFIX)
    found = _SOURCE.search(text[:start]) if start >= 0 else None
    return found.group(1) if found else ""


def is_marked(description: str | None, *, subject: str) -> bool:
    """Whether ``description`` carries the portal's mark for ``subject`` (current or fallback key)."""
    text = description or ""
    return any(hmac.compare_digest(_mark(subject, secret), _find(text)) for secret in _keys())


def _keys() -> tuple[str, ...]:
    keys = config.current().mark_keys
    if not keys:
        raise RuntimeError(config.NOT_CONFIGURED)
    return keys


def _find(text: str) -> str:
    start = text.rfind(PREFIX)
    return text[start:start + len(PREFIX) + _LENGTH] if start >= 0 else ""
