"""The credential vault: AES-256-GCM sealing of cloud keys at rest.

A sealed value reads ``v1$<kid>$<base64url(nonce | ciphertext | tag)>``. The
associated data binds it to its format version, key id, team, account and
field, so a value copied to another row, team or field does not open, and a
tampered version or key id is refused rather than tried with another key.

Keys come from OMIPORTAL_CREDENTIAL_KEYS ("kid:base64(32 bytes)", comma
separated); the first key seals, every key opens. Only the cloud layer opens
values (accounts/keys.py); the rotation command
re-seals without ever handing plaintext back to its caller.
"""

import base64
import binascii
import os
import re
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

VERSION = "v1"
NONCE_BYTES = 12
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class VaultError(Exception):
    """A sealed value could not be produced or opened. Never carries key material."""


class KeyRingError(VaultError):
    """OMIPORTAL_CREDENTIAL_KEYS is malformed."""


@dataclass(frozen=True)
class KeyRing:
    keys: dict  # kid -> 32-byte key
    active_kid: str

    def __repr__(self):  # never print key bytes
        return f"KeyRing(kids={list(self.keys)}, active={self.active_kid!r})"


def parse_key_ring(value: str) -> KeyRing:
    entries = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not entries:
        raise KeyRingError("OMIPORTAL_CREDENTIAL_KEYS is empty: set at least one key as kid:base64key.")
    keys = {}
    for position, entry in enumerate(entries, start=1):
        kid, sep, encoded = entry.partition(":")
        if not sep or not KEY_ID_RE.match(kid):
            raise KeyRingError(
                f"OMIPORTAL_CREDENTIAL_KEYS entry {position} must read kid:base64key, with a key id of 1-32 "
                "letters, digits, '_' or '-'."
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyRingError(f"OMIPORTAL_CREDENTIAL_KEYS key {kid!r} is not valid base64.") from None
        if len(key) != 32:
            raise KeyRingError(f"OMIPORTAL_CREDENTIAL_KEYS key {kid!r} must be 32 bytes (AES-256), not {len(key)}.")
        if kid in keys:
            raise KeyRingError(f"OMIPORTAL_CREDENTIAL_KEYS lists key id {kid!r} twice.")
        keys[kid] = key
    return KeyRing(keys=keys, active_kid=entries[0].partition(":")[0])


@lru_cache(maxsize=1)
def key_ring() -> KeyRing:
    return parse_key_ring(settings.OMIPORTAL_CREDENTIAL_KEYS)


@receiver(setting_changed)
def _forget_key_ring(*, setting, **kwargs):
    if setting == "OMIPORTAL_CREDENTIAL_KEYS":
        key_ring.cache_clear()


def _aad(*, kid: str, team_id, object_id, field: str) -> bytes:
    return "|".join(["omiportal-credential", VERSION, kid, str(team_id), str(object_id), field]).encode()


def seal(plaintext: str, *, team_id, object_id, field: str) -> str:
    ring = key_ring()
    kid = ring.active_kid
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(ring.keys[kid]).encrypt(
        nonce, plaintext.encode("utf-8"), _aad(kid=kid, team_id=team_id, object_id=object_id, field=field)
    )
    return f"{VERSION}${kid}${base64.urlsafe_b64encode(nonce + body).decode()}"


def key_id_of(sealed: str) -> str:
    """The key id a sealed value names (no decryption)."""
    return _split(sealed)[0]


def _split(sealed: str) -> tuple[str, bytes]:
    parts = (sealed or "").split("$")
    if len(parts) != 3 or parts[0] != VERSION or not KEY_ID_RE.match(parts[1]):
        raise VaultError("The stored credential is not in a format this portal can read.")
    try:
        raw = base64.urlsafe_b64decode(parts[2].encode())
    except (binascii.Error, ValueError):
        raise VaultError("The stored credential is damaged.") from None
    if len(raw) < NONCE_BYTES + 16:
        raise VaultError("The stored credential is damaged.")
    return parts[1], raw


def decrypt(sealed: str, *, team_id, object_id, field: str) -> str:
    """Open a sealed value. Fails closed with VaultError; never returns ciphertext."""
    kid, raw = _split(sealed)
    key = key_ring().keys.get(kid)
    if key is None:
        raise VaultError(f"The stored credential was sealed with key id {kid!r}, which the key ring lacks.")
    try:
        plain = AESGCM(key).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(kid=kid, team_id=team_id, object_id=object_id, field=field)
        )
    except InvalidTag:
        raise VaultError("The stored credential does not open: it was altered or belongs to another record.") from None
    return plain.decode("utf-8")


def reseal(sealed: str, *, team_id, object_id, field: str) -> str:
    """Re-seal under the active key (rotation). The plaintext never leaves this function."""
    return seal(decrypt(sealed, team_id=team_id, object_id=object_id, field=field),
                team_id=team_id, object_id=object_id, field=field)


def mask_access_key(access_key: str) -> str:
    """What pages may show of an access key id: its last four characters."""
    tail = access_key[-4:] if len(access_key) > 8 else ""
    return f"••••••••{tail}"
