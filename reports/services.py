"""Report requests: asking for a report (personal or team), cancelling it, retrying it.

Keyword-only services named `report_<action>`, called by views, commands and the team
services. A request creates the report's buckets, reusing finished ones of closed periods,
and hands the rest to the pipeline (reports/pipeline.py), which never calls back here.
Connection services are in reports/connections.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from reports import pipeline, progress
from reports.access import counted_buckets
from reports.metrics import FLAG_FIELDS
from reports.models import (
    Bucket,
    Connection,
    Granularity,
    PriceBook,
    Report,
    ReportBucket,
    Team,
)
from reports.periods import EARLIEST_PERIOD_START, count_buckets, split_period, utc_midnight


class ReportRequestError(Exception):
    """A report request that cannot be made; the message is for the form."""


# --- Reports ---------------------------------------------------------------------------------


def flags_from(values: Mapping[str, Any]) -> dict[str, bool]:
    return {name: bool(values.get(name, False)) for name in FLAG_FIELDS}


def report_validate_period(
    *,
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    connections: int,
    now: datetime | None = None,
) -> None:
    """Raise ReportRequestError with a message for the form if the request is unreasonable."""
    now = now or timezone.now()
    if granularity not in Granularity.values:
        raise ReportRequestError("Choose a granularity: total, daily, weekly or monthly.")
    if period_end <= period_start:
        raise ReportRequestError("The period must end after it starts.")
    if period_start < EARLIEST_PERIOD_START:
        raise ReportRequestError(
            f"The period cannot start before {EARLIEST_PERIOD_START:%Y-%m-%d}."
        )
    if period_end > now + timedelta(minutes=1):
        raise ReportRequestError("The period cannot end in the future: OSAI reports past usage.")
    if connections < 1:
        raise ReportRequestError("Choose at least one connection.")
    limit = settings.OSAI_MAX_BUCKETS_PER_REPORT
    needed = count_buckets(period_start, period_end, granularity) * connections
    if needed > limit:
        raise ReportRequestError(
            f"This would need {needed} OSAI reports; the limit is {limit}. "
            "Choose a coarser granularity or a shorter period."
        )


@transaction.atomic
def report_request(
    *,
    owner: Any,
    connections: Iterable[Connection],
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    flags: Mapping[str, bool],
    preset: str = "",
    team: Team | None = None,
    price_book: PriceBook | None = None,
    skipped_connections: list[dict[str, str]] | None = None,
    now: datetime | None = None,
) -> Report:
    """Create a report and its buckets, reusing finished buckets of closed periods.

    Closed buckets that failed before are reset so the worker tries them again; the open
    bucket (it contains now) is always requested afresh. The worker starts after commit.
    A personal report keeps the default price book of the day; a team report follows its
    team's price book (reports/pricing.py).
    """
    now = now or timezone.now()
    connections = list(connections)
    report_validate_period(
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        connections=len(connections),
        now=now,
    )
    if any(c.status == Connection.Status.NEEDS_TOKEN for c in connections):
        names = ", ".join(c.label for c in connections if c.status == Connection.Status.NEEDS_TOKEN)
        raise ReportRequestError(f"These connections need a new access token first: {names}.")
    flags = flags_from(flags)
    if not any(flags.values()):
        raise ReportRequestError("Choose at least one category of usage.")
    if price_book is None and team is None:
        price_book = PriceBook.objects.filter(is_default=True).first()

    report = Report.objects.create(
        owner=owner,
        team=team,
        preset=preset,
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        price_book=price_book,
        skipped_connections=skipped_connections or [],
        requested_at=now,
        **flags,
    )
    report.connections.set(connections)
    periods = split_period(period_start, period_end, granularity)
    buckets = _buckets_for(connections, periods, flags, now)
    ReportBucket.objects.bulk_create([ReportBucket(report=report, bucket=b) for b in buckets])
    progress.report_refresh(report.pk)
    pipeline.start_soon([b.pk for b in buckets if not b.is_terminal])
    report.refresh_from_db()
    return report


def _buckets_for(
    connections: list[Connection],
    periods: list[tuple[datetime, datetime]],
    flags: dict[str, bool],
    now: datetime,
) -> list[Bucket]:
    """Existing closed buckets where there are any, new ones for the rest."""
    deadline = now + timedelta(seconds=settings.OSAI_BUCKET_DEADLINE_SECONDS)
    starts = [start for start, _ in periods]
    existing = {
        (b.connection_id, b.period_start, b.period_end): b
        for b in Bucket.objects.filter(
            connection__in=connections, is_closed=True, period_start__in=starts, **flags
        )
    }
    result: list[Bucket] = []
    to_create: list[Bucket] = []
    to_reset: list[int] = []
    # Closed: ends by today's UTC midnight. A bucket ending later today is still open (OSAI
    # may add usage to it), so it is requested afresh each time and marked preliminary.
    closed_until = utc_midnight(now.date())
    for connection in connections:
        for start, end in periods:
            closed = end <= closed_until
            bucket = existing.get((connection.pk, start, end)) if closed else None
            if bucket is None:
                bucket = Bucket(
                    connection=connection,
                    period_start=start,
                    period_end=end,
                    is_closed=closed,
                    created_at=now,
                    next_attempt_at=now,
                    deadline_at=deadline,
                    **flags,
                )
                to_create.append(bucket)
            elif bucket.state in Bucket.FAILED_STATES:
                to_reset.append(bucket.pk)
                bucket.state = Bucket.State.NEW
            result.append(bucket)
    if to_create:
        try:
            with transaction.atomic():
                Bucket.objects.bulk_create(to_create)
        except IntegrityError:
            # Another request created one of the same closed buckets a moment ago.
            raise ReportRequestError(
                "Another report for the same period is being set up; try again in a moment."
            ) from None
    if to_reset:
        bucket_reset(Bucket.objects.filter(pk__in=to_reset), now=now)
    return result


def bucket_reset(queryset: Any, *, now: datetime) -> int:
    """Put failed buckets back to the start: a new OSAI report, fresh attempts and deadline."""
    return queryset.update(
        state=Bucket.State.NEW,
        osai_report_id=None,
        osai_status=None,
        osai_response=None,
        osai_created_at=None,
        osai_creation_time_raw="",
        attempts=0,
        polls=0,
        next_attempt_at=now,
        lease_until=None,
        error_message="",
        started_at=None,
        finished_at=None,
        deadline_at=now + timedelta(seconds=settings.OSAI_BUCKET_DEADLINE_SECONDS),
    )


def report_cancel(*, report: Report) -> Report:
    """Stop a report. Its unfinished buckets stop too, unless another live report needs them."""
    with transaction.atomic():
        if report.is_terminal:
            return report
        now = timezone.now()
        Report.objects.filter(pk=report.pk).update(
            state=Report.State.CANCELLED,
            finished_at=now,
            error_message="Cancelled at your request.",
        )
        needed_elsewhere = ReportBucket.objects.filter(
            ~Q(report_id=report.pk),
            ~Q(report__state__in=Report.TERMINAL_STATES),
        ).values("bucket_id")
        Bucket.objects.filter(report_buckets__report=report).exclude(
            state__in=Bucket.TERMINAL_STATES
        ).exclude(pk__in=needed_elsewhere).update(
            state=Bucket.State.CANCELLED,
            finished_at=now,
            next_attempt_at=None,
            error_message="Cancelled.",
        )
    progress.report_refresh(report.pk)
    report.refresh_from_db()
    return report


def report_retry(*, report: Report) -> Report:
    """Try the failed, timed-out or cancelled buckets of a report again.

    Only buckets that still count for the report (for a team report: on connections still
    shared by current members, M1) and whose connection works; a connection that needs a new
    token would only fail again.
    """
    now = timezone.now()
    with transaction.atomic():
        failed = counted_buckets(report).filter(
            state__in=Bucket.FAILED_STATES, connection__status=Connection.Status.OK
        )
        ids = list(failed.values_list("pk", flat=True))
        if not ids:
            return report
        bucket_reset(Bucket.objects.filter(pk__in=ids), now=now)
        Report.objects.filter(pk=report.pk).update(
            state=Report.State.QUEUED, finished_at=None, error_message=""
        )
        progress.report_refresh(report.pk)
        pipeline.start_soon(ids)
    report.refresh_from_db()
    return report
