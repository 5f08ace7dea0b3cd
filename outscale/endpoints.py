"""Where each Region's OAPI and OOS live, and how long to wait for them.

Settings are read at call time (not import time) so tests and the sandbox can
point Regions elsewhere with override_settings, and so importing this package
never requires configured Django settings.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from outscale.regions import REGIONS, default_api_endpoint, default_oos_endpoint


@dataclass(frozen=True, slots=True)
class Endpoints:
    api: str
    oos: str


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


def endpoints_for(region: str) -> Endpoints:
    if region not in REGIONS:
        raise ValueError(f"Unknown OUTSCALE Region {region!r}.")
    override = (getattr(settings, "OMIPORTAL_OUTSCALE_ENDPOINTS", None) or {}).get(region) or {}
    api = (override.get("api") or default_api_endpoint(region)).rstrip("/")
    oos = (override.get("oos") or default_oos_endpoint(region)).rstrip("/")
    for url in (api, oos):
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"OUTSCALE endpoint for {region} must be an http(s) URL, got {url!r}.")
    return Endpoints(api=api, oos=oos)


def oos_hosts() -> dict[str, str]:
    """The OOS host (netloc) of every Region, for checking pasted manifest links."""
    return {region: urlsplit(endpoints_for(region).oos).netloc for region in REGIONS}


def timeouts() -> Timeouts:
    return Timeouts(
        connect=float(getattr(settings, "OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT", 5.0)),
        read=float(getattr(settings, "OMIPORTAL_OUTSCALE_READ_TIMEOUT", 30.0)),
    )
