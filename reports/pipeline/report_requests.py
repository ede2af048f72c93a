"""Report requests: asking for a report (personal or team), cancelling it, retrying it.

Keyword-only services named `report_<action>`, called by views, commands and the team
services. A request links the report's buckets, reusing finished ones of closed periods and
held ones (pipeline/rollups.py), makes the rest and hands those to the pipeline, which never
calls back here. Connection services are in pipeline/connections.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

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
from reports.periods import (
    EARLIEST_PERIOD_START,
    comparison_buckets,
    comparison_period,
    count_buckets,
    split_period,
)
from reports.pipeline import buckets, dispatcher, progress, rollups
from reports.pipeline.buckets import BucketConflict, bucket_reset


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
    owner: User,
    connections: Iterable[Connection],
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    flags: Mapping[str, bool],
    preset: str = "",
    team: Team | None = None,
    price_book: PriceBook | None = None,
    skipped_connections: list[dict[str, str]] | None = None,
    compare: bool = False,
    now: datetime | None = None,
) -> Report:
    """Create a report and its buckets, reusing finished buckets of closed periods and
    rolling up held ones (reports/pipeline/rollups.py): a period that held days or months
    tile exactly links them and asks OSAI nothing; a period held up to some point links that
    part and makes one bucket for the rest. A report answered entirely from held data is done
    as it is requested.

    With `compare` (the pages ask for it; scripts need no tiles) the period the report is
    compared with is fetched too (or found held), as closed buckets reused by every later
    comparison.

    Closed buckets that failed before are reset so the worker tries them again; the open
    bucket (it contains now) is always requested afresh. The worker starts after commit.
    A personal report keeps the default price book of the day; a team report follows its
    team's price book (reports/spend/pricing.py).
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
    # One request of a person at a time (a row lock; SQLite's IMMEDIATE transactions queue
    # anyway), so a double click's second request finds the first one's report (F3).
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    # What the report asks for, as its row says it (connections aside).
    asked = {
        "owner": owner,
        "team": team,
        "period_start": period_start,
        "period_end": period_end,
        "granularity": granularity,
        **flags,
    }
    duplicate = _recent_identical(asked, connections, now)
    if duplicate is not None:
        return duplicate
    # What is held (or fetched before) is linked; only the rest goes to OSAI (rollups.py).
    ids = [c.pk for c in connections]
    plan = rollups.plan_periods(
        ids, split_period(period_start, period_end, granularity), flags, now
    )
    _check_request_limits(owner, plan.new_buckets, now)
    if price_book is None and team is None:
        price_book = PriceBook.objects.filter(is_default=True).first()

    report = Report.objects.create(
        **asked,
        preset=preset,
        price_book=price_book,
        skipped_connections=skipped_connections or [],
        requested_at=now,
    )
    report.connections.set(connections)
    # The period it is compared with: closed buckets, fetched once and reused, or held.
    compared = (
        rollups.plan_periods(ids, _comparison_periods(report), flags, now)
        if compare
        else rollups.Plan()
    )
    try:
        made = rollups.plan_buckets(plan, connections, flags, now)
        made_for_comparison = rollups.plan_buckets(compared, connections, flags, now)
    except BucketConflict:
        raise ReportRequestError(
            "Another report for the same period is being set up; try again in a moment."
        ) from None
    own = list(dict.fromkeys([*plan.linked, *(b.pk for b in made)]))
    comparison = [
        pk
        for pk in dict.fromkeys([*compared.linked, *(b.pk for b in made_for_comparison)])
        if pk not in set(own)
    ]
    ReportBucket.objects.bulk_create(
        [ReportBucket(report=report, bucket_id=pk) for pk in own]
        + [
            ReportBucket(report=report, bucket_id=pk, purpose=ReportBucket.Purpose.COMPARISON)
            for pk in comparison
        ]
    )
    progress.report_refresh(report.pk)
    pending = [b.pk for b in [*made, *made_for_comparison] if not b.is_terminal]
    dispatcher.start_soon(list(dict.fromkeys(pending)))
    report.refresh_from_db()
    return report


def _recent_identical(
    asked: Mapping[str, Any], connections: list[Connection], now: datetime
) -> Report | None:
    """The same request by the same person within the last few seconds (a double click)."""
    window = timedelta(seconds=settings.OSAI_DUPLICATE_REQUEST_SECONDS)
    wanted = {c.pk for c in connections}
    for report in (
        # No upper bound: the other click's `now` may be a moment later than ours.
        Report.objects.filter(**asked, requested_at__gte=now - window)
        .exclude(state=Report.State.CANCELLED)
        .prefetch_related("connections")
        .order_by("-requested_at")
    ):
        if {c.pk for c in report.connections.all()} == wanted:
            return report
    return None


def _check_request_limits(owner: User, new_buckets: int, now: datetime) -> None:
    """F2: a person's report requests per hour, and the parts of their reports still waiting
    for OSAI, are bounded; over a limit nothing is created and the message says why."""
    hour_ago = now - timedelta(hours=1)
    limit = settings.OSAI_REPORT_REQUESTS_PER_HOUR
    recent = list(
        Report.objects.filter(owner=owner, requested_at__gt=hour_ago)
        .order_by("requested_at")
        .values_list("requested_at", flat=True)[:limit]
    )
    if len(recent) >= limit:
        again = recent[0] + timedelta(hours=1)
        raise ReportRequestError(
            f"You asked for {limit} reports in the last hour, the most we take from one person; "
            f"try again after {again:%H:%M} UTC."
        )
    waiting = Bucket.objects.waiting_for_person(owner).count()
    cap = settings.OSAI_MAX_WAITING_BUCKETS_PER_PERSON
    if waiting + new_buckets > cap:
        raise ReportRequestError(
            f"Your reports and connections still wait for {waiting} OSAI reports, and this one "
            f"needs up to "
            f"{new_buckets} more; at most {cap} may wait at once for one person. Wait for them "
            "to finish, cancel one, or ask for a coarser granularity."
        )


def _comparison_periods(report: Report) -> list[tuple[datetime, datetime]]:
    """The buckets that fetch the period the report is compared with (none before OSAI)."""
    start, end = comparison_period(report.preset, report.period_start, report.period_end)
    if start < EARLIEST_PERIOD_START:
        return []
    return comparison_buckets(start, end)


def report_cancel(*, report: Report) -> Report:
    """Stop a report. Its unfinished buckets stop too, unless something else still wants them
    (another live report, a comparison, tracking)."""
    with transaction.atomic():
        if report.is_terminal:
            return report
        Report.objects.filter(pk=report.pk).update(
            state=Report.State.CANCELLED,
            finished_at=timezone.now(),
            error_message="Cancelled at your request.",
        )
        unfinished = list(
            Bucket.objects.filter(report_buckets__report=report)
            .exclude(state__in=Bucket.TERMINAL_STATES)
            .values_list("pk", flat=True)
        )
        # Its comparison is not wanted either once the report is cancelled.
        ReportBucket.objects.filter(report=report, purpose=ReportBucket.Purpose.COMPARISON).delete()
        buckets.buckets_release_unwanted(unfinished, message="Cancelled.")
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
        dispatcher.start_soon(ids)
    report.refresh_from_db()
    return report
