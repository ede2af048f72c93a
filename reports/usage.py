"""A report's buckets summed per period, in OSAI's raw units (display units: reports/metrics.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from reports.metrics import STATE_COLUMNS, USAGE_COLUMNS, display_value
from reports.models import Bucket


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
