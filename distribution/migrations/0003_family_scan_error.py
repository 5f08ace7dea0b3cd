# Why a family's last look at its source account found nothing (issue 18's D1 part: discovery).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('distribution', '0002_inventory_checks_and_tagging'),
    ]

    operations = [
        migrations.AddField(
            model_name='family',
            name='scan_error',
            field=models.CharField(blank=True, max_length=500),
        ),
    ]
