"""Report periods in UTC: the date presets, and splitting a period into buckets.

Buckets start at UTC midnight; weeks start on Monday; months on the 1st. The first and
last buckets are clipped to the period, so a bucket never reaches outside what was asked.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol, TypeVar

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
    "last_quarter": "Last quarter",
    "year_to_date": "Year to date",
    "last_12_months": "Last 12 months",
}

# OSAI usage before this is treated as an absurd request, not a report to make.
EARLIEST_PERIOD_START = datetime(2015, 1, 1, tzinfo=UTC)


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_number(moment: datetime) -> int:
    """The UTC day a moment falls on, as whole days since 1970-01-01."""
    return (moment - _EPOCH) // timedelta(days=1)


def day_of(number: int) -> datetime:
    """The UTC midnight that starts day `number` (day_number's inverse)."""
    return _EPOCH + timedelta(days=number)


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
    quarter_start = month_start.replace(month=3 * ((now.month - 1) // 3) + 1)
    if name == "quarter_to_date":
        return quarter_start, now
    if name == "last_quarter":
        return quarter_start - relativedelta(months=3), quarter_start
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


DASH = " \u2013 "  # between the ends of a range

# --- Comparison: what a period is compared with ---------------------------------------------

# How far back a preset that ends now is compared: the same span, one step earlier.
_SHIFTS: dict[str, relativedelta] = {
    "this_month": relativedelta(months=1),
    "quarter_to_date": relativedelta(months=3),
    "year_to_date": relativedelta(years=1),
    "last_12_months": relativedelta(months=12),
}


def _is_month_start(moment: datetime) -> bool:
    return moment == utc_midnight(moment.date()).replace(day=1)


def comparison_period(preset: str, start: datetime, end: datetime) -> Period:
    """The period a report is compared with.

    - Months compare with calendar months: "last month" with the month before, "last
      quarter" with the quarter before; a range of whole months with as many whole months
      before it.
    - A preset that ends now ("this month", "quarter to date", "year to date", "last 12
      months") with the same span one month, quarter, year or 12 months earlier: "this month"
      on the 26th at 13:27 compares with the previous month's 1st to its 26th at 13:27. When
      that month has no such day (the 31st after a 30-day month, 29 February a year on), the
      same days are all of it: it ends at the next month's start, as the overview's "same
      days of last month" do (reports/spend/monthly.py).
    - "Last N days" with the N days before; any other range with the same number of whole
      days before it.
    """
    if preset in _SHIFTS:
        shift = _SHIFTS[preset]
        earlier_end = end - shift
        if earlier_end.day < end.day:  # relativedelta kept to that month's last day
            earlier_end = utc_midnight(earlier_end.date()) + timedelta(days=1)
        return start - shift, earlier_end
    if _is_month_start(start) and _is_month_start(end):
        months = relativedelta(end, start)
        return start - months, start
    days = timedelta(days=-((start - end) // timedelta(days=1)))  # whole days, rounded up
    return start - days, end - days


def ceil_midnight(moment: datetime) -> datetime:
    """The moment itself if it is a UTC midnight, else the next one."""
    day = utc_midnight(moment.date())
    return day if day == moment else day + timedelta(days=1)


def comparison_buckets(start: datetime, end: datetime) -> list[Period]:
    """The closed buckets that cover [start, end) rounded up to a midnight: whole calendar
    months as one bucket each, the rest day by day, so every one is fetched once and reused
    by every later comparison (its last, partial day is counted pro rata)."""
    stop = ceil_midnight(end)
    periods: list[Period] = []
    cursor = start
    while cursor < stop:
        month_end = cursor + relativedelta(months=1)
        if _is_month_start(cursor) and month_end <= stop:
            periods.append((cursor, month_end))
            cursor = month_end
        else:
            day_end = min(utc_midnight(cursor.date()) + timedelta(days=1), stop)
            periods.append((cursor, day_end))
            cursor = day_end
    return periods


def describe(start: datetime, end: datetime) -> str:
    """A period for a sentence, UTC: "Oct 2026", "Jan 2025 to Oct 2025" (an en dash), or days
    (the last one included), with the time when it ends within a day."""
    if _is_month_start(start) and _is_month_start(end):
        last = end - relativedelta(months=1)
        if last == start:
            return f"{start:%b %Y}"
        return f"{start:%b %Y}{DASH}{last:%b %Y}"
    if end == utc_midnight(end.date()):
        last_day = end - timedelta(days=1)
        if last_day.date() == start.date():
            return f"{start:%Y-%m-%d}"
        return f"{start:%Y-%m-%d}{DASH}{last_day:%Y-%m-%d}"
    return f"{start:%Y-%m-%d}{DASH}{end:%Y-%m-%d %H:%M}"


# --- Tiling: buckets that cover a period exactly ----------------------------------------------


class Span(Protocol):
    """What tiling reads of a bucket (a model instance or a plain tuple of its values)."""

    @property
    def period_start(self) -> datetime: ...
    @property
    def period_end(self) -> datetime: ...
    @property
    def is_closed(self) -> bool: ...


S = TypeVar("S", bound=Span)


def _arrivals(buckets: Sequence[S], start: datetime, end: datetime) -> dict[datetime, S | None]:
    """Every moment of [start, end] reachable from `start` by buckets end to end, with the
    bucket that first reached it (None for `start` itself).

    Closed (final) buckets are tried first, then the longest, so each moment is reached by
    the best bucket that can reach it. One pass over the bucket boundaries in time order:
    nothing recurses per bucket (I3), so 10,000 daily buckets are no harder than ten.
    """
    by_start: dict[datetime, list[S]] = {}
    for bucket in buckets:
        if start <= bucket.period_start and bucket.period_end <= end:
            by_start.setdefault(bucket.period_start, []).append(bucket)
    for options in by_start.values():
        options.sort(key=lambda b: (not b.is_closed, -(b.period_end - b.period_start)))
    arrived_by: dict[datetime, S | None] = {start: None}  # how each reachable time was
    for moment in sorted(by_start):
        if moment not in arrived_by:
            continue
        for bucket in by_start[moment]:
            arrived_by.setdefault(bucket.period_end, bucket)
    return arrived_by


def _walk_back(arrived_by: dict[datetime, S | None], start: datetime, end: datetime) -> list[S]:
    chosen: list[S] = []
    cursor = end
    while cursor != start:
        step = arrived_by[cursor]
        assert step is not None
        chosen.append(step)
        cursor = step.period_start
    return chosen[::-1]


def tiling(buckets: Sequence[S], start: datetime, end: datetime) -> list[S] | None:
    """Buckets (of one connection) that cover [start, end) exactly, end to end, or None.

    Closed (final) buckets are preferred, then the longest: a month's bucket answers for the
    whole month, days for anything finer (a week, a month cut short).
    """
    arrived_by = _arrivals(buckets, start, end)
    if end not in arrived_by:
        return None
    return _walk_back(arrived_by, start, end)


def tiled_prefix(buckets: Sequence[S], start: datetime, end: datetime) -> list[S]:
    """The buckets that tile the longest part [start, m) of [start, end) they can, m as late
    as possible (empty when none starts at `start`); tiling's preferences apply."""
    arrived_by = _arrivals(buckets, start, end)
    return _walk_back(arrived_by, start, max(arrived_by))


def within(
    buckets: Sequence[S], starts: Sequence[datetime], start: datetime, end: datetime
) -> Sequence[S]:
    """The buckets (sorted by period start, `starts` their starts) that start in [start, end):
    a slice, so that tiling many periods reads each bucket only for its own period."""
    return buckets[bisect_left(starts, start) : bisect_left(starts, end)]
