"""The layer's own retry loop and RequestId bookkeeping, shared by OAPI and OOS.

The SDKs' retries are switched off (osc-sdk-python `max_retries=0`, botocore
`total_max_attempts=1`) so that there is one policy, written down here:

* throttled or never-sent requests are repeated for any action (the cloud did
  not act on them);
* ambiguous failures (5xx, read timeout, dropped connection) are repeated only
  for idempotent actions: a repeated create may run twice on the cloud side,
  so callers look up their deterministic names instead;
* busy/wrong-state answers are not repeated here: resources change state over
  minutes, which is the job's wait, not a worker's sleep;
* credential errors are never repeated: four bad signatures lock the account.

A few quick attempts with full jitter absorb short bursts; anything longer
surfaces as RetryLater for the job's own backoff. Every attempt's RequestId is
kept, in order, on the result or on the error.
"""

import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from outscale import config
from outscale.errors import CloudError, RetryLater

logger = logging.getLogger("outscale")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    base_delay: float
    max_delay: float

    @classmethod
    def current(cls) -> "RetryPolicy":
        now = config.current()
        return cls(attempts=max(1, int(now.retry_attempts)), base_delay=float(now.retry_base_delay),
                   max_delay=float(now.retry_max_delay))

    def delay(self, attempt: int) -> float:
        # Full jitter: workers throttled together must not come back in step.
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))


def may_retry(error: CloudError, *, idempotent: bool) -> bool:
    if not isinstance(error, RetryLater) or error.kind == RetryLater.BUSY:
        return False
    return idempotent or not error.may_have_run


# --- RequestIds for the audit trail --------------------------------------------------

_recorder: contextvars.ContextVar[list | None] = contextvars.ContextVar("outscale_request_ids", default=None)


@contextlib.contextmanager
def record_request_ids():
    """Collect the RequestIds of every OAPI/OOS call made inside the block (errors included)."""
    collected: list[str] = []
    token = _recorder.set(collected)
    try:
        yield collected
    finally:
        _recorder.reset(token)


def _note(request_ids: tuple[str, ...]) -> None:
    collected = _recorder.get()
    if collected is not None:
        collected.extend(request_ids)


def run(
    *,
    action: str,
    idempotent: bool,
    send: Callable[[], T],
    request_id_of: Callable[[T], str | None],
    translate: Callable[[Exception], CloudError | None],
) -> tuple[T, tuple[str, ...]]:
    """Call `send` under the retry policy; return its result and every attempt's RequestId.

    `translate` maps a transport/SDK exception to a CloudError, or None for
    exceptions that are programming errors and must propagate unchanged.
    """
    policy = RetryPolicy.current()
    seen: list[str] = []
    for attempt in range(policy.attempts):
        try:
            result = send()
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
        else:
            request_id = request_id_of(result)
            if request_id:
                seen.append(request_id)
                _note((request_id,))
            logger.debug("%s ok (request %s, attempt %d)", action, request_id, attempt + 1)
            return result, tuple(seen)
        _note(error.request_ids)
        seen.extend(error.request_ids)
        error.request_ids = tuple(seen)
        error.action = action
        if attempt + 1 >= policy.attempts or not may_retry(error, idempotent=idempotent):
            logger.info("%s failed: %s", action, error)
            # `from None`: the SDK exceptions hold signed requests and their bodies
            # (FileLocation is a bearer URL); keep them out of tracebacks.
            raise error from None
        logger.info("%s attempt %d failed (%s); retrying", action, attempt + 1, error.kind)
        time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable: the loop returns or raises")
