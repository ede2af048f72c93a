"""The daily retention prune (reports/retention.py, R1-R3): the schedule exists from the first
migrate, as the others do; a worker start keeps it (reports/schedules.py)."""

from datetime import UTC, datetime, timedelta

from django.db import migrations


def add_schedule(apps, schema_editor):
    # First at the next 03:00 UTC (reports/schedules.py PRUNE_HOUR), then daily.
    now = datetime.now(UTC)
    first = now.replace(hour=3, minute=0, second=0, microsecond=0)
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="osai-prune",
        defaults={
            "func": "reports.tasks.retention_prune",
            "schedule_type": "D",  # daily
            "repeats": -1,
            "next_run": first if first > now else first + timedelta(days=1),
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="osai-prune").delete()


class Migration(migrations.Migration):
    dependencies = [("reports", "0012_held_data_teams_and_hardening")]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
