"""The reconciler schedule (also created by migration 0002; tests that flush call this)."""

from django_q.models import Schedule

RECONCILE = "osai-reconcile"


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
