"""Report periods in UTC: the date presets, and splitting a period into buckets.

Buckets start at UTC midnight; weeks start on Monday; months on the 1st. The first and
last buckets are clipped to the period, so a bucket never reaches outside what was asked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from dateutil.relativedelta import MO, relativedelta

from reports.models import Granularity

Period = tuple[datetime, datetime]  # [start, end), both aware UTC

# Label, in the order the picker shows them.
PRESETS: dict[str, str] = {
    "this_month": "This month",
    "last_month": "Last month",
    "last_7_days": "Last 7 days",
    "last_30_days": "Last 30 days",
    "last_90_days": "Last 90 days",
    "quarter_to_date": "Quarter to date",
    "year_to_date": "Year to date",
    "last_12_months": "Last 12 months",
}

# OSAI usage before this is treated as an absurd request, not a report to make.
EARLIEST_PERIOD_START = datetime(2015, 1, 1, tzinfo=UTC)


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def preset_period(name: str, now: datetime) -> Period:
    """The period a preset means at `now`.

    "Last N days" are N whole UTC days ending at today's midnight, so every bucket is
    closed and reusable. Presets that include today ("this month", "… to date", "last
    12 months") end at `now`, and their last bucket is the open, preliminary one.
    """
    now = now.astimezone(UTC).replace(microsecond=0)
    today = utc_midnight(now.date())
    month_start = today.replace(day=1)
    if name == "this_month":
        return month_start, now
    if name == "last_month":
        return month_start - relativedelta(months=1), month_start
    if name in ("last_7_days", "last_30_days", "last_90_days"):
        days = int(name.split("_")[1])
        return today - timedelta(days=days), today
    if name == "quarter_to_date":
        quarter_month = 3 * ((now.month - 1) // 3) + 1
        return month_start.replace(month=quarter_month), now
    if name == "year_to_date":
        return month_start.replace(month=1), now
    if name == "last_12_months":
        return month_start - relativedelta(months=11), now
    raise ValueError(f"Unknown period preset {name!r}.")


def _next_boundary(moment: datetime, granularity: str) -> datetime:
    day = utc_midnight(moment.date())
    if granularity == Granularity.DAY:
        return day + timedelta(days=1)
    if granularity == Granularity.WEEK:
        return day + relativedelta(days=1, weekday=MO(+1))
    if granularity == Granularity.MONTH:
        return day.replace(day=1) + relativedelta(months=1)
    raise ValueError(f"Unknown granularity {granularity!r}.")


def split_period(start: datetime, end: datetime, granularity: str) -> list[Period]:
    """Split [start, end) into UTC buckets of the granularity, clipped to the period."""
    if end <= start:
        return []
    if granularity == Granularity.TOTAL:
        return [(start, end)]
    buckets: list[Period] = []
    cursor = start
    while cursor < end:
        boundary = min(_next_boundary(cursor, granularity), end)
        buckets.append((cursor, boundary))
        cursor = boundary
    return buckets


def count_buckets(start: datetime, end: datetime, granularity: str) -> int:
    """How many buckets split_period would make, without building a huge list first."""
    if end <= start:
        return 0
    if granularity == Granularity.TOTAL:
        return 1
    span_days = (end - start).days + 2
    rough = {"day": span_days, "week": span_days // 7 + 2, "month": span_days // 28 + 2}
    if rough[granularity] > 5000:
        return rough[granularity]
    return len(split_period(start, end, granularity))


def previous_period(start: datetime, end: datetime) -> Period:
    """The period of equal length just before [start, end), for period-over-period change."""
    return start - (end - start), start
