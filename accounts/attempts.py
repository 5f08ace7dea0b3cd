"""What identifies a sign-in attempt, without keeping what could be a secret (INS-07).

People type passwords into the user-name box (one field too early, a password manager that
misfires). Whatever is stored about a failed sign-in lands in the append-only audit chain, or in
axes' lock-out tables, and an append-only chain can never give it back. So a typed name that is
an existing person's email is stored as that person; anything else only as a keyed fingerprint
(HMAC-SHA256 under a key derived from SECRET_KEY, truncated) and its length: attempts with the same
text still match one another, and the lock-out still counts per name and address, but the text
cannot be read back, nor guessed offline without the key.
"""

from django.utils.crypto import salted_hmac

from accounts.models import User

UNKNOWN_PREFIX = "unknown:"  # axes' name for a typed name that is nobody's email
_FINGERPRINT_SALT = "omiportal.accounts.attempts.typed-name"
_FINGERPRINT_CHARS = 16  # 64 bits: enough to tell attempts apart, too few to be worth attacking
_EMAIL_MAX = 254


def fingerprint(typed: str) -> str:
    return salted_hmac(_FINGERPRINT_SALT, typed, algorithm="sha256").hexdigest()[:_FINGERPRINT_CHARS]


def known_user(typed: str) -> User | None:
    text = typed.strip()
    if not text or len(text) > _EMAIL_MAX or "\x00" in text or "@" not in text:
        return None
    return User.objects.filter(email__iexact=text).first()


def attempt_details(typed: str) -> tuple[User | None, dict]:
    """The person a failed sign-in named (when it named one), and the audit details that identify it."""
    user = known_user(typed)
    if user is not None:
        return user, {"user_id": user.pk, "email": user.email}
    return None, {"name_fingerprint": fingerprint(typed), "name_length": len(typed)}


def axes_name_details(name: str) -> tuple[User | None, dict]:
    """As ``attempt_details``, for the name axes keeps (what ``axes_username`` gave it)."""
    if name.startswith(UNKNOWN_PREFIX):
        return None, {"name_fingerprint": name.removeprefix(UNKNOWN_PREFIX)}
    return attempt_details(name)


def axes_username(request, credentials) -> str | None:
    """AXES_USERNAME_CALLABLE: the name axes stores and counts failures by (AccessAttempt,
    AccessFailureLog, AccessLog and its log lines): the person's email, or the fingerprint."""
    typed = (credentials or {}).get("username")
    if typed is None and request is not None:
        typed = getattr(request, "POST", {}).get("username")
    if typed is None:
        return None
    user = known_user(str(typed))
    return user.email if user is not None else UNKNOWN_PREFIX + fingerprint(str(typed))
