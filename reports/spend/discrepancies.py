"""When a held month and its held days disagree.

Tracking holds some months twice (reports/spend/tracking.py): as one month bucket and as its
days. The sandbox adds up exactly; real OSAI may not (rounding, late corrections). Where they
differ, the month answers for whole-month views and the days for anything finer (tiling
prefers the longest bucket; the spend ledger does the same for pages), and the difference is
recorded here, per connection, month and metric (`HeldDiscrepancy`), and shown on the
connection's page: never hidden, never averaged away.

It is checked when the last of a month's held buckets (the month or one of its days)
finishes: the pipeline's `bucket_done` signal, connected in reports/apps.py. Additive totals
are compared with the sum of the days, a state (images existing) with the last day's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from dateutil.relativedelta import relativedelta
from django.db import transaction
from django.utils import timezone

from reports.metrics import METRIC_BY_COLUMN, STATE_COLUMNS, USAGE_COLUMNS, all_flags
from reports.models import Bucket, Connection, HeldDiscrepancy
from reports.periods import utc_midnight
from reports.pipeline.buckets import bucket_done

ONE_DAY = timedelta(days=1)
# Float noise is not a disagreement: OSAI's doubles summed over 31 days may differ from its
# own month total in the last bits.
RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-6


def _month_of(start: datetime) -> datetime:
    return utc_midnight(start.date()).replace(day=1)


def held_month_check(
    connection_id: int, month_start: datetime, *, now: datetime | None = None
) -> list[HeldDiscrepancy] | None:
    """Compare a held month with its held days and record where they differ (one row per
    metric, kept up to date; a metric that agrees again loses its row). None while the month
    or one of its days is not held (done) yet. Two queries when the month is whole."""
    month_end = month_start + relativedelta(months=1)
    rows = list(
        Bucket.objects.filter(
            connection_id=connection_id,
            tracked=True,
            is_closed=True,
            state=Bucket.State.DONE,
            period_start__gte=month_start,
            period_end__lte=month_end,
            **all_flags(),
        ).values_list("period_start", "period_end", *USAGE_COLUMNS)
    )
    month = next((r for r in rows if r[0] == month_start and r[1] == month_end), None)
    days = sorted((r for r in rows if r[1] - r[0] == ONE_DAY), key=lambda r: r[0])
    if month is None or len(days) != (month_end - month_start) // ONE_DAY:
        return None
    found: list[HeldDiscrepancy] = []
    agree: list[str] = []
    for index, column in enumerate(USAGE_COLUMNS, start=2):
        month_value = float(month[index] or 0.0)
        if column in STATE_COLUMNS:
            days_value = float(days[-1][index] or 0.0)  # the state at the month's end
        else:
            days_value = math.fsum(float(day[index] or 0.0) for day in days)
        if math.isclose(
            month_value, days_value, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE
        ):
            agree.append(column)
            continue
        found.append(
            HeldDiscrepancy(
                connection_id=connection_id,
                month_start=month_start,
                column=column,
                month_value=month_value,
                days_value=days_value,
                found_at=now or timezone.now(),
            )
        )
    with transaction.atomic():
        mine = HeldDiscrepancy.objects.filter(connection_id=connection_id, month_start=month_start)
        mine.filter(column__in=agree).delete()
        if found:
            HeldDiscrepancy.objects.bulk_create(
                found,
                update_conflicts=True,
                unique_fields=["connection", "month_start", "column"],
                update_fields=["month_value", "days_value", "found_at"],
            )
    return found


def on_bucket_done(sender: object, bucket_id: int, **kwargs: object) -> None:
    """A bucket finished (the pipeline's bucket_done): if it is a held month or a held closed
    day, its month may now be whole; compare."""
    row = (
        Bucket.objects.filter(pk=bucket_id, tracked=True, is_closed=True, **all_flags())
        .values_list("connection_id", "period_start", "period_end")
        .first()
    )
    if row is None:
        return
    connection_id, start, end = row
    month_start = _month_of(start)
    whole_month = (start, end) == (month_start, month_start + relativedelta(months=1))
    if whole_month or end - start == ONE_DAY:
        held_month_check(connection_id, month_start)


def connect_signals() -> None:
    bucket_done.connect(on_bucket_done, dispatch_uid="osai-held-discrepancies")


# --- Reading them -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disagreement:
    """One recorded difference, in the metric's display unit, for the connection's page."""

    month: datetime
    label: str
    unit: str
    month_value: float
    days_value: float
    found_at: datetime

    @property
    def difference(self) -> float:
        return self.month_value - self.days_value

    @property
    def percent(self) -> float | None:
        """The month's difference from its days, in per cent of the days (None if they
        sum to zero)."""
        return 100 * self.difference / self.days_value if self.days_value else None


def disagreements_of(connection: Connection) -> list[Disagreement]:
    """What the connection's held months and days disagree on, newest month first."""
    result = []
    for row in HeldDiscrepancy.objects.filter(connection=connection).order_by("-month_start", "pk"):
        metric = METRIC_BY_COLUMN.get(row.column)
        if metric is None:  # a metric no longer in the registry
            continue
        result.append(
            Disagreement(
                month=row.month_start,
                label=metric.label,
                unit=metric.unit,
                month_value=row.month_value / metric.divisor,
                days_value=row.days_value / metric.divisor,
                found_at=row.found_at,
            )
        )
    return result
