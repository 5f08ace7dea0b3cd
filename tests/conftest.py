import contextlib
import functools
import os
import uuid
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings as django_settings

import outscale
from accounts.models import Role
from outscale import shared_pace
from outscale.regions import REGIONS
from tests import factories

pytest_plugins = ["tests.fixtures_audit", "tests.fixtures_sandbox", "tests.fixtures_browser", "tests.fixtures_totp",
                  "tests.fixtures_api"]


FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness costs seconds per test user; no test needs it.
    settings.PASSWORD_HASHERS = FAST_HASHERS


@pytest.fixture(autouse=True)
def _own_checkpoint_directory(settings, tmp_path):
    # Each test's database starts a new chain: a checkpoint another test (or an earlier run)
    # left in the shared directory would describe a different chain.
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path / "audit-checkpoints")


@pytest.fixture(autouse=True)
def _own_rate_limit_counts(settings):
    # Rate limits count per user id in Redis, which outlives the test database: a new database
    # hands out the same ids again, so each test counts under a prefix of its own.
    settings.RATELIMIT_CACHE_PREFIX = f"rl-{uuid.uuid4().hex}:"


@pytest.fixture(autouse=True)
def _no_real_cloud(settings):
    """Every Region points at a closed loopback port unless a test asks for the sandbox,
    so a forgotten fixture fails fast instead of calling the real OUTSCALE."""
    closed = "http://127.0.0.1:9"
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {r: {"api": f"{closed}/api/v1", "oos": closed} for r in REGIONS}


@functools.cache
def _redis(url: str):
    return redis.Redis.from_url(url, socket_connect_timeout=1.0)


@pytest.fixture(autouse=True)
def _full_allowances():
    """Every test starts with each account's whole OAPI allowance. The shared pace keeps its slots
    in Redis (outscale/shared_pace.py), where a test's calls would hold the next test's back; the
    per-process pace started afresh with each configuration."""
    with contextlib.suppress(redis.RedisError):
        client = _redis(django_settings.REDIS_URL)
        keys = list(client.scan_iter(f"{shared_pace.KEY_PREFIX}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def cloud(sandbox_world, settings):
    """The portal's cloud layer pointed at the sandbox, reset to its seeded world."""
    outscale.warm_up()  # the OAPI spec parse, paid once per process
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = sandbox_world.endpoints()
    settings.OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT = 2.0
    settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = 5.0
    settings.OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = 3
    settings.OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY = 0.01
    settings.OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY = 0.05
    settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND = 100  # the tests poll a fast sandbox
    outscale.clear_clients()
    yield sandbox_world
    outscale.clear_clients()


@pytest.fixture
def world(db):
    return make_world()


def make_world():
    """Two teams and a person in every role, plus an outsider and a compliance officer.

    alpha: admin, approver, member, auditor; beta: admin (the "other team").
    """
    alpha, beta = factories.make_team("Alpha"), factories.make_team("Beta")
    people = {}
    for role in Role:
        people[role.value] = factories.add_member(alpha, factories.make_user(f"{role.value}@alpha.test"), role).user
    people["outsider"] = factories.add_member(beta, factories.make_user("admin@beta.test"), Role.ADMIN).user
    people["compliance"] = factories.make_user("officer@compliance.test", is_compliance_officer=True)
    return SimpleNamespace(alpha=alpha, beta=beta, **people)


@pytest.fixture
def login(client):
    def _login(user):
        client.force_login(user)
        return client

    return _login


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: everything must run against the real services."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped:
        if reporter:
            reporter.write_line(f"CI: {skipped} test(s) were skipped; failing the run.", red=True)
        session.exitstatus = 1


# The files that take minutes, longest first. With `make test`'s xdist (a whole file per worker,
# handed out in collection order with `--no-loadscope-reorder`, which the Makefile passes: xdist's
# default hands out the files with the most tests first), a long file collected last makes one
# worker finish minutes after the other; collected first, the short files fill in beside it.
LONG_FILES = ("test_bench_faults.py", "test_bench_transfers.py", "test_transfers_killed_worker.py", "test_hosts.py",
              "test_transfers_first_look.py", "test_audit_review.py", "test_distribution_retention.py",
              "test_clock_skew.py", "test_ci_recipe.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Drop the test database only once no other session is on it.

    Worker processes started by tests (and their rq schedulers) disconnect as they exit, but
    PostgreSQL ends a backend a moment after its client goes, and a thread of this process may
    still hold a connection of its own: a DROP DATABASE right after the last test then met "being
    accessed by other users" and left the database behind. Waits a moment for them, then ends the
    ones left (the database is this worker's alone, and about to go), naming them, so a leak
    stays visible.
    """
    yield
    import time
    import warnings

    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others_sql = ("SELECT pid, application_name, state, left(query, 120) FROM pg_stat_activity"
                  " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with django_db_blocker.unblock():
        deadline, others = time.monotonic() + 3, []
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute(others_sql)
                others = cursor.fetchall()
            if not others:
                return
            time.sleep(0.2)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        warnings.warn(f"sessions still on the test database after the last test, ended: {others}", stacklevel=1)
