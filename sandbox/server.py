"""`Sandbox`: a local stand-in for OUTSCALE, served over real HTTP on loopback.

One port per Region per service (OAPI and OOS) plus a control port. The portal points
`OMIPORTAL_OUTSCALE_ENDPOINTS` at `endpoints()` and runs unchanged; tests drive it through
osc-sdk-python and boto3, and assert on `world`, `counters()` and `faults`.

    sb = Sandbox(export_seconds=0.3, import_seconds=0.3, copy_seconds=0.1)
    sb.start()
    sb.endpoints()["eu-west-2"]  # {"api": "http://127.0.0.1:P/api/v1", "oos": ..., "fcu": ...}
    sb.stop()
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
from http.server import ThreadingHTTPServer

from . import oapi_quotas, seed
from .exports import ExportWriter
from .faults import Faults
from .fcu import Fcu
from .handlers import ControlHandler, FcuHandler, OapiHandler, OosHandler
from .oapi import Oapi
from .oos import Oos
from .world import World

logger = logging.getLogger("sandbox")
# The Regions the simulator serves: OUTSCALE's public ones. Its own list, as the real cloud has its
# own: the simulator imports nothing of the portal (tests/test_sandbox_regions.py checks the two agree).
REGIONS = ("eu-west-2", "cloudgouv-eu-west-1", "us-east-2", "us-west-1", "ap-northeast-1")
API_PATH = "/api/v1"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung request (fault) must not keep the process alive
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections (a hand-off's
    # threads each open one) overflowed it, and each dropped SYN cost its caller a one-second
    # retransmission, a delay OUTSCALE's front end does not add.
    request_queue_size = 1024
    accepted = 0  # connections accepted (each a new TCP connection from a client): Sandbox.connections()

    def process_request(self, request, client_address):
        self.accepted += 1  # on the one thread that accepts
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        # Clients that gave up (read timeouts against a hung request, dropped connections) are
        # part of the game here, not errors worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("sandbox client %s went away", client_address[0])
            return
        super().handle_error(request, client_address)


class Sandbox:
    def __init__(
        self,
        host: str = "127.0.0.1",
        base_port: int = 0,
        export_seconds: float = 30.0,
        import_seconds: float = 30.0,
        copy_seconds: float | None = None,
        seed_value: int = 1,
        lockout_after: int = 4,
        export_spread_seconds: float = 0.0,
    ):
        """`base_port=0` picks free ports; otherwise control = base, OAPI = base+1.. and
        OOS = base+11.. and FCU = base+21.. in the order of `REGIONS`.
        `lockout_after`: bad signatures in a row that lock a key for 60 s (0 disables).
        `export_spread_seconds`: each export takes `export_seconds` plus a share of this, fixed by
        its task id, so that exports started together do not all finish together."""
        self.host = host
        self.base_port = base_port
        self.lockout_after = lockout_after
        self.api_path = API_PATH
        self.durations = {
            "export_seconds": float(export_seconds),
            "export_spread_seconds": float(export_spread_seconds),
            "import_seconds": float(import_seconds),
            "copy_seconds": float(import_seconds / 3 if copy_seconds is None else copy_seconds),
        }
        self._initial_durations = dict(self.durations)
        self.world = World(seed=seed_value)
        self.faults = Faults()
        self.oos = Oos(self.world)
        self.oapi = Oapi(self.world, self.faults, self.oos, self.durations)
        self.fcu = Fcu(self.oapi)
        self.world.on_export_completed = ExportWriter(self.world, self.oos)
        seed.populate(self.world)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._endpoints: dict[str, dict[str, str]] = {}
        self._control_url = ""
        if base_port:
            # Fixed ports are known before binding, so `describe()` works without serving.
            self._endpoints = {
                region: {
                    "api": f"http://{host}:{base_port + 1 + index}{API_PATH}",
                    "oos": f"http://{host}:{base_port + 11 + index}",
                    "fcu": f"http://{host}:{base_port + 21 + index}",
                }
                for index, region in enumerate(REGIONS)
            }
            self._control_url = f"http://{host}:{base_port}"
            self.world.endpoints = copy.deepcopy(self._endpoints)

    # --- lifecycle -----------------------------------------------------------------------------

    def _serve(self, handler: type, port: int, region: str = "") -> int:
        handler_class = type(handler.__name__, (handler,), {"ctx": self, "region": region})
        server = _Server((self.host, port), handler_class)
        # A short poll interval keeps stop() quick: shutdown() waits for the loop to notice.
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"sandbox-{region or 'control'}", daemon=True
        )
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server.server_address[1]

    def start(self) -> Sandbox:
        if self._servers:
            return self
        base = self.base_port
        try:
            control_port = self._serve(ControlHandler, base)
            endpoints = {}
            for index, region in enumerate(REGIONS):
                api_port = self._serve(OapiHandler, base + 1 + index if base else 0, region)
                oos_port = self._serve(OosHandler, base + 11 + index if base else 0, region)
                fcu_port = self._serve(FcuHandler, base + 21 + index if base else 0, region)
                endpoints[region] = {
                    "api": f"http://{self.host}:{api_port}{API_PATH}",
                    "oos": f"http://{self.host}:{oos_port}",
                    "fcu": f"http://{self.host}:{fcu_port}",
                }
        except OSError:
            self.stop()
            raise
        self._control_url = f"http://{self.host}:{control_port}"
        self._endpoints = endpoints
        with self.world.lock:
            self.world.endpoints = copy.deepcopy(endpoints)
        logger.info("sandbox serving %d Regions, control on %s", len(endpoints), self._control_url)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what clients need ---------------------------------------------------------------------

    def endpoints(self) -> dict[str, dict[str, str]]:
        """The shape of the OMIPORTAL_OUTSCALE_ENDPOINTS setting."""
        return copy.deepcopy(self._endpoints)

    @property
    def control_url(self) -> str:
        return self._control_url

    def oos_hosts(self) -> list[str]:
        """host:port of every OOS endpoint: what a pasted manifest link may point at."""
        return [endpoint["oos"].split("://", 1)[1] for endpoint in self._endpoints.values()]

    def describe(self) -> dict:
        return {
            "regions": self.endpoints(),
            "accounts": seed.describe_accounts(self.world),
            "control": self._control_url,
            "durations": dict(self.durations),
        }

    def account(self, name: str) -> dict:
        """The describe() entry of one seeded account, by name (e.g. "alpha")."""
        for entry in seed.describe_accounts(self.world):
            if entry["name"] == name:
                return entry
        raise KeyError(name)

    # --- observation and control ---------------------------------------------------------------

    def connections(self) -> dict[str, int]:
        """TCP connections each kind of endpoint has accepted since the start ("oapi", "oos",
        "fcu", "control"): what a client's reuse of its connections saves shows here."""
        kinds = {"OapiHandler": "oapi", "OosHandler": "oos", "FcuHandler": "fcu", "ControlHandler": "control"}
        counted = dict.fromkeys(kinds.values(), 0)
        for server in self._servers:
            kind = kinds.get(server.RequestHandlerClass.__name__)
            if kind:
                counted[kind] += server.accepted
        return counted

    def counters(self, account_id: str, service: str = "oapi") -> dict[str, int]:
        """Calls per action that reached the account's actions (authenticated and not rejected by
        an injected throttle/5xx; a lost response still counts, since the action ran).
        `service="oos"` gives the account's OOS operations instead."""
        with self.world.lock:
            counts = dict(self.world.counters.get(account_id, {}))
        if service == "oos":
            return {k[4:]: v for k, v in counts.items() if k.startswith("oos:")}
        return {k: v for k, v in counts.items() if not k.startswith("oos:")}

    def created(self, account_id: str) -> dict[str, dict[str, int]]:
        """Successful creates in the account, per action and name: `{"CreateImage": {ImageName: n},
        "CreateImageExportTask": {OsuPrefix: n}}`. A lost answer still counts (the create ran); a
        refused one (a taken name, a throttle) does not."""
        with self.world.lock:
            items = list(self.world.created.get(account_id, {}).items())
        out: dict[str, dict[str, int]] = {}
        for (action, name), count in items:
            out.setdefault(action, {})[name] = count
        return out

    def refuse_oos(self, account_id: str, refused: bool = True) -> None:
        """Make OOS refuse (403 AccessDenied) every request signed with the account's keys, while OAPI
        still takes them: keys of an EIM user without OOS rights. `reset()` lifts it."""
        with self.world.lock:
            (self.world.oos_refused.add if refused else self.world.oos_refused.discard)(account_id)

    def set_quota(self, account_id: str, name: str, value: int) -> dict[str, int]:
        """Set one quota's MaxValue for an account (e.g. `set_quota(BETA, "image_limit", 3)`);
        `reset()` restores the defaults. Returns the account's quotas set so far."""
        if name not in oapi_quotas.QUOTAS:
            raise ValueError(f"unknown quota {name!r}; known: {', '.join(oapi_quotas.QUOTAS)}")
        if int(value) < 0:
            raise ValueError("a quota is >= 0 (0: no limit)")
        with self.world.lock:
            self.world.quotas[account_id][name] = int(value)
            return dict(self.world.quotas[account_id])

    def set_durations(
        self, export_seconds=None, import_seconds=None, copy_seconds=None, export_spread_seconds=None
    ) -> dict:
        """Change durations for tasks started from now on."""
        for name, value in (
            ("export_seconds", export_seconds),
            ("export_spread_seconds", export_spread_seconds),
            ("import_seconds", import_seconds),
            ("copy_seconds", copy_seconds),
        ):
            if value is not None:
                if float(value) < 0:
                    raise ValueError(f"{name} must be >= 0")
                self.durations[name] = float(value)
        return dict(self.durations)

    def reset(self) -> None:
        """Back to the seeded world: counters zeroed, faults cleared, locks lifted, durations as
        given to the constructor."""
        self.durations.update(self._initial_durations)
        with self.world.lock:
            self.world.clear()
            seed.populate(self.world)
            self.world.endpoints = copy.deepcopy(self._endpoints)
        self.faults.reset()
