"""OUTSCALE Object Storage (S3 protocol) through boto3, isolated from AWS configuration.

A stock boto3 session reads AWS_* variables (AWS_PROFILE, AWS_ENDPOINT_URL_S3,
AWS_MAX_ATTEMPTS, ...) and ~/.aws/config and ~/.aws/credentials. None of that
may reach a team's calls, so the process's one botocore session has every
config variable pinned to botocore's built-in default and config files that
cannot exist; keys, Region and endpoint are always passed explicitly. Clients
are created under a lock (sessions are not thread-safe) and cached per thread.
"""

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES, ConstantProvider
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.loaders import Loader

from outscale import errors, retries
from outscale.credentials import Credentials
from outscale.endpoints import endpoints_for, timeouts
from outscale.oapi import secret_fingerprint

_NO_FILE = os.path.join(os.devnull, "omiportal-no-aws-config")  # can never exist

# At DEBUG botocore logs canonical requests and signatures: enough to rebuild a
# pre-signed URL. These loggers get an explicit level (never more verbose than
# INFO) so a root or "botocore" logger at DEBUG cannot turn them on.
# A level alone does not hold: logging.config.dictConfig (Django's LOGGING applied again, by a
# test or a library) resets the levels of the children of the loggers it names ("botocore") to
# NOTSET. A filter on the logger itself survives that, so DEBUG records are dropped whatever the
# levels say.


def _info_and_above(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO


for _name in ("botocore.auth", "botocore.endpoint", "botocore.httpsession", "botocore.hooks",
              "botocore.parsers", "botocore.client", "botocore.utils"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(max(_logger.level, logging.INFO))
    if _info_and_above not in _logger.filters:
        _logger.addFilter(_info_and_above)


def isolated_botocore_session() -> botocore.session.Session:
    session = botocore.session.Session()
    store = session.get_component("config_store")
    for name, (_config_key, _env_vars, default, _convert) in BOTOCORE_DEFAUT_SESSION_VARIABLES.items():
        store.set_config_provider(name, ConstantProvider(default))
    for name in ("config_file", "credentials_file"):
        store.set_config_provider(name, ConstantProvider(_NO_FILE))
    for section in ("s3", "proxies_config"):
        store.set_config_provider(section, ConstantProvider(None))
    # Only botocore's own service models: not ~/.aws/models, not AWS_DATA_PATH.
    session.register_component("data_loader", Loader(extra_search_paths=[Loader.BUILTIN_DATA_PATH],
                                                     include_default_search_paths=False))
    return session


# One session per process (it caches the loaded S3 model). Sessions are not thread-safe, so
# client creation is serialised; clients are (boto3's documentation), so the process shares them:
# a sweep's threads sign hundreds of links with one client instead of building one each.
_session: boto3.session.Session | None = None
_session_lock = threading.Lock()
_clients: dict = {}


def _reset_after_fork() -> None:
    global _clients, _session_lock
    _clients = {}  # a client's connection pool is not the child's to use
    _session_lock = threading.Lock()  # it may have been held by another thread at fork time


os.register_at_fork(after_in_child=_reset_after_fork)


def _new_client(**kwargs):
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session(botocore_session=isolated_botocore_session())
        return _session.client("s3", **kwargs)


def warm_up() -> None:
    _new_client(region_name="eu-west-2", endpoint_url="https://oos.eu-west-2.outscale.com",
                aws_access_key_id="warm-up", aws_secret_access_key="warm-up")


def clear_clients() -> None:
    with _session_lock:
        _clients.clear()


def client_for(creds: Credentials):
    oos = endpoints_for(creds.region).oos
    limits = timeouts()
    key = (creds.access_key, secret_fingerprint(creds.secret_key), creds.region, oos, limits)
    client = _clients.get(key)
    if client is None:
        config = Config(
            region_name=creds.region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=limits.connect,
            read_timeout=limits.read,
            retries={"total_max_attempts": 1},  # the layer's own policy retries (retries.py)
            # S3-compatible stores reject the newer default CRC checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = _new_client(
            region_name=creds.region,
            endpoint_url=oos,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            config=config,
        )
        with _session_lock:
            client = _clients.setdefault(key, client)
    return client


def _translate(exc: Exception) -> errors.CloudError | None:
    if isinstance(exc, ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        error = exc.response.get("Error", {})
        return errors.error_from_s3(code=error.get("Code"), http_status=meta.get("HTTPStatusCode"),
                                    request_id=meta.get("RequestId"), message=error.get("Message", ""))
    if isinstance(exc, (ConnectTimeoutError, EndpointConnectionError)):
        return errors.timed_out(connect=True)
    if isinstance(exc, ReadTimeoutError):
        return errors.timed_out(connect=False)
    if isinstance(exc, HTTPClientError):
        return errors.unreachable(may_have_run=True)
    if isinstance(exc, BotoCoreError):
        return errors.RetryLater("OUTSCALE Object Storage failed to answer; the portal will try again.",
                                 kind=errors.RetryLater.UNAVAILABLE, may_have_run=True)
    return None


def _request_id(response: dict) -> str | None:
    return (response or {}).get("ResponseMetadata", {}).get("RequestId")


def call(creds: Credentials, operation: str, **params):
    """Run one S3 operation (boto3 method name) under the retry policy."""
    method = getattr(client_for(creds), operation)
    # Listing, heads and deletes are idempotent; creating a bucket is not.
    idempotent = operation != "create_bucket"
    return retries.run(action=f"OOS {operation}", idempotent=idempotent, send=lambda: method(**params),
                       request_id_of=_request_id, translate=_translate)


# --- Pre-signing -----------------------------------------------------------------------

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 refuses longer
_CLOCK_MARGIN = 1  # X-Amz-Date truncates to the second: never end after not_after


def presign_get(creds: Credentials, *, bucket: str, key: str, not_after: datetime,
                now: datetime | None = None) -> tuple[str, datetime]:
    """A GET URL valid until min(not_after, now + 7 days); raises ManifestExpired if not_after has passed."""
    if not_after.tzinfo is None:
        raise ValueError("not_after must be timezone-aware.")
    now = now or datetime.now(UTC)
    seconds = min(MAX_PRESIGN_SECONDS, int((not_after - now).total_seconds()) - _CLOCK_MARGIN)
    if seconds < 1:
        raise errors.ManifestExpired()
    url = client_for(creds).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds, HttpMethod="GET"
    )
    return url, signed_expiry(url)


def signed_expiry(url: str) -> datetime:
    """When a SigV4 pre-signed URL stops working, read from its own signature fields."""
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed_at + timedelta(seconds=int(query["X-Amz-Expires"][0]))
