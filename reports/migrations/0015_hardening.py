# Issue 23's hardening: names and labels are one line (A7); who set a budget's alert channels
# (A8), the owner for budgets made before.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import reports.models


def channels_set_by_owner(apps, schema_editor):
    Budget = apps.get_model("reports", "Budget")
    Budget.objects.filter(channels_set_by__isnull=True).update(channels_set_by=models.F("owner"))


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0014_price_books_and_saved_views"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="apitoken",
            name="name",
            field=models.CharField(max_length=80, validators=[reports.models.validate_one_line]),
        ),
        migrations.AlterField(
            model_name="connection",
            name="label",
            field=models.CharField(max_length=80, validators=[reports.models.validate_one_line]),
        ),
        migrations.AlterField(
            model_name="team",
            name="name",
            field=models.CharField(
                max_length=120, unique=True, validators=[reports.models.validate_one_line]
            ),
        ),
        migrations.AddField(
            model_name="budget",
            name="channels_set_by",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(channels_set_by_owner, migrations.RunPython.noop),
    ]
