"""One HTTP POST of a webhook message to an address that was just checked.

The host is resolved and every address checked right before the request (url_checks.check_url),
and the connection goes to one of those addresses, while TLS still checks the certificate of the
host name and the Host header names it: a DNS answer that changed since the check cannot send the
request elsewhere. Redirects are not followed (a 3xx is a failed attempt), the answer's body is not
kept, and every wait is bounded by a timeout.
"""

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from webhooks.url_checks import Target

USER_AGENT = "OMI-Portal-Webhooks/1"
MAX_ANSWER_BYTES = 64 * 1024  # read (then forget) at most this much of an answer


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the HTTP status, None when no answer came
    duration_ms: int
    error: str  # in words; "" when delivered

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _pinned(connection: http.client.HTTPConnection, address: str) -> None:
    # http.client opens its socket with self._create_connection((host, port), ...): connect to the
    # checked address instead; HTTPSConnection then wraps it with server_hostname=host (SNI, and
    # the certificate checked against the host name).
    def create(target, timeout=None, source_address=None):
        return socket.create_connection((address, target[1]), timeout, source_address)

    connection._create_connection = create


def post(target: Target, *, body: bytes, headers: dict[str, str], timeout: float) -> Outcome:
    started = time.monotonic()

    def done(status=None, error=""):
        return Outcome(status=status, duration_ms=int((time.monotonic() - started) * 1000), error=error)

    if target.scheme == "https":
        connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    _pinned(connection, target.address)
    try:
        connection.request("POST", target.path, body=body, headers={
            **headers, "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "Content-Length": str(len(body))})
        response = connection.getresponse()
        response.read(MAX_ANSWER_BYTES)
    except ssl.SSLCertVerificationError as exc:
        return done(error=f"The TLS certificate of {target.host} could not be verified: "
                          f"{exc.verify_message or 'invalid'}.")
    except ssl.SSLError:
        return done(error=f"The TLS handshake with {target.host} failed.")
    except TimeoutError:
        return done(error=f"No answer from {target.host} within {timeout:g} s.")
    except ConnectionRefusedError:
        return done(error=f"{target.host} ({target.address}) refused the connection on port {target.port}.")
    except (ConnectionError, http.client.HTTPException) as exc:
        return done(error=f"The connection to {target.host} failed: {type(exc).__name__}.")
    except OSError as exc:
        return done(error=f"The connection to {target.host} failed: {exc.strerror or type(exc).__name__}.")
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return done(response.status)
    words = f"{response.status} {response.reason}".strip()
    if 300 <= response.status < 400:
        return done(response.status, f"The receiver answered {words}: redirects are not followed.")
    return done(response.status, f"The receiver answered {words}.")
