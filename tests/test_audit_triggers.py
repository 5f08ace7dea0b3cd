"""The database itself refuses to change the trail (AUD-09), and nothing tries to (AUD-17)."""

import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from audit import triggers
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import record
from audit.verify import verify_chain

REFUSED = "audit trail is append-only"


@pytest.fixture
def events(db):
    return [record(action="share.approved", actor=None, details={"n": n}) for n in range(3)]


def _refused(sql, params=None):
    # A savepoint, so PostgreSQL's aborted statement doesn't poison the test's transaction.
    with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_the_migration_installed_every_trigger(db):
    assert triggers.installed(connection) == triggers.names(connection)


def test_the_database_refuses_an_orm_update(events):
    # _base_manager skips the model's own guard: this reaches the database.
    with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic():
        AuditEvent._base_manager.filter(seq=2).update(action="share.rejected")
    assert AuditEvent.objects.get(seq=2).action == "share.approved"


def test_the_database_refuses_an_orm_delete(events):
    with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic():
        AuditEvent._base_manager.filter(seq=2)._raw_delete(connection.alias)
    assert AuditEvent.objects.count() == 3


def test_the_database_refuses_a_raw_update(events):
    _refused("UPDATE audit_auditevent SET target_label = %s WHERE seq = %s", ["forged", 2])
    _refused("UPDATE audit_auditevent SET details = details")


def test_the_database_refuses_a_raw_delete(events):
    _refused("DELETE FROM audit_auditevent WHERE seq = %s", [3])
    # Without WHERE too: SQLite skips its truncate shortcut when triggers exist.
    _refused("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.count() == 3
    assert verify_chain().ok


def test_the_database_refuses_truncate_where_it_exists(events):
    if connection.vendor == "postgresql":
        _refused("TRUNCATE audit_auditevent")
        _refused("TRUNCATE audit_auditchainhead")
        _refused("TRUNCATE audit_auditevent, audit_auditchainhead CASCADE")
    else:
        assert connection.vendor == "sqlite"  # SQLite has no TRUNCATE; its DELETE is refused above
        _refused("DELETE FROM audit_auditchainhead")
    assert AuditEvent.objects.count() == 3


def test_the_database_keeps_the_chain_head_moving_forward_only(events):
    _refused("DELETE FROM audit_auditchainhead")
    _refused("UPDATE audit_auditchainhead SET seq = 2")  # rewinding to hide a deleted tail
    _refused("UPDATE audit_auditchainhead SET hash = %s", ["f" * 64])  # same seq, new hash
    _refused("UPDATE audit_auditchainhead SET seq = 10")
    with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic():
        AuditChainHead._base_manager.update(seq=0)
    assert AuditChainHead.objects.get().seq == 3
    assert record(action="share.approved", actor=None).seq == 4  # one step on is what appends do


def test_removing_and_installing_the_triggers_round_trips(events):
    with transaction.atomic():
        triggers.remove(connection)
        assert triggers.installed(connection) == set()
        AuditEvent._base_manager.filter(seq=1).update(target_label="now allowed")
        triggers.install(connection)
        triggers.install(connection)  # idempotent
        assert triggers.installed(connection) == triggers.names(connection)
        transaction.set_rollback(True)
    _refused("UPDATE audit_auditevent SET target_label = 'x'")


# --- AUD-17: no code bypasses the trail ------------------------------------------------------

ROOT = Path(settings.BASE_DIR)
TABLES = r"[\"'`]?audit_audit(?:event|chainhead|pendingevent)\b"
FORBIDDEN = re.compile(
    rf"\bupdate\s+(?:only\s+)?{TABLES}|\bdelete\s+from\s+(?:only\s+)?{TABLES}|\btruncate\b[^;]{{0,200}}?{TABLES}"
    r"|\bdisable\s+trigger\b|\bdrop\s+trigger\b|pgtrigger\.ignore|session_replication_role",
    re.IGNORECASE,
)
# Allowed to attack or manage the tables: the trigger module, the migrations, and
# the audit tests and their plugin (which lift triggers for flushes and tamper tests).
ALLOWED = {"audit/triggers.py", "tests/fixtures_audit.py"}
ALLOWED_PREFIXES = ("audit/migrations/", "tests/test_audit_")
SKIPPED_DIRS = {".venv", "venv", ".git", "var", "node_modules", "staticfiles", "__pycache__", ".hypothesis"}


def _project_files():
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories if name not in SKIPPED_DIRS]
        for name in files:
            path = Path(directory, name)
            if path.suffix in {".py", ".sql", ".sh", ".html", ".txt", ".toml", ".cfg"}:
                yield path.relative_to(ROOT).as_posix(), path


def test_the_static_check_recognises_what_it_forbids():
    for sample in ['cursor.execute("UPDATE audit_auditevent SET x=1")', "DELETE FROM \"audit_auditevent\" WHERE 1",
                   "TRUNCATE TABLE foo, audit_auditchainhead", "ALTER TABLE t DISABLE TRIGGER ALL",
                   "with pgtrigger.ignore('audit.AuditEvent:protect'):", "SET session_replication_role = replica"]:
        assert FORBIDDEN.search(sample), sample
    for harmless in ["UPDATE accounts_team SET name = 'x'", "AuditEvent.objects.create(seq=1)", "audit_auditevent_idx"]:
        assert not FORBIDDEN.search(harmless), harmless


def test_no_code_outside_the_trigger_module_writes_raw_sql_against_the_audit_tables():
    offenders = []
    for relative, path in _project_files():
        if relative in ALLOWED or relative.startswith(ALLOWED_PREFIXES):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{relative}: {match.group(0)!r}" for match in FORBIDDEN.finditer(text)]
    assert offenders == []
    assert any(relative == "audit/recorder.py" for relative, _ in _project_files())  # it did look


def test_migrate_puts_back_triggers_a_table_rebuild_would_drop(events):
    from audit.apps import _ensure_triggers

    with transaction.atomic():
        triggers.remove(connection)  # what SQLite's table rebuild does to them
        _ensure_triggers(sender=None, using=connection.alias)
        assert triggers.installed(connection) == triggers.names(connection)
