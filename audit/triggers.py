"""Database triggers that make the audit tables append-only, on SQLite and PostgreSQL.

The only module (with the migrations) allowed to name the audit tables in raw
SQL: a static test enforces it. Used by the migration, by ``post_migrate`` (a
later SQLite migration that rebuilds the table would silently drop them), and by
the test plugin that must lift them around Django's test flush.

- ``audit_auditevent``: UPDATE and DELETE refused row by row (so an UPDATE that
  matches nothing is harmless), TRUNCATE refused on PostgreSQL. On SQLite a
  ``DELETE`` without ``WHERE`` also fires the trigger: SQLite skips its truncate
  shortcut on tables that have triggers.
- ``audit_auditchainhead``: DELETE (and TRUNCATE) refused; UPDATE only to move
  one step on (``seq = old seq + 1``).
- ``audit_auditpendingevent`` (events waiting for their place in the chain): UPDATE and TRUNCATE
  refused; DELETE only of a row whose event is in the chain (same ``public_id``), which is how
  chaining ends, so a pending event cannot be dropped unchained.

Both refuse with SQLSTATE 23000 / SQLite's constraint error, which Django maps to
``IntegrityError`` on both databases; the message starts with ``audit trail is
append-only``.

Someone who can run DDL can drop these; they stop mistakes and application-level
attackers. The hash chain (and later checkpoints) detect the rest.
"""

from django.db.backends.base.base import BaseDatabaseWrapper

from audit.errors import AuditError

EVENT_TABLE = "audit_auditevent"
HEAD_TABLE = "audit_auditchainhead"
PENDING_TABLE = "audit_auditpendingevent"
MESSAGE = "audit trail is append-only"
UNSUPPORTED = "The audit trail's triggers support SQLite and PostgreSQL, not {vendor}."

_SQLITE = {
    "audit_event_no_update": f"""
        CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON {EVENT_TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE on {EVENT_TABLE} refused'); END""",
    "audit_event_no_delete": f"""
        CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON {EVENT_TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE on {EVENT_TABLE} refused'); END""",
    "audit_head_no_delete": f"""
        CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON {HEAD_TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE on {HEAD_TABLE} refused'); END""",
    "audit_head_forward_only": f"""
        CREATE TRIGGER IF NOT EXISTS audit_head_forward_only BEFORE UPDATE ON {HEAD_TABLE}
        WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq + 1
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: the chain head only moves one step forward'); END""",
    "audit_pending_no_update": f"""
        CREATE TRIGGER IF NOT EXISTS audit_pending_no_update BEFORE UPDATE ON {PENDING_TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE on {PENDING_TABLE} refused'); END""",
    "audit_pending_leaves_chained": f"""
        CREATE TRIGGER IF NOT EXISTS audit_pending_leaves_chained BEFORE DELETE ON {PENDING_TABLE}
        WHEN NOT EXISTS (SELECT 1 FROM {EVENT_TABLE} WHERE public_id = OLD.public_id)
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: a pending event leaves only by being chained'); END""",  # noqa: S608 - constants
}

_PG_FUNCTIONS = [
    f"""
    CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{MESSAGE}: % on % refused', TG_OP, TG_TABLE_NAME USING ERRCODE = '23000';
    END $$""",
    f"""
    CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.id IS DISTINCT FROM OLD.id OR NEW.seq IS DISTINCT FROM OLD.seq + 1 THEN
            RAISE EXCEPTION '{MESSAGE}: the chain head only moves one step forward' USING ERRCODE = '23000';
        END IF;
        RETURN NEW;
    END $$""",
    f"""
    CREATE OR REPLACE FUNCTION audit_pending_leaves_chained() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM {EVENT_TABLE} WHERE public_id = OLD.public_id) THEN
            RAISE EXCEPTION '{MESSAGE}: a pending event leaves only by being chained' USING ERRCODE = '23000';
        END IF;
        RETURN OLD;
    END $$""",  # noqa: S608 - constants, no input
]
_PG_TRIGGERS = {
    "audit_event_no_update_delete": (
        EVENT_TABLE, "BEFORE UPDATE OR DELETE", "FOR EACH ROW", "audit_refuse_change"),
    "audit_event_no_truncate": (EVENT_TABLE, "BEFORE TRUNCATE", "FOR EACH STATEMENT", "audit_refuse_change"),
    "audit_head_no_delete": (HEAD_TABLE, "BEFORE DELETE", "FOR EACH ROW", "audit_refuse_change"),
    "audit_head_no_truncate": (HEAD_TABLE, "BEFORE TRUNCATE", "FOR EACH STATEMENT", "audit_refuse_change"),
    "audit_head_forward_only": (HEAD_TABLE, "BEFORE UPDATE", "FOR EACH ROW", "audit_head_forward_only"),
    "audit_pending_no_update": (PENDING_TABLE, "BEFORE UPDATE", "FOR EACH ROW", "audit_refuse_change"),
    "audit_pending_no_truncate": (PENDING_TABLE, "BEFORE TRUNCATE", "FOR EACH STATEMENT", "audit_refuse_change"),
    "audit_pending_leaves_chained": (
        PENDING_TABLE, "BEFORE DELETE", "FOR EACH ROW", "audit_pending_leaves_chained"),
}
_SQLITE_TABLES = {"audit_event_no_update": EVENT_TABLE, "audit_event_no_delete": EVENT_TABLE,
                  "audit_head_no_delete": HEAD_TABLE, "audit_head_forward_only": HEAD_TABLE,
                  "audit_pending_no_update": PENDING_TABLE, "audit_pending_leaves_chained": PENDING_TABLE}


def names(connection: BaseDatabaseWrapper) -> set[str]:
    """The triggers this module installs, for the connection's database."""
    if connection.vendor == "sqlite":
        return set(_SQLITE)
    if connection.vendor == "postgresql":
        return set(_PG_TRIGGERS)
    raise AuditError(UNSUPPORTED.format(vendor=connection.vendor))


def _table(connection: BaseDatabaseWrapper, name: str) -> str:
    return _SQLITE_TABLES[name] if connection.vendor == "sqlite" else _PG_TRIGGERS[name][0]


def installed(connection: BaseDatabaseWrapper) -> set[str]:
    """Which of our triggers exist right now."""
    wanted = names(connection)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        else:
            # to_regclass: a table a later migration creates is simply not there yet.
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
                "(SELECT to_regclass(name) FROM unnest(%s::text[]) AS name)",
                [[EVENT_TABLE, HEAD_TABLE, PENDING_TABLE]],
            )
        return wanted & {row[0] for row in cursor.fetchall()}


def install(connection: BaseDatabaseWrapper) -> None:
    """Create whichever triggers are missing (safe to run again), on the tables that exist: the
    pending table's come with its migration (0005), the others' with 0002."""
    tables = set(connection.introspection.table_names())
    missing = {name for name in names(connection) - installed(connection) if _table(connection, name) in tables}
    if not missing:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for name in sorted(missing):
                cursor.execute(_SQLITE[name])
            return
        for statement in _PG_FUNCTIONS:
            cursor.execute(statement)
        for name in sorted(missing):
            table, timing, level, function = _PG_TRIGGERS[name]
            cursor.execute(f"CREATE TRIGGER {name} {timing} ON {table} {level} EXECUTE FUNCTION {function}()")


def remove(connection: BaseDatabaseWrapper) -> None:
    """Drop the triggers (migration rollback, and tests that must flush or tamper)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for name in sorted(names(connection)):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            return
        for name, (table, *_rest) in sorted(_PG_TRIGGERS.items()):
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
