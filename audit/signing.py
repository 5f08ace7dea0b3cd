"""Ed25519 keys for audit checkpoints, read from settings, never from the database.

``OMIPORTAL_AUDIT_SIGNING_KEY`` is the base64 of a 32-byte raw Ed25519 private
key; ``OMIPORTAL_AUDIT_VERIFY_KEYS`` holds extra base64 raw public keys (comma
separated) so checkpoints signed before a key rotation still verify. A key is
named by its fingerprint: ``ed25519:`` and the SHA-256 hex of its raw public key.
"""

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from django.conf import settings

from audit.errors import AuditError

BAD_SIGNING_KEY = "OMIPORTAL_AUDIT_SIGNING_KEY must be the base64 of a 32-byte raw Ed25519 private key."
BAD_VERIFY_KEY = "OMIPORTAL_AUDIT_VERIFY_KEYS entry {index} is not the base64 of a 32-byte raw Ed25519 public key."


def _raw32(text: str, error: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuditError(error) from None
    if len(raw) != 32:
        raise AuditError(error)
    return raw


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    return "ed25519:" + hashlib.sha256(public_bytes(key)).hexdigest()


def signing_key() -> Ed25519PrivateKey | None:
    """The configured private key, or None when checkpoints are not configured."""
    text = getattr(settings, "OMIPORTAL_AUDIT_SIGNING_KEY", "") or ""
    if not text:
        return None
    return Ed25519PrivateKey.from_private_bytes(_raw32(text, BAD_SIGNING_KEY))


def verify_keys() -> dict[str, Ed25519PublicKey]:
    """Every public key a checkpoint may be signed with, by fingerprint."""
    keys: dict[str, Ed25519PublicKey] = {}
    private = signing_key()
    if private is not None:
        keys[fingerprint(private.public_key())] = private.public_key()
    extra = getattr(settings, "OMIPORTAL_AUDIT_VERIFY_KEYS", ()) or ()
    if isinstance(extra, str):
        extra = [part for part in extra.split(",") if part.strip()]
    for index, text in enumerate(extra, start=1):
        key = Ed25519PublicKey.from_public_bytes(_raw32(text, BAD_VERIFY_KEY.format(index=index)))
        keys[fingerprint(key)] = key
    return keys


def sign(private: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(private.sign(message)).decode("ascii")


def signature_valid(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


def generate_private_key_b64() -> str:
    """A new key for OMIPORTAL_AUDIT_SIGNING_KEY (``manage.py audit_checkpoint --generate-key``)."""
    key = Ed25519PrivateKey.generate()
    return base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode("ascii")


def public_key_b64(private_b64: str) -> str:
    key = Ed25519PrivateKey.from_private_bytes(_raw32(private_b64, BAD_SIGNING_KEY))
    return base64.b64encode(public_bytes(key.public_key())).decode("ascii")
