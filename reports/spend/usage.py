"""A report's buckets summed per period, in OSAI's raw units (display units: reports/metrics.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol, TypeVar

from django.db.models import Q

from reports.metrics import STATE_COLUMNS, USAGE_COLUMNS, display_value
from reports.models import Bucket
from reports.periods import ceil_midnight, utc_midnight


@dataclass
class UsageRow:
    """Usage of one period, summed over the report's connections (raw OSAI units)."""

    period_start: datetime
    period_end: datetime
    preliminary: bool = False  # the open bucket: usage may still grow
    buckets: int = 0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE_COLUMNS, 0.0))

    def display(self, column: str) -> float:
        return display_value(column, self.totals[column])


def rows_from_buckets(buckets: Iterable[Bucket]) -> list[UsageRow]:
    """Sum finished buckets per period, in period order. Unfinished buckets are skipped."""
    rows: dict[tuple[datetime, datetime], UsageRow] = {}
    for bucket in buckets:
        if bucket.state != Bucket.State.DONE:
            continue
        key = (bucket.period_start, bucket.period_end)
        row = rows.setdefault(key, UsageRow(bucket.period_start, bucket.period_end))
        row.buckets += 1
        row.preliminary = row.preliminary or not bucket.is_closed
        for column in USAGE_COLUMNS:
            row.totals[column] += getattr(bucket, column) or 0.0
    return [rows[key] for key in sorted(rows)]


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


class Span(Protocol):
    """What tiling reads of a bucket."""

    @property
    def period_start(self) -> datetime: ...
    @property
    def period_end(self) -> datetime: ...
    @property
    def is_closed(self) -> bool: ...


S = TypeVar("S", bound=Span)


def tiling(buckets: Sequence[S], start: datetime, end: datetime) -> list[S] | None:
    """Buckets of one connection that cover [start, end) exactly, end to end, or None.

    Closed (final) buckets are preferred, then the longest. One pass over the bucket
    boundaries in time order: nothing recurses per bucket (I3), so 10,000 daily buckets are
    no harder than ten.
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
    if end not in arrived_by:
        return None
    chosen: list[S] = []
    cursor = end
    while cursor != start:
        step = arrived_by[cursor]
        assert step is not None
        chosen.append(step)
        cursor = step.period_start
    return chosen[::-1]


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
    day, that day's bucket counts pro rata. One query; never asks OSAI."""
    by_connection: dict[int, list[Stored]] = {c: [] for c in connection_ids}
    for values in (
        Bucket.objects.filter(
            known_usage_filter(start, end),
            connection_id__in=connection_ids,
            state=Bucket.State.DONE,
            **flags,
        )
        .order_by()
        .values_list(*STORED_FIELDS)
    ):
        stored = Stored(values[0], values[1], values[2], values[3], values[4:])
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
