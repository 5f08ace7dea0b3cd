"""Where each Region's OAPI and OOS live, and how long to wait for them.

The configuration is read at call time (not import time), so a new one (a test pointing Regions
at the sandbox) applies to the next call.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from outscale import config
from outscale.regions import REGIONS, default_api_endpoint, default_fcu_endpoint, default_oos_endpoint


@dataclass(frozen=True, slots=True)
class Endpoints:
    api: str
    oos: str
    fcu: str = ""  # the EC2-compatible API, for commands shown to people (the portal itself never calls it)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


def endpoints_for(region: str) -> Endpoints:
    if region not in REGIONS:
        raise ValueError(f"Unknown OUTSCALE Region {region!r}.")
    override = config.current().endpoints.get(region) or {}
    api = (override.get("api") or default_api_endpoint(region)).rstrip("/")
    oos = (override.get("oos") or default_oos_endpoint(region)).rstrip("/")
    fcu = (override.get("fcu") or default_fcu_endpoint(region)).rstrip("/")
    for url in (api, oos, fcu):
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"OUTSCALE endpoint for {region} must be an http(s) URL, got {url!r}.")
    return Endpoints(api=api, oos=oos, fcu=fcu)


def oos_hosts() -> dict[str, str]:
    """The OOS host (netloc) of every Region, for checking pasted manifest links."""
    return {region: urlsplit(endpoints_for(region).oos).netloc for region in REGIONS}


def timeouts() -> Timeouts:
    current = config.current()
    return Timeouts(connect=float(current.connect_timeout), read=float(current.read_timeout))
