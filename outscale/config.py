"""How the cloud layer is set up: endpoints, timeouts, pace, retries and the key of the portal's mark.

Plain values handed in by whoever embeds the layer: the portal's wiring builds them from its
settings at start-up and again whenever a setting changes (omiportal/apps.py, so tests'
override_settings still reach the layer). The layer reads no settings and imports no app.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

NOT_CONFIGURED = "The cloud layer has no key for the portal's mark: call outscale.configure() first."


@dataclass(frozen=True)
class Config:
    # Region → {"api": URL, "oos": URL}; a Region not named here uses OUTSCALE's public endpoints.
    endpoints: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # OAPI calls per second per account: shared by every process through the Redis at pace_url
    # (shared_pace.py); without one, per account and process (pace.py).
    calls_per_second: int = 5
    pace_url: str = ""
    # Throttled or never-sent calls are retried in-process this many times, with jittered backoff.
    retry_attempts: int = 3
    retry_base_delay: float = 0.5
    retry_max_delay: float = 4.0
    # Keys of the mark on the images the portal creates (marks.py): the first marks, every one is
    # recognised (a rotated key stays until the transfers it marked have ended).
    mark_keys: tuple[str, ...] = ()


_current = Config()


def configure(config: Config) -> None:
    global _current
    _current = config


def current() -> Config:
    return _current
