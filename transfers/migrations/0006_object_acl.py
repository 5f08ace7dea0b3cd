from django.db import migrations, models


class Migration(migrations.Migration):
    """An external recipient's OOS user ID: what an object ACL names it by (issue 16, external delivery)."""

    dependencies = [
        ("transfers", "0005_methods"),
    ]

    operations = [
        migrations.AddField(
            model_name="recipient",
            name="external_oos_user_id",
            field=models.CharField(blank=True, max_length=128),
        ),
    ]
