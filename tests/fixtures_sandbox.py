"""Pytest plugin: one OUTSCALE sandbox per test session, reset before every test.

    def test_it_lists_images(sandbox_world, oapi):
        gw = oapi("alpha")                     # osc-sdk-python Gateway with alpha's keys
        gw.ReadImages(Filters={...})

Fixtures:
  sandbox        session-scoped, started `Sandbox` (export/import 0.3 s, copy 0.1 s)
  sandbox_world  function-scoped: the same sandbox reset to the seeded world; after the test,
                 every OAPI answer the sandbox gave is validated against the official spec
  oapi           factory: oapi("alpha", retries=0) -> Gateway for a seeded account
  oos            factory: oos("alpha", read_timeout=None, retries=1) -> boto3 S3 client
  wait_for       poll a callable until a predicate holds (short timeouts, no fixed sleeps)
"""

from __future__ import annotations

import functools
import time
from unittest import mock

import boto3
import botocore.config
import pytest
import ruamel.yaml
from osc_sdk_python import Gateway
from osc_sdk_python.credentials import Endpoint

from sandbox import spec
from sandbox.server import Sandbox


class _CachedSpecYaml:
    """Stands in for ruamel's YAML while the SDK reads its bundled spec: it returns the same
    document, parsed once and cached on disk by `sandbox.spec`. Any other text goes to
    the real parser."""

    def __init__(self, typ=None):
        self._real = _RealYaml(typ=typ)

    def load(self, text):
        if isinstance(text, str) and len(text) == len(_spec_text()) and text == _spec_text():
            return spec.document()
        return self._real.load(text)


_RealYaml = ruamel.yaml.YAML


@functools.cache
def _spec_text() -> str:
    return spec.SPEC_PATH.read_text()


class _SpecOnceGateway(Gateway):
    """osc-sdk-python parses its 1 MB spec for every Gateway (4 s or more). The parsed structure
    is read-only, so it is built once per session, by the SDK's own code from the cached parse of
    the same file, and shared by the other Gateways; the request path (signing, retries, error
    decoding) is the SDK's own."""

    _parsed = None
    _errors = None

    def _load_gateway_structure(self, spec_path):
        cls = _SpecOnceGateway
        if cls._parsed is None:
            with mock.patch.object(ruamel.yaml, "YAML", _CachedSpecYaml):
                super()._load_gateway_structure(spec_path)
            cls._parsed = (self.gateway_structure, self.api_version, self.endpoint_api_version)
        else:
            self.gateway_structure, self.api_version, self.endpoint_api_version = cls._parsed

    def _load_errors(self):
        cls = _SpecOnceGateway
        if cls._errors is None:
            super()._load_errors()
            cls._errors = self.gateway_errors
        self.gateway_errors = cls._errors


@pytest.fixture(scope="session")
def sandbox():
    sb = Sandbox(host="127.0.0.1", base_port=0, export_seconds=0.3, import_seconds=0.3, copy_seconds=0.1)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox_world(sandbox):
    sandbox.reset()
    yield sandbox
    violations = []
    for action, status, body in list(sandbox.world.responses):
        violations.extend(f"{action} ({status}) {problem}" for problem in spec.response_errors(action, status, body))
    sandbox.reset()
    assert not violations, "sandbox answers that break the OAPI spec:\n" + "\n".join(violations[:20])


def gateway_for(sandbox: Sandbox, entry: dict, retries: int = 0, api: str | None = None) -> Gateway:
    return _SpecOnceGateway(
        access_key=entry["access_key"],
        secret_key=entry["secret_key"],
        region=entry["region"],
        endpoints=Endpoint(api=api or sandbox.endpoints()[entry["region"]]["api"]),
        max_retries=retries,
        retry_backoff_factor=0.01,
        retry_backoff_jitter=0.0,
        limiter_max_requests=10_000,
    )


@pytest.fixture(scope="session")
def oapi(sandbox):
    cache: dict = {}

    def make(
        name: str,
        retries: int = 0,
        secret_key: str | None = None,
        access_key: str | None = None,
        region: str | None = None,
    ) -> Gateway:
        entry = dict(sandbox.account(name))
        if secret_key:
            entry["secret_key"] = secret_key
        if access_key:
            entry["access_key"] = access_key
        api = sandbox.endpoints()[region]["api"] if region else None
        key = (name, retries, secret_key, access_key, region)
        if key not in cache:
            cache[key] = gateway_for(sandbox, entry, retries, api)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def oos(sandbox):
    cache: dict = {}

    def make(
        name: str,
        read_timeout: float | None = None,
        retries: int = 1,
        secret_key: str | None = None,
        region: str | None = None,
    ):
        key = (name, read_timeout, retries, secret_key, region)
        if key not in cache:
            entry = sandbox.account(name)
            region = region or entry["region"]
            config = botocore.config.Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"max_attempts": retries, "mode": "standard"},
                read_timeout=read_timeout or 10,
                connect_timeout=2,
            )
            cache[key] = boto3.client(
                "s3",
                endpoint_url=sandbox.endpoints()[region]["oos"],
                region_name=region,
                aws_access_key_id=entry["access_key"],
                aws_secret_access_key=secret_key or entry["secret_key"],
                config=config,
            )
        return cache[key]

    return make


@pytest.fixture(scope="session")
def wait_for():
    def wait(read, done, timeout: float = 5.0, interval: float = 0.03):
        deadline = time.monotonic() + timeout
        while True:
            value = read()
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {timeout}s; last value: {value!r}")
            time.sleep(interval)

    return wait


# --- helpers for the sandbox tests --------------------------------------------------------------


def oapi_error(excinfo) -> tuple[int, dict]:
    """(HTTP status, JSON body) of the requests.HTTPError osc-sdk-python raised."""
    response = excinfo.value.response
    return response.status_code, response.json()


def error_code(excinfo) -> str:
    return oapi_error(excinfo)[1]["Errors"][0]["Code"]


def read_task(gw: Gateway, task_id: str) -> dict:
    return gw.ReadImageExportTasks(Filters={"TaskIds": [task_id]})["ImageExportTasks"][0]


def read_image(gw: Gateway, image_id: str) -> dict:
    return gw.ReadImages(Filters={"ImageIds": [image_id]})["Images"][0]


def export(gw: Gateway, image_id: str, bucket: str, wait_for, prefix: str = "exports/", disk_format="qcow2") -> dict:
    """Start an export and wait for it to end; returns the final task."""
    task = gw.CreateImageExportTask(
        ImageId=image_id, OsuExport={"DiskImageFormat": disk_format, "OsuBucket": bucket, "OsuPrefix": prefix}
    )["ImageExportTask"]
    return wait_for(lambda: read_task(gw, task["TaskId"]), lambda t: t["State"] in ("completed", "failed"))


def manifest_key(task: dict) -> str:
    return task["OsuExport"]["OsuPrefix"] + "manifest.json"


@pytest.fixture
def flow(cloud, settings, transactional_db):
    """Two teams with sandbox accounts (tests/transfer_world.py), committed rows, empty queues, and
    sweeps fast enough for a whole copy to take a few seconds."""
    from tests import workers
    from tests.transfer_world import make_transfer_world

    settings.OMIPORTAL_SWEEP_MIN_SECONDS = 0.05
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 0.2
    workers.flush()
    yield make_transfer_world(cloud)
    workers.flush()
