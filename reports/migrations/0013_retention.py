"""The daily retention prune (reports/retention.py, R1-R3): the schedule exists from the first
migrate, as the others do; a worker start keeps it (reports/schedules.py)."""

from django.db import migrations


def add_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="osai-prune",
        defaults={"func": "reports.tasks.retention_prune", "schedule_type": "D", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="osai-prune").delete()


class Migration(migrations.Migration):
    dependencies = [("reports", "0012_held_data_teams_and_hardening")]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
