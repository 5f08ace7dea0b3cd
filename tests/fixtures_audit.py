"""pytest plugin for the audit trail: lets Django's test flush past the append-only triggers.

Registered from ``tests/conftest.py`` (``pytest_plugins``). Non-transactional
tests need nothing: their writes roll back. Transactional tests (``transaction=True``,
``transactional_db``, ``live_server``, ``django_db_reset_sequences``) end with a
flush (``TRUNCATE`` on PostgreSQL, ``DELETE`` on SQLite) that the triggers
refuse, so for those:

1. ``_audit_flushable`` (autouse) makes sure the database fixture is set up, then
   requests ``_audit_triggers_lifted``, which depends on pytest-django's
   ``_django_db_helper``: pytest therefore tears it down *before* the helper,
   and its teardown drops the triggers right before the flush;
2. the helper flushes;
3. ``pytest_fixture_post_finalizer`` runs once the helper is fully torn down
   (after the flush) and puts back a genesis chain head and the triggers.

Step 3 can't be the autouse fixture's own teardown: pytest tears fixtures down
in reverse order of *completed* setup, and a fixture that requests others
finishes setting up after them, so its teardown would run before the flush.

Also offers ``audit_tamper``, a helper for tests that play the attacker.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from audit import actions

_TRANSACTIONAL_FIXTURES = {"transactional_db", "live_server", "django_db_reset_sequences"}
_PENDING_REINSTALL = pytest.StashKey[Any]()


def _is_transactional(request: pytest.FixtureRequest) -> bool:
    if _TRANSACTIONAL_FIXTURES & set(request.fixturenames):
        return True
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return False
    from pytest_django.fixtures import validate_django_db

    transactional, reset_sequences, *_rest = validate_django_db(marker)
    return bool(transactional or reset_sequences)


@pytest.fixture(autouse=True)
def _audit_flushable(request: pytest.FixtureRequest) -> Iterator[None]:
    if not _is_transactional(request):
        yield
        return
    if {"transactional_db", "live_server"} & set(request.fixturenames):
        request.getfixturevalue("transactional_db")
    request.getfixturevalue("_audit_triggers_lifted")
    yield


@pytest.fixture
def _audit_triggers_lifted(request: pytest.FixtureRequest, _django_db_helper, django_db_blocker) -> Iterator[None]:
    from audit import triggers

    request.node.stash[_PENDING_REINSTALL] = django_db_blocker
    yield
    with django_db_blocker.unblock():
        triggers.remove(connections[DEFAULT_DB_ALIAS])


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> None:
    if fixturedef.argname != "_django_db_helper":
        return
    blocker = request.node.stash.get(_PENDING_REINSTALL, None)
    if blocker is None:
        return
    del request.node.stash[_PENDING_REINSTALL]
    from audit import triggers
    from audit.models import AuditChainHead

    connection = connections[DEFAULT_DB_ALIAS]
    with blocker.unblock(), transaction.atomic():
        # The flush emptied the head table (and post_migrate may already have put
        # the triggers back), so lift, reset to genesis, re-arm.
        triggers.remove(connection)
        AuditChainHead._base_manager.all().delete()
        AuditChainHead.objects.create()
        triggers.install(connection)


class AuditTamper:
    """What an attacker with write access to the database could do, for tests only."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS):
        self.alias = alias

    @contextlib.contextmanager
    def lifted(self) -> Iterator[None]:
        """Triggers off inside; any error rolls the savepoint back, triggers included."""
        from audit import triggers

        connection = connections[self.alias]
        with transaction.atomic(using=self.alias):
            triggers.remove(connection)
            yield
            triggers.install(connection)

    def update(self, seq: int, /, **values: Any) -> None:
        from audit.models import AuditEvent

        with self.lifted():
            assert AuditEvent._base_manager.using(self.alias).filter(seq=seq).update(**values) == 1

    def delete(self, seq: int) -> None:
        from audit.models import AuditEvent

        with self.lifted():
            assert AuditEvent._base_manager.using(self.alias).filter(seq=seq)._raw_delete(self.alias) == 1

    def set_head(self, *, seq: int, hash: str) -> None:
        from audit.models import AuditChainHead

        with self.lifted():
            AuditChainHead._base_manager.using(self.alias).update(seq=seq, hash=hash)


@pytest.fixture
def audit_tamper(db) -> AuditTamper:
    return AuditTamper()


# Made-up actions for the tests of the recorder and the chain, which are about any event, not a
# product action. The recorder refuses an undeclared name, so these tests declare them first.
TEST_ONLY_ACTIONS = ("a.created", "a.changed", "system.started", "share.exported", "team.renamed", "team.deleted",
                     "page.viewed", "link.sent")


@pytest.fixture
def test_only_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TEST_ONLY_ACTIONS:
        monkeypatch.setitem(actions.ACTIONS, name, actions.Action(name, "A test's made-up event.", (actions.ANY,)))
