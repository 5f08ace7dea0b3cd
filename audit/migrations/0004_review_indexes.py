"""Indexes for the review pages' filters (audit.selectors).

Created with SQL, outside the model state, like the triggers of 0002: ``target_id`` alone (a
filter by an object's id without its type) and, on PostgreSQL, ``action`` with
``varchar_pattern_ops`` so ``LIKE 'share.%'`` (an action prefix) can use an index whatever the
database collation. Both end with ``seq`` so matches come out in the pages' order.
"""

from django.db import migrations

INDEXES = {
    "audit_target_id_seq": "CREATE INDEX IF NOT EXISTS audit_target_id_seq ON audit_auditevent (target_id, seq)",
}
POSTGRES_INDEXES = {
    "audit_action_prefix":
        "CREATE INDEX IF NOT EXISTS audit_action_prefix ON audit_auditevent (action varchar_pattern_ops, seq)",
}


def _indexes(connection):
    return {**INDEXES, **(POSTGRES_INDEXES if connection.vendor == "postgresql" else {})}


def create(apps, schema_editor):
    for sql in _indexes(schema_editor.connection).values():
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    for name in _indexes(schema_editor.connection):
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_verification_log")]

    operations = [migrations.RunPython(create, drop)]
