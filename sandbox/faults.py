"""Fault switches: throttling, server errors, lost responses, latency, hangs and failed tasks.

The portal has to survive all of these against the real cloud (DESIGN §2, §4), so the sandbox can
inject each one, at a rate, optionally only for some actions. Decisions use their own seeded random
generator so a given configuration misbehaves the same way on every run.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field

from . import oapi_errors as codes

THROTTLE_CODES = (codes.THROTTLED_PLATFORM, codes.THROTTLED_ACCOUNT, codes.THROTTLED_CALL)


@dataclass
class FaultConfig:
    throttle_rate: float = 0.0
    throttle_codes: tuple[str, ...] = THROTTLE_CODES
    error_rate: float = 0.0
    lost_response_rate: float = 0.0
    lost_response_mode: str = "500"  # "500", "drop" (close the connection) or "mixed"
    latency: float = 0.0
    hang_seconds: float = 0.0
    hang_rate: float = 1.0
    actions: frozenset[str] | None = None  # None: every OAPI action
    oos: bool = False  # also apply to OOS requests (actions then name S3 operations, e.g. GetObject)
    # A hold is a slow cloud, not a stuck front end: the request is held this long *before* it is
    # applied (so a lookup by name meanwhile finds nothing), then applied and answered, even when
    # the caller hung up meanwhile. OAPI only, and only for hold_actions (None: every action),
    # whatever `actions` says, so holds on creates combine with throttling everywhere.
    hold_seconds: float = 0.0
    hold_rate: float = 1.0
    hold_actions: frozenset[str] | None = None
    failed_exports: dict[str, str] = field(default_factory=dict)  # image id -> Comment
    failed_imports: dict[str, str] = field(default_factory=dict)  # ImageName -> StateComment message
    # ImageName -> attributes the new OMI gets instead of its source's (a copy that differs)
    drifted_imports: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What to do with one request, decided before it runs."""

    latency: float = 0.0
    hang: float = 0.0
    hold: float = 0.0
    throttle_code: str | None = None
    error: bool = False
    lose_response: str | None = None  # "500" or "drop"


class Faults:
    def __init__(self, seed: int = 7):
        self._lock = threading.Lock()
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._config = FaultConfig()
            self._rng = random.Random(self._seed)  # noqa: S311 - reproducible chaos, not security

    def configure(
        self,
        throttle_rate: float | None = None,
        error_rate: float | None = None,
        lost_response_rate: float | None = None,
        latency: float | None = None,
        hang_seconds: float | None = None,
        actions=None,
        *,
        throttle_codes=None,
        lost_response_mode: str | None = None,
        hang_rate: float | None = None,
        oos: bool | None = None,
        hold_seconds: float | None = None,
        hold_rate: float | None = None,
        hold_actions=None,
    ) -> dict:
        """Change the given switches; the others keep their value. `actions` is a set of action
        names (e.g. {"CreateImage"}); pass an empty set or None to target every action.
        `hold_actions` works the same way for holds, but only when given (or when a hold is set)."""
        with self._lock:
            config = self._config
            for name, value in (
                ("throttle_rate", throttle_rate),
                ("error_rate", error_rate),
                ("lost_response_rate", lost_response_rate),
                ("latency", latency),
                ("hang_seconds", hang_seconds),
                ("hang_rate", hang_rate),
                ("hold_seconds", hold_seconds),
                ("hold_rate", hold_rate),
            ):
                if value is not None:
                    value = float(value)
                    if value < 0 or (name.endswith("rate") and value > 1):
                        raise ValueError(f"{name} must be between 0 and 1 (rates) or >= 0 (seconds)")
                    setattr(config, name, value)
            if throttle_codes is not None:
                throttle_codes = tuple(str(code) for code in throttle_codes)
                unknown = set(throttle_codes) - set(THROTTLE_CODES)
                if unknown or not throttle_codes:
                    raise ValueError(f"throttle codes must be among {THROTTLE_CODES}")
                config.throttle_codes = throttle_codes
            if lost_response_mode is not None:
                if lost_response_mode not in ("500", "drop", "mixed"):
                    raise ValueError("lost_response_mode must be 500, drop or mixed")
                config.lost_response_mode = lost_response_mode
            if oos is not None:
                config.oos = bool(oos)
            config.actions = frozenset(actions) if actions else None
            if hold_actions is not None or hold_seconds is not None:
                config.hold_actions = frozenset(hold_actions) if hold_actions else None
            return self._snapshot()

    def fail_export(self, image_id: str, comment: str = "Export failed (sandbox fault).") -> None:
        """Every export of `image_id` started from now on ends `failed` with this Comment."""
        with self._lock:
            self._config.failed_exports[image_id] = comment

    def fail_import(self, image_name: str, comment: str = "Import failed (sandbox fault).") -> None:
        """A CreateImage (import or copy) with this ImageName ends `failed` with this StateComment."""
        with self._lock:
            self._config.failed_imports[image_name] = comment

    DRIFTABLE = ("product_codes", "architecture", "boot_modes")

    def drift_import(self, image_name: str, **attributes) -> None:
        """A CreateImage (import or copy) with this ImageName makes an OMI that differs from its
        source in these attributes (product_codes, architecture, boot_modes)."""
        unknown = set(attributes) - set(self.DRIFTABLE)
        if unknown:
            raise ValueError(f"only {', '.join(self.DRIFTABLE)} can differ, not {', '.join(sorted(unknown))}")
        with self._lock:
            self._config.drifted_imports[image_name] = dict(attributes)

    def import_drift(self, image_name: str) -> dict:
        with self._lock:
            return dict(self._config.drifted_imports.get(image_name, {}))

    def export_failure(self, image_id: str) -> str:
        with self._lock:
            return self._config.failed_exports.get(image_id, "")

    def import_failure(self, image_name: str) -> str:
        with self._lock:
            return self._config.failed_imports.get(image_name, "")

    def snapshot(self) -> dict:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict:
        data = asdict(self._config)
        data["actions"] = sorted(self._config.actions) if self._config.actions else None
        data["throttle_codes"] = list(self._config.throttle_codes)
        data["hold_actions"] = sorted(self._config.hold_actions) if self._config.hold_actions else None
        return data

    def decide(self, action: str, service: str = "oapi") -> Decision:
        """Roll the dice for one request. Throttling wins over errors, errors over lost responses,
        as a real front end rejects before the back end runs."""
        with self._lock:
            config = self._config
            rng = self._rng
            hold = 0.0
            if (service == "oapi" and config.hold_seconds
                    and (config.hold_actions is None or action in config.hold_actions)
                    and rng.random() < config.hold_rate):
                hold = config.hold_seconds
            if service == "oos" and not config.oos:
                return Decision(hold=hold)
            if config.actions is not None and action not in config.actions:
                return Decision(hold=hold)
            hang = config.hang_seconds if config.hang_seconds and rng.random() < config.hang_rate else 0.0
            if config.throttle_rate and rng.random() < config.throttle_rate:
                return Decision(config.latency, hang, hold, throttle_code=rng.choice(config.throttle_codes))
            if config.error_rate and rng.random() < config.error_rate:
                return Decision(config.latency, hang, hold, error=True)
            if config.lost_response_rate and rng.random() < config.lost_response_rate:
                mode = config.lost_response_mode
                if mode == "mixed":
                    mode = rng.choice(("500", "drop"))
                return Decision(config.latency, hang, hold, lose_response=mode)
            return Decision(config.latency, hang, hold)
