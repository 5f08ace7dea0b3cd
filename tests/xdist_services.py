"""Each pytest-xdist worker gets services of its own before Django reads its settings.

Loaded with ``-p tests.xdist_services`` (pyproject's addopts), so its hook runs before
pytest-django imports the settings. pytest-django already gives each worker its own test database
(``test_<name>_gw0``); the rest is ours to split:

- **Redis**: tests flush their Redis database and count its queues, so worker ``gwN`` uses
  database ``base + N`` of the same server (``REDIS_URL=…/0`` gives gw0 db 0, gw1 db 1, …).
- **State directory** (``OMIPORTAL_VAR_DIR``): the embedded Redis, SQLite files and worker
  sockets live there; each worker gets a subdirectory.

Worker processes, live servers and the sandbox that tests start inherit this environment, and
their ports are ephemeral, so nothing else is shared between xdist workers except the one
PostgreSQL server. The tests that restart a server are marked ``fault_run`` and run outside
xdist: on a server of their own beside the rest (FAULT_DATABASE_URL), or after it (Makefile,
``make test``).
"""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_DATABASES = 16  # the server's default `databases`


def redis_url_for(url: str, worker: int) -> str:
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    db = base + worker
    if db >= REDIS_DATABASES:
        raise pytest.UsageError(f"REDIS_URL's database {base} + xdist worker {worker} passes Redis's {REDIS_DATABASES} "
                                "databases: use a lower database number or fewer workers.")
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    index = int(worker.removeprefix("gw"))
    if os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = redis_url_for(os.environ["REDIS_URL"], index)
    base = Path(os.environ.get("OMIPORTAL_VAR_DIR") or Path(__file__).resolve().parent.parent / "var")
    os.environ["OMIPORTAL_VAR_DIR"] = str(base / f"xdist-{worker}")
