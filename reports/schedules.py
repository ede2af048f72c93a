"""The django-q2 schedules the app relies on (made by migrations; tests that flush, and
every worker start, call `ensure_schedules` so the tracking interval follows the setting).

- the reconciler, every minute: times out overdue buckets, restarts a lost dispatcher;
- tracking, every OSAI_TRACK_INTERVAL minutes: refreshes every working connection;
- digests, every hour: sends the weekly (Mondays) and monthly (the 1st) digests that are due,
  once each;
- retention, daily: prunes what is past its retention (reports/retention.py, R1-R3).
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

RECONCILE = "osai-reconcile"
TRACK = "osai-track"
DIGESTS = "osai-digests"
PRUNE = "osai-prune"


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
    interval = max(1, settings.OSAI_TRACK_INTERVAL)
    tracking = {
        "func": "reports.tasks.tracking_refresh_all",
        "schedule_type": Schedule.MINUTES,
        "minutes": interval,
        "repeats": -1,
    }
    Schedule.objects.update_or_create(
        name=TRACK,
        defaults=tracking,
        # Made here (not by the migration: its database was emptied, as tests do), it first
        # runs one interval from now: a connection starts its own tracking when it is added,
        # so a worker start need not refresh every connection at once.
        create_defaults={**tracking, "next_run": timezone.now() + timedelta(minutes=interval)},
    )
    Schedule.objects.update_or_create(
        name=DIGESTS,
        defaults={
            "func": "reports.tasks.digests_send",
            "schedule_type": Schedule.HOURLY,
            "repeats": -1,
        },
    )
    prune = {
        "func": "reports.tasks.retention_prune",
        "schedule_type": Schedule.DAILY,
        "repeats": -1,
    }
    Schedule.objects.update_or_create(
        name=PRUNE,
        defaults=prune,
        # Made here, it first runs at the next PRUNE_HOUR (UTC), when people are least likely
        # to be waiting on the database; a worker start does not prune at once.
        create_defaults={**prune, "next_run": next_prune_at(timezone.now())},
    )


# The hour (UTC) the daily prune runs at.
PRUNE_HOUR = 3


def next_prune_at(now: datetime) -> datetime:
    """The next PRUNE_HOUR:00 UTC after `now`."""
    at = now.astimezone(UTC).replace(hour=PRUNE_HOUR, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)
