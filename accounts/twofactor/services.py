"""Writes for two-factor devices.

A code is checked with the device row locked, so two requests carrying the same
code cannot both pass: django-otp's ``last_t`` refuses a time step already used,
and its throttling doubles the wait after each wrong code. Failures are recorded
and committed before the error is raised.
"""

from base64 import b32encode

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.recorder import record

DEVICE_NAME = "Authenticator app"
WRONG_CODE_MESSAGE = "That code is not right, or it was already used. Wait for the next code and try again."
THROTTLED_MESSAGE = "Too many wrong codes. Wait {seconds} seconds before trying again."
NO_DEVICE_MESSAGE = "Two-factor sign-in is not set up for your account."
ALREADY_ENROLLED_MESSAGE = "Two-factor sign-in is already active for your account."


class TwoFactorError(ValidationError):
    """A code was refused; the message is shown on the form."""


def device_for_user(*, user: User, confirmed: bool = True) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=confirmed).order_by("pk").first()


def has_device(*, user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def secret_base32(device: TOTPDevice) -> str:
    return b32encode(device.bin_key).decode("ascii")


@transaction.atomic
def twofactor_start(*, user: User) -> TOTPDevice:
    """The unconfirmed device whose secret the setup page shows (one per user until confirmed)."""
    if has_device(user=user):
        raise TwoFactorError(ALREADY_ENROLLED_MESSAGE)
    device = device_for_user(user=user, confirmed=False)
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def _check_code(*, user: User, confirmed: bool, code: str, stage: str, on_success) -> TOTPDevice:
    """Verify ``code`` on the user's device under a row lock; call ``on_success(device)`` in the same transaction."""
    error = None
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=confirmed).order_by("pk").first()
        if device is None:
            raise TwoFactorError(NO_DEVICE_MESSAGE)
        allowed, info = device.verify_is_allowed()
        if not allowed:
            wait = max(1, int(((info or {}).get("locked_until", timezone.now()) - timezone.now()).total_seconds()) + 1)
            error = THROTTLED_MESSAGE.format(seconds=wait)
            details = {"stage": stage, "reason": "throttled", "failures": device.throttling_failure_count}
        elif device.verify_token(code):  # saves last_t and resets the throttle, or counts the failure
            on_success(device)
        else:
            error = WRONG_CODE_MESSAGE
            details = {"stage": stage, "reason": "wrong_code", "failures": device.throttling_failure_count}
        if error:
            record(action="twofactor.failed", outcome="failed", actor=user, target=user, details=details)
    if error:
        raise TwoFactorError(error)
    return device


def twofactor_confirm(*, user: User, code: str) -> TOTPDevice:
    """Activate the device shown on the setup page once a code from it checks out."""

    def confirm(device):
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        # One active device per user: leftovers from abandoned setups go.
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        record(action="twofactor.enrolled", actor=user, target=user, details={"device": device.name})

    if has_device(user=user):
        raise TwoFactorError(ALREADY_ENROLLED_MESSAGE)
    return _check_code(user=user, confirmed=False, code=code, stage="enrol", on_success=confirm)


def twofactor_verify(*, user: User, code: str) -> TOTPDevice:
    """The second sign-in step. The caller then rotates the session key and calls ``django_otp.login``."""

    def verified(device):
        record(action="twofactor.verified", actor=user, target=user, details={"device": device.name})

    return _check_code(user=user, confirmed=True, code=code, stage="verify", on_success=verified)


def twofactor_remove(*, user: User, code: str) -> None:
    """Remove the user's device; a current code proves the person still holds it."""

    def remove(device):
        record(action="twofactor.removed", actor=user, target=user, details={"device": device.name})
        TOTPDevice.objects.filter(user=user).delete()

    _check_code(user=user, confirmed=True, code=code, stage="remove", on_success=remove)
