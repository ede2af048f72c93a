"""A report's buckets summed per period, in OSAI's raw units (display units: reports/metrics.py).

A report's rows are its periods (its period split by its granularity), whatever buckets
answer them: its own, or held days and months rolled up (reports/pipeline/rollups.py). The
usage of categories the report did not ask for is masked (0) wherever it is read.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from dateutil.relativedelta import relativedelta
from django.db.models import Q

from reports.metrics import (
    STATE_COLUMNS,
    USAGE_COLUMNS,
    columns_off,
    display_value,
    flags_on,
)
from reports.models import Bucket, Report
from reports.periods import Period, ceil_midnight, split_period, tiling, utc_midnight


@dataclass
class UsageRow:
    """Usage of one period, summed over the report's connections (raw OSAI units)."""

    period_start: datetime
    period_end: datetime
    preliminary: bool = False  # the open bucket: usage may still grow
    buckets: int = 0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE_COLUMNS, 0.0))
    # When the row was summed from buckets of other periods (held days under a week): their
    # usage per bucket period, so that pricing prices each where its usage was, as the CSV's
    # rows are priced (reports/spend/pricing.py). Empty: the row is its buckets' own period.
    parts: list[UsageRow] = field(default_factory=list)

    def display(self, column: str) -> float:
        return display_value(column, self.totals[column])


ADDITIVE_COLUMNS = tuple(c for c in USAGE_COLUMNS if c not in STATE_COLUMNS)


def report_periods(report: Report) -> list[Period]:
    """The periods a report's rows show: its period split by its granularity."""
    return split_period(report.period_start, report.period_end, report.granularity)


def row_period(
    start: datetime, end: datetime, periods: Sequence[Period], starts: Sequence[datetime]
) -> Period:
    """The period of `periods` (in order; `starts` their starts) that [start, end) lies in, or
    [start, end) itself when none holds it all."""
    i = bisect_right(starts, start) - 1
    if i >= 0 and end <= periods[i][1]:
        return periods[i]
    return (start, end)


def rows_from_buckets(
    buckets: Iterable[Bucket],
    periods: Sequence[Period] | None = None,
    flags: Mapping[str, bool] | None = None,
) -> list[UsageRow]:
    """Sum finished buckets per period, in period order. Unfinished buckets are skipped.

    `periods` (a report's, report_periods): each bucket counts in the one that holds it, so
    held days roll up into the report's weeks and months; without them each bucket's own
    period is a row. `flags` (a report's): the usage of the categories they leave off is
    masked (0), as a held bucket has every category. Usage adds up; a state (images
    existing) is the state at the row's end: each connection's latest bucket's, summed over
    the connections.
    """
    off = columns_off(flags) if flags is not None else ()
    starts = [start for start, _ in periods] if periods else []
    rows: dict[Period, UsageRow] = {}
    parts: dict[Period, dict[Period, UsageRow]] = {}
    latest: dict[tuple[Period, int], Bucket] = {}  # (row, connection) -> its latest bucket
    for bucket in buckets:
        if bucket.state != Bucket.State.DONE:
            continue
        own = (bucket.period_start, bucket.period_end)
        key = row_period(*own, periods, starts) if periods else own
        row = rows.get(key)
        if row is None:
            row = rows[key] = UsageRow(*key)
            parts[key] = {}
        row.buckets += 1
        row.preliminary = row.preliminary or not bucket.is_closed
        part = parts[key].get(own)
        if part is None:
            part = parts[key][own] = UsageRow(*own)
        part.buckets += 1
        part.preliminary = part.preliminary or not bucket.is_closed
        for column in ADDITIVE_COLUMNS:
            value = 0.0 if column in off else getattr(bucket, column) or 0.0
            row.totals[column] += value
            part.totals[column] += value
        seen = latest.get((key, bucket.connection_id))
        if seen is None or bucket.period_end > seen.period_end:
            latest[(key, bucket.connection_id)] = bucket
    for (key, _), bucket in latest.items():
        for column in STATE_COLUMNS:
            if column not in off:
                rows[key].totals[column] += getattr(bucket, column) or 0.0
    result = []
    for key in sorted(rows):
        row = rows[key]
        by_bucket_period = parts[key]
        if set(by_bucket_period) != {key}:
            row.parts = [by_bucket_period[p] for p in sorted(by_bucket_period)]
        result.append(row)
    return result


def report_rows(report: Report, buckets: Iterable[Bucket]) -> list[UsageRow]:
    """A report's rows: its buckets grouped to its periods, the categories it did not ask for
    masked."""
    return rows_from_buckets(buckets, report_periods(report), report.flags())


# --- Where a report's numbers came from --------------------------------------------------------


def held_kind(bucket: Bucket) -> str | None:
    """ "day" or "month" for a held bucket (tracking keeps it: closed, every flag on, one UTC
    day or one calendar month), else None."""
    if not (bucket.tracked and bucket.is_closed) or not all(bucket.flags().values()):
        return None
    start, end = bucket.period_start, bucket.period_end
    if start != utc_midnight(start.date()):
        return None
    if end - start == timedelta(days=1):
        return "day"
    if start.day == 1 and end == start + relativedelta(months=1):
        return "month"
    return None


def _counted(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}" if n else ""


def sources(buckets: Iterable[Bucket], requested_at: datetime) -> str:
    """Where a report's numbers come from, for a sentence: "92 held days", "12 held months",
    "85 held days and 2 new OSAI reports" ("" without buckets). New: made for this request
    (at `requested_at`); earlier: OSAI reports fetched for an earlier request and reused."""
    held = {"month": 0, "day": 0}
    new = earlier = 0
    for bucket in buckets:
        kind = held_kind(bucket)
        if kind is not None:
            held[kind] += 1
        elif bucket.created_at >= requested_at:
            new += 1
        else:
            earlier += 1
    parts = [
        _counted(held["month"], "held month"),
        _counted(held["day"], "held day"),
        _counted(new, "new OSAI report"),
        _counted(earlier, "earlier OSAI report"),
    ]
    named = [part for part in parts if part]
    if len(named) < 2:
        return "".join(named)
    return ", ".join(named[:-1]) + " and " + named[-1]


def sum_rows(rows: Iterable[UsageRow]) -> dict[str, float]:
    """Totals over rows. A state (images existing) is not a sum: the last period's is taken."""
    totals = dict.fromkeys(USAGE_COLUMNS, 0.0)
    for row in rows:
        for column in USAGE_COLUMNS:
            if column in STATE_COLUMNS:
                totals[column] = row.totals[column]
            else:
                totals[column] += row.totals[column]
    return totals


def scaled(row: UsageRow, fraction: float) -> UsageRow:
    """A row's usage counted for part of its period (usage assumed even within it); a state
    such as the images existing is not scaled."""
    totals = {
        column: value if column in STATE_COLUMNS else value * fraction
        for column, value in row.totals.items()
    }
    return UsageRow(row.period_start, row.period_end, row.preliminary, row.buckets, totals)


class Stored(NamedTuple):
    """A finished bucket as known_usage_each reads it: read as plain values, since making
    model instances (and converting their ten timestamps) was most of loading a month."""

    connection_id: int
    period_start: datetime
    period_end: datetime
    is_closed: bool
    usage: tuple[float | None, ...]  # USAGE_COLUMNS, in order

    def row(self) -> UsageRow:
        """Its usage row, as rows_from_buckets makes it from this bucket alone."""
        return UsageRow(
            self.period_start,
            self.period_end,
            preliminary=not self.is_closed,
            buckets=1,
            totals={c: 0.0 + (v or 0.0) for c, v in zip(USAGE_COLUMNS, self.usage, strict=True)},
        )


STORED_FIELDS = ("connection_id", "period_start", "period_end", "is_closed", *USAGE_COLUMNS)


def known_usage_filter(start: datetime, end: datetime) -> Q:
    """The buckets known_usage_each reads for [start, end) (with the connections, the flags
    and state DONE), for a caller that reads them in one query with others."""
    return Q(period_start__gte=start, period_end__lte=ceil_midnight(end))


def known_usage_each(
    connection_ids: Sequence[int], flags: Mapping[str, bool], start: datetime, end: datetime
) -> dict[int, list[UsageRow] | None]:
    """Per connection, its usage of [start, end) from finished buckets already in the
    database, or None where they do not cover the period exactly. When `end` falls within a
    day, that day's bucket counts pro rata. One query; never asks OSAI.

    Buckets with more flags on than `flags` count too (a held bucket has every flag): the
    usage of the categories `flags` leave off is masked (0), as OSAI would have left it out.
    """
    off = {i for i, column in enumerate(USAGE_COLUMNS) if column in columns_off(flags)}
    by_connection: dict[int, list[Stored]] = {c: [] for c in connection_ids}
    for values in (
        Bucket.objects.filter(
            known_usage_filter(start, end),
            connection_id__in=connection_ids,
            state=Bucket.State.DONE,
            **flags_on(flags),
        )
        .order_by()
        .values_list(*STORED_FIELDS)
    ):
        usage = values[4:]
        if off:
            usage = tuple(0.0 if i in off else v for i, v in enumerate(usage))
        stored = Stored(values[0], values[1], values[2], values[3], usage)
        by_connection[stored.connection_id].append(stored)
    return usage_from_stored(by_connection, start, end)


def usage_from_stored(
    by_connection: Mapping[int, Sequence[Stored]], start: datetime, end: datetime
) -> dict[int, list[UsageRow] | None]:
    """known_usage_each, from the buckets of each connection that known_usage_filter picks."""
    whole_until = max(utc_midnight(end.date()), start)
    last_day_end = ceil_midnight(end)
    result: dict[int, list[UsageRow] | None] = {}
    for connection_id, own in by_connection.items():
        whole = tiling(own, start, whole_until)
        day = tiling(own, whole_until, last_day_end) if whole_until < end else []
        if whole is None or day is None or len(day) > 1:
            result[connection_id] = None
            continue
        # A tiling has one bucket per period, in period order: a row each.
        rows = [bucket.row() for bucket in whole]
        if day:
            day_row = day[0].row()
            span = (day_row.period_end - day_row.period_start).total_seconds()
            rows.append(scaled(day_row, (end - day_row.period_start).total_seconds() / span))
        result[connection_id] = rows
    return result


def known_usage(
    connection_ids: Sequence[int], flags: Mapping[str, bool], start: datetime, end: datetime
) -> list[UsageRow] | None:
    """The connections' usage of [start, end) together, or None unless every one of them is
    known (see known_usage_each)."""
    each = known_usage_each(connection_ids, flags, start, end)
    if not each or any(rows is None for rows in each.values()):
        return None
    return combine_rows(rows for rows in each.values() if rows is not None)


def combine_rows(per_connection: Iterable[list[UsageRow]]) -> list[UsageRow]:
    """Rows of several connections added up per period, in period order."""
    combined: dict[tuple[datetime, datetime], UsageRow] = {}
    for rows in per_connection:
        for row in rows:
            key = (row.period_start, row.period_end)
            into = combined.setdefault(key, UsageRow(row.period_start, row.period_end))
            into.preliminary = into.preliminary or row.preliminary
            into.buckets += row.buckets
            for column in USAGE_COLUMNS:
                into.totals[column] += row.totals[column]
    return [combined[key] for key in sorted(combined)]
