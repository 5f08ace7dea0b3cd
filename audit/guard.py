"""A last line of defence against secrets reaching the audit trail.

Services decide what goes into ``details``; this guard only catches the obvious
mistakes, loudly (``AuditError``), because a secret written to an append-only
table can never be removed. What it refuses:

- keys (at any depth) naming a secret once split into words (``secretKey``,
  ``secret-key`` and ``SECRET_KEY`` all read as ``secret key``): any key with
  the word password, passwd, passphrase, secret, token, cookie, authorization,
  signature, presigned/pre signed, sessionid, csrftoken; or the pairs private key, api key,
  session key, signing key, encryption key, signed url, otp/totp code;
- string values (in details, target labels and names) carrying a pre-signed URL
  or request signature: ``X-Amz-Signature``, ``X-Amz-Credential``,
  ``X-Amz-Security-Token``, ``AWSAccessKeyId=`` with ``Signature=``, an
  ``Authorization: AWS4-HMAC-SHA256`` header, or a PEM private key block.

It does not refuse ``access_key`` (services record the masked hint under that
name) nor try to recognise bare random strings: too many false positives.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

from audit.errors import AuditError

SECRET_KEY_REFUSED = "Audit details must not hold secrets: key {path} looks like one."
SECRET_VALUE_REFUSED = "Audit data must not hold secrets: {path} looks like a signed URL, signature or private key."

_SECRET_WORDS = {
    "password", "passwd", "passphrase", "secret", "secrets", "token", "tokens", "cookie", "cookies",
    "authorization", "signature", "presigned", "sessionid", "csrftoken", "csrfmiddlewaretoken",
}
_SECRET_PAIRS = {
    ("private", "key"), ("api", "key"), ("session", "key"), ("signing", "key"), ("encryption", "key"),
    ("signed", "url"), ("pre", "signed"), ("otp", "code"), ("totp", "code"), ("otp", "secret"),
}
_SECRET_VALUE = re.compile(
    r"x-amz-signature|x-amz-credential|x-amz-security-token"
    r"|awsaccesskeyid=.*signature=|signature=.*awsaccesskeyid="
    r"|aws4-hmac-sha256\s+credential="
    r"|-----begin [a-z ]*private key-----",
    re.IGNORECASE | re.DOTALL,
)


def _words(key: str) -> list[str]:
    # camelCase -> camel Case, then split on anything that isn't a letter or digit.
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def is_secret_key(key: str) -> bool:
    words = _words(key)
    if _SECRET_WORDS.intersection(words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def is_secret_value(value: str) -> bool:
    return bool(_SECRET_VALUE.search(value))


def check_details(value: Any, *, path: str = "details") -> None:
    """Walk ``details`` and raise ``AuditError`` on the first secret-looking key or value."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key):
                raise AuditError(SECRET_KEY_REFUSED.format(path=f"{path}[{key!r}]"))
            check_details(item, path=f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_details(item, path=f"{path}[{index}]")
    elif isinstance(value, str) and is_secret_value(value):
        raise AuditError(SECRET_VALUE_REFUSED.format(path=path))


def check_strings(values: Iterable[tuple[str, str]]) -> None:
    """Refuse secret-looking values in free-text fields (labels, names)."""
    for path, value in values:
        if value and is_secret_value(value):
            raise AuditError(SECRET_VALUE_REFUSED.format(path=path))
