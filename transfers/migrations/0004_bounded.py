# Issue 14, item 3: errors other than OUTSCALE's answers are counted on the row, and bounded.
# Depends on 0004_holes (written at the same time) so that the chain stays linear.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('transfers', '0004_holes'),
    ]

    operations = [
        migrations.AddField(
            model_name='export',
            name='step_errors',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='recipient',
            name='step_errors',
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
