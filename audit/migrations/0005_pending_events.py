"""Events recorded while the chain head was busy wait in their own table until chained (issue 19).

A web request no longer queues behind the jobs that hold the chain head: its events wait in
``audit_auditpendingevent`` and the next writer that holds the head chains them. The table's
triggers (audit.triggers) refuse changing a row and deleting one that is not chained.
"""

from django.db import migrations, models


def install_triggers(apps, schema_editor):
    from audit import triggers

    triggers.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_review_indexes")]

    operations = [
        migrations.CreateModel(
            name="AuditPendingEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("public_id", models.UUIDField(editable=False, unique=True)),
                ("recorded_at", models.DateTimeField(editable=False)),
                ("fields", models.JSONField()),
            ],
            options={"ordering": ["id"]},
        ),
        # Dropping the table (unapplying) drops its triggers with it.
        migrations.RunPython(install_triggers, migrations.RunPython.noop),
    ]
