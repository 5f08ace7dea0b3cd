"""HTTP request handlers: OAPI (JSON over POST), OOS (S3 REST) and the loopback control endpoint.

Each server gets its own handler subclass carrying its Region and the shared sandbox context, so a
port identifies a Region and a service, as a hostname does on the real cloud. Faults are applied
here, around the actions, because that is where the real failures happen: in front of the API
(throttling, 5xx) or between the back end and the client (lost responses, latency, hangs).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import select
import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler

from . import fcu
from . import oapi_errors as codes
from .auth_osc4 import SignedRequest, authenticate
from .faults import Decision
from .oapi_errors import OapiError
from .oos import error_response, operation
from .sigv4 import S3Error, S3Request

logger = logging.getLogger("sandbox")
MAX_BODY = 70 * 1024 * 1024


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    ctx = None  # the Sandbox, set on each subclass
    region = ""
    server_version = "OMIPortalSandbox/1.0"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        # Only the path: query strings of pre-signed URLs are bearer secrets.
        logger.debug("%s %s %s", self.address_string(), self.command, self.path.split("?", 1)[0])

    def log_request(self, code="-", size="-"):
        logger.debug("%s %s -> %s", self.command, self.path.split("?", 1)[0], code)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > MAX_BODY:
                    raise ValueError("body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def lower_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        return headers

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without answering: the client sees a reset, not an error body."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may be gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def wait(self, decision: Decision) -> bool:
        """Apply latency and hangs; False when the client went away during a hang.

        A request whose client hung up while it was held never reaches the back end: the
        sandbox's hangs stand for a request stuck in front of the API, and performing it
        minutes later, after the caller has moved on, is not something OUTSCALE does.
        """
        if decision.latency:
            time.sleep(decision.latency)
        if decision.hang:
            time.sleep(decision.hang)
            if self.client_gone():
                return False
        if decision.hold:
            # A slow cloud: the request was received and will be applied, caller or not.
            time.sleep(decision.hold)
        return True

    def client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


# OUTSCALE serves OAPI under /api/v1 and /api/latest (osc-cli calls the latter, as
# `<endpoint>//api/latest/<Action>`, and signs the path with one slash).
API_PREFIXES = ("/api/v1/", "/api/latest/")


def oapi_action(path: str) -> tuple[str, str]:
    """(path with repeated slashes collapsed, as signed; the action it names, or "")."""
    clean = re.sub(r"/{2,}", "/", path)
    for prefix in API_PREFIXES:
        if clean.startswith(prefix):
            return clean, clean[len(prefix) :]
    return clean, ""


class OapiHandler(BaseHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        request_id = str(uuid.uuid4())
        error = OapiError(codes.METHOD_NOT_ALLOWED, "OAPI actions are called with POST.")
        self.send(error.status, json.dumps(error.body(request_id)).encode(), {"Content-Type": "application/json"})

    def do_POST(self):  # noqa: N802
        ctx = self.ctx
        request_id = str(uuid.uuid4())
        path, action = oapi_action(self.path.split("?", 1)[0])
        try:
            body = self.read_body()
        except ValueError:
            self.send(413, b"", {"Connection": "close"})
            return
        decision = ctx.faults.decide(action or "?")
        if not self.wait(decision):
            self.close_connection = True
            return
        status, payload = 200, {}
        try:
            if not action or "/" in action:
                raise OapiError(codes.INVALID_METHOD_NAME, "The URL must be <api base>/<Action>.")
            signed = SignedRequest("POST", path, self.lower_headers(), body)
            account = authenticate(ctx.world, self.region, signed, ctx.lockout_after)
            if decision.throttle_code:
                raise OapiError(decision.throttle_code, "Request rate exceeded.")
            if decision.error:
                raise OapiError(codes.INTERNAL_ERROR, "Internal error (sandbox fault).")
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise OapiError(codes.INVALID_PARAMETER, "The request body is not valid JSON.") from None
            if not isinstance(params, dict):
                raise OapiError(codes.INVALID_PARAMETER, "The request body must be a JSON object.")
            payload = ctx.oapi.call(account, action, params)
            if decision.lose_response == "drop":
                logger.info("sandbox fault: %s executed, connection dropped", action)
                self.drop()
                return
            if decision.lose_response == "500":
                logger.info("sandbox fault: %s executed, answering 500", action)
                raise OapiError(codes.INTERNAL_ERROR, "Internal error (sandbox fault).")
            payload = {**payload, "ResponseContext": {"RequestId": request_id}}
        except OapiError as error:
            status, payload = error.status, error.body(request_id)
        ctx.world.responses.append((action, status, payload))
        self.send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


class FcuHandler(BaseHandler):
    """FCU (EC2 Query protocol, SigV4, XML): see fcu.py."""

    def _serve(self):
        ctx = self.ctx
        request_id = str(uuid.uuid4())
        raw_path, _, raw_query = self.path.partition("?")
        try:
            body = self.read_body()
        except ValueError:
            self.send(413, b"", {"Connection": "close"})
            return
        headers = self.lower_headers()
        params = fcu.parse_params(raw_query, body, headers.get("content-type", ""))
        decision = ctx.faults.decide(params.get("Action") or "?")
        if not self.wait(decision):
            self.close_connection = True
            return
        try:
            account = fcu.authenticate(ctx.world, self.region, self.command, raw_path, raw_query, headers, body)
            if decision.throttle_code:
                raise fcu.FcuError(503, "RequestLimitExceeded", "Request limit exceeded.")
            if decision.error:
                raise fcu.FcuError(500, "InternalError", "An internal error has occurred (sandbox fault).")
            status, payload = ctx.fcu.call(account, params, request_id)
            if decision.lose_response == "drop":
                self.drop()
                return
            if decision.lose_response == "500":
                raise fcu.FcuError(500, "InternalError", "An internal error has occurred (sandbox fault).")
        except fcu.FcuError as error:
            status, payload = error.status, error.xml(request_id)
        self.send(status, payload, {"Content-Type": "text/xml;charset=UTF-8", "x-amzn-RequestId": request_id})

    do_GET = do_POST = _serve  # noqa: N815


class OosHandler(BaseHandler):
    def _serve(self):
        ctx = self.ctx
        request_id = uuid.uuid4().hex[:16].upper()
        raw_path, _, raw_query = self.path.partition("?")
        head = self.command == "HEAD"
        try:
            body = self.read_body()
        except ValueError:
            self.send(413, b"", {"Connection": "close"})
            return
        op = operation(self.command, raw_path, raw_query)
        decision = ctx.faults.decide(op, service="oos")
        if not self.wait(decision):
            self.close_connection = True
            return
        request = S3Request(self.command, raw_path, raw_query, self.lower_headers(), body, self.region)
        if decision.throttle_code:
            response = error_response(S3Error(503, "SlowDown", "Please reduce your request rate."), request_id)
        elif decision.error:
            response = error_response(S3Error(500, "InternalError", "We encountered an internal error."), request_id)
        else:
            response = ctx.oos.handle(request, request_id)
            if decision.lose_response == "drop":
                self.drop()
                return
            if decision.lose_response == "500":
                response = error_response(
                    S3Error(500, "InternalError", "We encountered an internal error."), request_id
                )
        headers = {"x-amz-request-id": request_id, **response.headers}
        if head:
            headers.setdefault("Content-Length", str(len(response.body)))
        self.send(response.status, response.body, headers, head=head)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve  # noqa: N815


class ControlHandler(BaseHandler):
    """A small JSON API to drive the sandbox from another process (demo scripts, benchmarks)."""

    def _answer(self, status: int, data) -> None:
        self.send(status, json.dumps(data, indent=2).encode(), {"Content-Type": "application/json"})

    def _allowed(self) -> bool:
        try:
            return ipaddress.ip_address(self.client_address[0]).is_loopback
        except ValueError:
            return False

    def do_GET(self):  # noqa: N802
        if not self._allowed():
            return self._answer(403, {"error": "the control endpoint only answers loopback clients"})
        ctx, path = self.ctx, self.path.split("?", 1)[0].rstrip("/")
        if path in ("", "/describe"):
            return self._answer(200, ctx.describe())
        if path == "/faults":
            return self._answer(200, ctx.faults.snapshot())
        if path.startswith("/counters/"):
            return self._answer(200, ctx.counters(path.rsplit("/", 1)[1]))
        if path.startswith("/created/"):
            return self._answer(200, ctx.created(path.rsplit("/", 1)[1]))
        return self._answer(404, {"error": f"unknown path {path}"})

    def do_POST(self):  # noqa: N802
        if not self._allowed():
            return self._answer(403, {"error": "the control endpoint only answers loopback clients"})
        ctx, path = self.ctx, self.path.split("?", 1)[0].rstrip("/")
        try:
            data = json.loads(self.read_body() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            if path == "/faults":
                return self._answer(200, ctx.faults.configure(**data))
            if path == "/faults/reset":
                ctx.faults.reset()
                return self._answer(200, ctx.faults.snapshot())
            if path == "/faults/fail-export":
                ctx.faults.fail_export(data["image_id"], data.get("comment", "Export failed (sandbox fault)."))
                return self._answer(200, ctx.faults.snapshot())
            if path == "/faults/fail-import":
                ctx.faults.fail_import(data["image_name"], data.get("comment", "Import failed (sandbox fault)."))
                return self._answer(200, ctx.faults.snapshot())
            if path == "/reset":
                ctx.reset()
                return self._answer(200, {"reset": True})
            if path == "/durations":
                return self._answer(200, ctx.set_durations(**data))
            if path.startswith("/quotas/"):
                account_id = path.rsplit("/", 1)[1]
                quotas = {}
                for name, value in data.items():
                    quotas = ctx.set_quota(account_id, name, value)
                return self._answer(200, quotas)
            if path.startswith("/exports/") and path.endswith("/age"):
                ctx.world.age_export(path.split("/")[2], float(data["seconds"]))
                return self._answer(200, {"aged": True})
        except (ValueError, TypeError, KeyError) as exc:
            return self._answer(400, {"error": str(exc)})
        return self._answer(404, {"error": f"unknown path {path}"})
