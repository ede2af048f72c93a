"""Report progress: a report's counts and state, recomputed from its buckets.

    report: queued → running (k of N buckets done) → done | partial | failed | timed_out
            | cancelled

Called by the pipeline whenever a bucket moves, and by the report services after a request,
a cancel or a retry. The counts live on the report row, so the status badge is one query.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from reports.access import counted_buckets
from reports.models import Bucket, Report, ReportBucket


def refresh_reports_of(bucket_pk: int) -> None:
    for report_pk in (
        Report.objects.filter(report_buckets__bucket_id=bucket_pk)
        .exclude(state__in=Report.TERMINAL_STATES)
        .values_list("pk", flat=True)
    ):
        report_refresh(report_pk)


def note_next_poll(bucket_pk: int, moment: datetime) -> None:
    """Tell the unfinished reports of a bucket when the worker next polls OSAI for it.

    One UPDATE. A report keeps the earliest moment still ahead: a later one replaces it only
    once it has passed (its poll has happened), so with many buckets the badge follows the
    soonest of them.
    """
    Report.objects.filter(
        report_buckets__bucket_id=bucket_pk, report_buckets__purpose=ReportBucket.Purpose.MAIN
    ).exclude(state__in=Report.TERMINAL_STATES).filter(
        Q(next_check_at__isnull=True)
        | Q(next_check_at__lte=timezone.now())
        | Q(next_check_at__gt=moment)
    ).update(next_check_at=moment)


@transaction.atomic
def report_refresh(report_pk: int) -> None:
    """Recompute a report's counts and state from the buckets that count for it.

    For a team report those are the buckets on connections still shared by current members
    (reports/access.py), so someone leaving the team drops out of the counts at once.
    """
    report = Report.objects.select_for_update().filter(pk=report_pk).first()
    if report is None or report.state == Report.State.CANCELLED:
        return
    buckets = counted_buckets(report)
    counts = buckets.aggregate(
        total=Count("pk"),
        done=Count("pk", filter=Q(state=Bucket.State.DONE)),
        failed=Count("pk", filter=Q(state__in=Bucket.FAILED_STATES)),
        timed_out=Count("pk", filter=Q(state=Bucket.State.TIMED_OUT)),
        started=Count("pk", filter=~Q(state=Bucket.State.NEW) | Q(started_at__isnull=False)),
        # When OSAI should be done with the unfinished ones (reports/pipeline/eta.py), if it is
        # known for every one of them.
        expected=Max("expected_ready_at", filter=~Q(state__in=Bucket.TERMINAL_STATES)),
        unestimated=Count(
            "pk",
            filter=~Q(state__in=Bucket.TERMINAL_STATES) & Q(expected_ready_at__isnull=True),
        ),
    )
    total, done, failed = counts["total"], counts["done"], counts["failed"]
    now = timezone.now()
    fields: dict[str, object] = {
        "buckets_total": total,
        "buckets_done": done,
        "buckets_failed": failed,
        "expected_done_at": None if counts["unestimated"] else counts["expected"],
    }
    if total == 0 and report.team_id is not None:
        # Everyone whose connections it covered has left or stopped sharing: nothing to wait
        # for, and nothing to show.
        state = Report.State.DONE
        fields["finished_at"] = report.finished_at or now
        fields["error_message"] = "No connection in this report is shared with the team now."
    elif total and done + failed == total:
        if failed == 0:
            state = Report.State.DONE
        elif done > 0:
            state = Report.State.PARTIAL
        elif counts["timed_out"] == failed:
            state = Report.State.TIMED_OUT
        else:
            state = Report.State.FAILED
        fields["finished_at"] = report.finished_at or now
        fields["error_message"] = _failure_summary(buckets, failed, total) if failed else ""
    else:
        state = Report.State.RUNNING if counts["started"] or done else Report.State.QUEUED
        if state == Report.State.RUNNING and report.started_at is None:
            fields["started_at"] = now
    fields["state"] = state
    if state != Report.State.QUEUED and report.started_at is None:
        fields["started_at"] = now
    Report.objects.filter(pk=report_pk).update(**fields)


def _failure_summary(buckets: QuerySet[Bucket], failed: int, total: int) -> str:
    lines = [f"{failed} of {total} parts of this report failed:"]
    for bucket in buckets.filter(state__in=Bucket.FAILED_STATES).select_related("connection")[:20]:
        lines.append(
            f"- {bucket.connection.label}, {bucket.period_start:%Y-%m-%d} to "
            f"{bucket.period_end:%Y-%m-%d}: {bucket.error_message or bucket.get_state_display()}"
        )
    if failed > 20:
        lines.append(f"… and {failed - 20} more.")
    return "\n".join(lines)
