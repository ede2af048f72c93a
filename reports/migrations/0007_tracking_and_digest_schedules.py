"""Tracking every working connection's month (hourly by default) and daily digest checks.

The tracking interval follows OSAI_TRACK_INTERVAL at every worker start
(reports/schedules.py); this makes the schedules exist from the first migrate.
"""

from django.db import migrations


def add_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="osai-track",
        defaults={
            "func": "reports.tasks.tracking_refresh_all",
            "schedule_type": "I",  # minutes
            "minutes": 60,
            "repeats": -1,
        },
    )
    Schedule.objects.update_or_create(
        name="osai-digests",
        defaults={"func": "reports.tasks.digests_send", "schedule_type": "H", "repeats": -1},
    )


def remove_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        name__in=["osai-track", "osai-digests"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("reports", "0006_cost_control")]

    operations = [migrations.RunPython(add_schedules, remove_schedules)]
