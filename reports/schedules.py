"""The django-q2 schedules the app relies on (made by migrations; tests that flush, and
every worker start, call `ensure_schedules` so the tracking interval follows the setting).

- the reconciler, every minute: times out overdue buckets, restarts a lost dispatcher;
- tracking, every OSAI_TRACK_INTERVAL minutes: refreshes every working connection;
- digests, once a day: sends the weekly (Mondays) and monthly (the 1st) digests that are due.
"""

from django.conf import settings
from django_q.models import Schedule

RECONCILE = "osai-reconcile"
TRACK = "osai-track"
DIGESTS = "osai-digests"


def ensure_reconciler_schedule() -> Schedule:
    schedule, _ = Schedule.objects.update_or_create(
        name=RECONCILE,
        defaults={
            "func": "reports.tasks.pipeline_reconcile",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return schedule


def ensure_schedules() -> None:
    ensure_reconciler_schedule()
    Schedule.objects.update_or_create(
        name=TRACK,
        defaults={
            "func": "reports.tasks.tracking_refresh_all",
            "schedule_type": Schedule.MINUTES,
            "minutes": max(1, settings.OSAI_TRACK_INTERVAL),
            "repeats": -1,
        },
    )
    Schedule.objects.update_or_create(
        name=DIGESTS,
        defaults={
            "func": "reports.tasks.digests_send",
            "schedule_type": Schedule.HOURLY,
            "repeats": -1,
        },
    )
