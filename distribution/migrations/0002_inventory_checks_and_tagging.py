# The inventory's schedule per recipient account (InventoryCheck) and the latest pointer's owed
# tagging (InventoryEntry.family_tagged_at), for issue 18's D4 part.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_delivery_settings'),
        ('distribution', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='InventoryCheck',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('due_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('lease_until', models.DateTimeField(blank=True, null=True)),
                ('checked_at', models.DateTimeField(blank=True, null=True)),
                ('images_seen', models.PositiveIntegerField(default=0)),
                ('message', models.CharField(blank=True, max_length=500)),
                ('account', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                                 related_name='inventory_check', to='accounts.cloudaccount')),
            ],
            options={
                'indexes': [models.Index(fields=['due_at'], name='inventorycheck_due')],
            },
        ),
        migrations.AddField(
            model_name='inventoryentry',
            name='family_tagged_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='inventoryentry',
            index=models.Index(condition=models.Q(('family__isnull', False), ('family_tagged_at__isnull', True)),
                               fields=['first_seen_at'], name='inventory_tag_owed'),
        ),
    ]
