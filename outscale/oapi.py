"""OAPI client factory and the one function that sends an OAPI call.

What this module fixes in `osc-sdk-python` 0.42.0, and why:

* Spec parsing. `Gateway()` parses the 1 MB OpenAPI spec with pure-Python YAML
  (~3.5 s) on every construction. We parse it once per process with the SDK's
  own converter and hand the result to every client. Call `warm_up()` when a
  worker starts, so no job pays for it (and, in a process that forks, before
  the fork, so every child inherits it).
* Profile leaks. `Call.update_profile` merges OSC_* variables and
  ~/.osc/config.json (OSC_CONFIG_FILE, OSC_PROFILE) into every profile, so a
  stray OSC_LOGIN would switch the signature to Basic auth and a stray
  OSC_ENDPOINT_API would redirect a team's calls. Our Call subclass builds the
  profile from explicit values only and never reads the environment or files.
* Timeouts. The SDK passes its `retry_kwargs` through to `Session.request`, so a
  `timeout` placed there applies to every attempt; it has none otherwise.
* Retries. The SDK retries 429/5xx/timeouts three times with up to 30 s sleeps,
  for every action (creates included), and hides the RequestIds of the
  attempts it swallowed. We set its `max_retries=0` and retry here instead,
  bounded and visible: throttled or never-sent requests are repeated for any
  action; ambiguous failures (5xx, read timeout, dropped connection) only for
  reads and tagging, because a repeated create may run twice on the cloud
  side; credential errors never. Whatever is left surfaces as RetryLater for
  the job's own backoff.
* Thread safety. A Gateway (its requests Session) is not thread-safe, so
  clients are cached per thread, keyed by account, Region and endpoint.
* Connections. Each SDK Call opens its own requests Session, so every account
  a thread called opened its own connection: a hand-off creating into hundreds
  of accounts paid a TCP (and, against OUTSCALE, a TLS) handshake per create.
  A thread's gateways share one Session per endpoint instead, which keeps no
  cookies: nothing one account's answer set rides on another account's call. The
  SDK's rate limiter belongs to one Gateway, so it would pace each thread on
  its own: every Gateway of an account gets the account's pace instead, shared
  by every process through Redis (`shared_pace.SharedPace`;
  OMIPORTAL_OUTSCALE_CALLS_PER_SECOND per account), or by the process's threads
  without one (`pace.AccountPace`); reads take the next slot before queued
  writes. The cloud's own throttling is handled by the retry policy.
"""

import contextlib
import functools
import hashlib
import http.cookiejar
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import osc_sdk_python
import requests
from django.views.decorators.debug import sensitive_variables
from osc_sdk_python.call import Call
from osc_sdk_python.credentials import Endpoint, Profile
from osc_sdk_python.outscale_gateway import (
    DEFAULT_LIMITER_MAX_REQUESTS,
    BaseAPI,
    Logger,
)
from urllib3.exceptions import NewConnectionError

from outscale import config, errors, pace, retries, shared_pace
from outscale.credentials import Credentials
from outscale.endpoints import endpoints_for, timeouts
from outscale.pace import forget_paces

logger = logging.getLogger(__name__)

SPEC_PATH = Path(osc_sdk_python.__file__).parent / "resources" / "outscale.yaml"


# --- The parsed spec, once per process ----------------------------------------------

@dataclass(frozen=True)
class ParsedSpec:
    structure: dict
    api_version: str
    endpoint_api_version: str
    seconds: float


_spec: ParsedSpec | None = None
_spec_lock = threading.Lock()


def parsed_spec() -> ParsedSpec:
    global _spec
    if _spec is None:
        with _spec_lock:
            if _spec is None:
                started = time.perf_counter()
                holder = SimpleNamespace()
                # The SDK's own converter, so validation behaves exactly like a stock Gateway.
                structure = BaseAPI._convert(holder, str(SPEC_PATH))
                _spec = ParsedSpec(structure, holder.api_version, holder.endpoint_api_version,
                                   time.perf_counter() - started)
                logger.info("Parsed the OUTSCALE API spec in %.2f s", _spec.seconds)
    return _spec


def warm_up() -> float:
    """Parse the spec and the error catalogue now; returns the parse time in seconds."""
    errors.code_name("5023")
    return parsed_spec().seconds


# --- An SDK gateway that only knows what we tell it ---------------------------------

class _ExplicitCall(Call):
    def __init__(self, *, profile: Profile, timeout: tuple[float, float], **kwargs: Any) -> None:
        self._explicit_profile = profile
        super().__init__(max_retries=0, **kwargs)
        # Passed by the SDK's Requester/Retry straight to Session.request.
        self.retry_kwargs["timeout"] = timeout

    def update_profile(self, **kwargs: Any) -> dict:
        # Never Profile.from_standard_configuration(): no OSC_* variables, no config file.
        self.profile = self._explicit_profile
        return kwargs


class PortalGateway(BaseAPI):
    """A Gateway built from the shared parsed spec and explicit credentials only."""

    def __init__(self, *, credentials: Credentials, api_endpoint: str, timeout: tuple[float, float],
                 calls_per_second: int = DEFAULT_LIMITER_MAX_REQUESTS) -> None:
        # BaseAPI.__init__ is skipped on purpose: it re-parses the spec and builds a
        # Call whose profile merges the environment. Same attributes, set explicitly.
        spec = parsed_spec()
        self.gateway_structure = spec.structure  # read-only after parsing; shared safely
        self.api_version = spec.api_version
        self.endpoint_api_version = spec.endpoint_api_version
        self.gateway_errors = {}
        # LOG_NONE: the SDK logger would print payloads, and FileLocation is a bearer URL.
        self.log = Logger()
        # The client-side brake stops a tight loop, or a burst of threads, from burning the
        # account's quota; shared by every Gateway for the account, in every process through
        # Redis when configured (shared_pace.py), else in this one (pace.py).
        self.limiter = shared_pace.pace_for(config.current().pace_url, credentials.access_key, credentials.region,
                                            calls_per_second)
        profile = Profile(
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            region=credentials.region,
            protocol=api_endpoint.split("://", 1)[0],
            endpoints=Endpoint(api=api_endpoint),
        )
        self.call = _ExplicitCall(profile=profile, timeout=timeout, logger=self.log, limiter=self.limiter,
                                  version=self.endpoint_api_version)
        self.call.session.close()  # the SDK's own, unused: this thread's for the endpoint instead
        self.call.session = _thread_session(api_endpoint)

    def __repr__(self) -> str:
        return f"<PortalGateway {self.call.profile.endpoints.api} {self.call.profile.region}>"


# --- One client per account, per thread -----------------------------------------------

_local = threading.local()
_generation = 0


def _reset_after_fork() -> None:
    # A forked child must not reuse the parent's sockets; the parsed spec stays.
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_reset_after_fork)


def secret_fingerprint(secret: str) -> str:
    # In cache keys, so a corrected secret for the same access key gets a new client.
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _thread_cache() -> dict:
    if getattr(_local, "generation", None) != _generation:
        # The gateways hold nothing of their own to close: their sessions are the thread's.
        for session in getattr(_local, "sessions", {}).values():
            with contextlib.suppress(Exception):
                session.close()
        _local.clients, _local.sessions = {}, {}
        _local.generation = _generation
    return _local.clients


_NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


def _thread_session(endpoint: str) -> requests.Session:
    """This thread's HTTP session for an OAPI endpoint, shared by its gateways (every account it
    calls in that Region): its connections are reused from one account's call to the next."""
    _thread_cache()
    session = _local.sessions.get(endpoint)
    if session is None:
        session = _local.sessions[endpoint] = requests.Session()
        session.cookies.set_policy(_NO_COOKIES)
    return session


def clear_clients() -> None:
    """Forget every cached client (this thread's now, other threads' on their next call) and
    the accounts' paces (a new configuration starts with a full allowance)."""
    global _generation
    _generation += 1
    forget_paces()
    shared_pace.forget_paces()
    _thread_cache()


def gateway_for(creds: Credentials) -> PortalGateway:
    api = endpoints_for(creds.region).api
    timeout = timeouts().as_tuple()
    rate = int(config.current().calls_per_second or DEFAULT_LIMITER_MAX_REQUESTS)
    key = (creds.access_key, secret_fingerprint(creds.secret_key), creds.region, api, timeout, rate,
           config.current().pace_url)  # a new pace (rate, shared or not) gets a new Gateway
    cache = _thread_cache()
    gateway = cache.get(key)
    if gateway is None:
        gateway = cache[key] = PortalGateway(credentials=creds, api_endpoint=api, timeout=timeout,
                                             calls_per_second=rate)
    return gateway


# --- Sending a call ---------------------------------------------------------------------

def is_idempotent(action: str) -> bool:
    # Repeating these cannot create a second resource (UpdateImage sets a description and adds or
    # removes launch permissions: set operations, the same after a repeat).
    return action.startswith("Read") or action in {"CreateTags", "DeleteTags", "UpdateImage"}


def _translate(exc: Exception) -> errors.CloudError | None:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return errors.error_from_oapi(http_status=exc.response.status_code, body=exc.response.content)
    if isinstance(exc, requests.ConnectTimeout):
        return errors.timed_out(connect=True)
    if isinstance(exc, requests.Timeout):
        return errors.timed_out(connect=False)
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        # Refused or unresolvable: the request never left, so repeating it is safe.
        return errors.unreachable(may_have_run=not isinstance(reason, NewConnectionError))
    if isinstance(exc, requests.RequestException):
        # e.g. a 200 whose body is not JSON: the call may have run.
        return errors.RetryLater("OUTSCALE sent an answer the portal could not read; it will try again.",
                                 kind=errors.RetryLater.UNAVAILABLE, may_have_run=True)
    return None  # SDK parameter checks and other programming errors propagate as they are


@dataclass(frozen=True)
class OapiResponse:
    body: dict
    request_ids: tuple[str, ...]


_STARTS = frozenset({"CreateImageExportTask"})  # new work: an export a transfer begins with


def pace_kind(action: str) -> str:
    """Who goes first in the account's pace (pace.py): looks, then writes, then starts."""
    if action.startswith("Read"):
        return pace.LOOK
    return pace.START if action in _STARTS else pace.WRITE


# SEC-10: a crash inside a call must not show its parameters (a pre-signed FileLocation) or the
# SDK's signing locals in Django's error report: every local here and in the frames below is masked.
@sensitive_variables()
def call(creds: Credentials, action: str, *, dry_run: bool = False, **params: Any) -> OapiResponse:
    """Send one OAPI action under the retry policy; return its body and every attempt's RequestId.
    ``dry_run``: with DryRun: true, which the spec allows on every action but the SDK's checks drop
    (its converter leaves DryRun out of every action), so the call goes through its unchecked
    ``raw``; a dry run changes nothing, so it is repeated like a read."""
    gateway = gateway_for(creds)
    if dry_run:
        gateway._check(action, **params)  # what the SDK's action method checks first, DryRun aside
        send = functools.partial(gateway.raw, action, DryRun=True)
    else:
        send = getattr(gateway, action)  # the SDK checks names and types against the spec

    def request_id_of(body: Any) -> str | None:
        return (body.get("ResponseContext") or {}).get("RequestId") if isinstance(body, dict) else None

    # A read takes the account's next slot before queued creates and tags (pace.py): a sweep's
    # one look never waits behind a burst of writes; an export's start (new work) lets the
    # writes of work in flight (a hand-off's creates, tags) go first, for a while.
    with pace.calls_as(pace_kind(action)):
        body, request_ids = retries.run(action=action, idempotent=dry_run or is_idempotent(action),
                                        send=lambda: send(**params),
                                        request_id_of=request_id_of, translate=_translate)
    return OapiResponse(body=body if isinstance(body, dict) else {}, request_ids=request_ids)
