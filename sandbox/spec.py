"""The official OAPI OpenAPI spec shipped in osc-sdk-python, as JSON Schema validators.

The YAML is 1 MB and takes seconds to parse, so the parsed form is cached as JSON in the temp
directory, keyed by the YAML's SHA-256 (a new SDK version brings a new cache). OpenAPI 3.0 schema
objects are JSON Schema plus a few keywords jsonschema ignores (`example`, `format: byte`), so the
components are used as they are, with `$ref`s resolved against the spec document.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from functools import cache
from pathlib import Path

import osc_sdk_python
from jsonschema import Draft7Validator
from ruamel.yaml import YAML

SPEC_PATH = Path(osc_sdk_python.__file__).parent / "resources" / "outscale.yaml"
_lock = threading.Lock()


@cache
def document() -> dict:
    """The whole spec as a dict (parsed once per process, cached on disk across processes)."""
    with _lock:
        raw = SPEC_PATH.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()[:16]
        cached = Path(tempfile.gettempdir()) / f"omiportal-oapi-spec-{digest}.json"
        if cached.exists():
            try:
                return json.loads(cached.read_text())
            except ValueError:
                pass  # a torn write by another process: parse again below
        data = YAML(typ="safe").load(raw)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, cached)
        return data


def schema_names() -> set[str]:
    return set(document()["components"]["schemas"])


@cache
def validator(schema_name: str) -> Draft7Validator:
    """A validator for `components/schemas/<schema_name>`, e.g. "ReadImagesResponse"."""
    spec = document()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(f"{schema_name} is not in the OAPI spec")
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    return Draft7Validator(root)


def response_errors(action: str, status: int, body: dict) -> list[str]:
    """Spec violations of one OAPI answer: `<Action>Response` for a success, `ErrorResponse`
    otherwise. An empty list means the body conforms."""
    name = f"{action}Response" if status == 200 else "ErrorResponse"
    return [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(body)]
