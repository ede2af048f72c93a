"""Some connections' spend over any period of whole UTC days, read from the spend ledger
(reports/spend/ledger.py): per connection and held bucket, with what is not held yet.

It answers the team page's period switch (this month, last quarter, the last 12 months...)
and its CSV without asking OSAI: one query for the rows, whatever the period's length.

Which rows count, per connection and calendar month of the period (one rule,
`month_that_counts`, here and in `manage.py export_usage --group`; the page, its chart and its
CSV add up to the same cent):
- a month only partly in the period (this month so far, a range's ends): its held days;
- a whole month: its held month when it is preferred (a chart by month; the CLI's rows, one
  per period of its granularity) or when its days are not all held (older than the held days:
  only the month is held), else its held days.
Today's open day counts when the period reaches into today, as on the overview; it is
marked preliminary there and in the CSV.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from dateutil.relativedelta import relativedelta
from django.db.models import Q, Sum

from reports.metrics import PRICED_COLUMNS
from reports.models import LedgerEntry, PriceBook
from reports.periods import Period, ceil_midnight, day_number, day_of, utc_midnight
from reports.spend import pricing
from reports.spend.ledger import COST_FIELDS, from_units, ledger_fill

Span = LedgerEntry.Span
ONE_DAY = timedelta(days=1)
Held = TypeVar("Held")  # a held month's row, whatever its reader makes of it
_SUMS = {field: Sum(field) for field in ("cost_total", *COST_FIELDS)}


@dataclass(frozen=True)
class HeldCost:
    """One held bucket's cost in the book (all its versions' rows added): a day or a month."""

    bucket_id: int
    connection_id: int
    start: datetime
    span: str
    units: dict[str, int]  # whole ledger units per cost field ("cost_total", "cost_<column>")

    @property
    def total(self) -> Decimal:
        return from_units(self.units["cost_total"])


@dataclass
class PeriodSpend:
    """What the connections cost over [start, end) in one book, bucket by bucket."""

    start: datetime
    end: datetime
    price_book: PriceBook
    connection_ids: list[int]
    held: list[HeldCost] = field(default_factory=list)
    missing_days: int = 0  # connection-days of the period that are not held yet

    @property
    def currency(self) -> str:
        return self.price_book.currency

    @property
    def total(self) -> Decimal:
        return from_units(sum(cost.units["cost_total"] for cost in self.held))

    def costs_by_connection(self) -> dict[int, pricing.Costs]:
        """Each connection's costs per priced metric and in total (connections with nothing
        held are absent)."""
        units: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for cost in self.held:
            for name, value in cost.units.items():
                units[cost.connection_id][name] += value
        result: dict[int, pricing.Costs] = {}
        for connection_id, sums in units.items():
            costs = pricing.Costs()
            for column, name in zip(PRICED_COLUMNS, COST_FIELDS, strict=True):
                costs[column] = from_units(sums[name])
            costs["total"] = from_units(sums["cost_total"])
            result[connection_id] = costs
        return result

    def bucket_ids(self) -> list[int]:
        return [cost.bucket_id for cost in self.held]


def calendar_months(start: datetime, end: datetime) -> list[Period]:
    """The calendar months [start, end) touches, each cut to the period."""
    months: list[Period] = []
    cursor = start
    while cursor < end:
        month_end = utc_midnight(cursor.date()).replace(day=1) + relativedelta(months=1)
        months.append((cursor, min(month_end, end)))
        cursor = month_end
    return months


def is_whole_month(start: datetime, end: datetime) -> bool:
    """Whether [start, end), one of `calendar_months`, is a calendar month whole."""
    return start.day == 1 and end == start + relativedelta(months=1)


def month_that_counts(
    month: Held | None, held_days: int, day_count: int, *, prefer_month: bool
) -> Held | None:
    """The rule (see the module) for one calendar month of a period: its held `month` (None:
    not held, or not whole in the period) when the month counts by it, else None, and then
    its `held_days` of `day_count` days count."""
    return month if month is not None and (prefer_month or held_days < day_count) else None


def _read(
    ids: list[int], book: PriceBook, start: datetime, stop: datetime
) -> tuple[dict[tuple[int, int], HeldCost], dict[tuple[int, datetime], HeldCost]]:
    """Day rows by (connection, day number) and month rows by (connection, month start): one
    query, summed per bucket in SQL."""
    rows = (
        LedgerEntry.objects.filter(
            Q(span=Span.DAY, day__gte=day_number(start), day__lt=day_number(stop))
            | Q(span=Span.MONTH, period_start__gte=start, period_end__lte=stop),
            price_book=book,
            connection_id__in=ids,
        )
        .values("bucket_id", "connection_id", "span", "day")
        .annotate(**_SUMS)
        .order_by()
    )
    days: dict[tuple[int, int], HeldCost] = {}
    months: dict[tuple[int, datetime], HeldCost] = {}
    for row in rows:
        units = {name: int(row[name] or 0) for name in _SUMS}
        begins = day_of(row["day"])
        cost = HeldCost(row["bucket_id"], row["connection_id"], begins, row["span"], units)
        if row["span"] == Span.DAY:
            days[(row["connection_id"], row["day"])] = cost
        else:
            months[(row["connection_id"], begins)] = cost
    return days, months


def period_spend(
    connection_ids: Sequence[int],
    price_book: PriceBook,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    by_month: bool = False,
) -> PeriodSpend:
    """These connections' held spend over [start, end) (`end` rounded up to a midnight: a
    period that ends now includes today so far). Rows a held bucket is missing in this book
    are written first (ledger_fill), only when something looks missing."""
    ids = sorted(set(connection_ids))
    stop = min(ceil_midnight(end), ceil_midnight(now))
    spend = PeriodSpend(start, stop, price_book, ids)
    if not ids or stop <= start:
        return spend
    days, months = _read(ids, price_book, start, stop)
    expected = len(ids) * ((stop - start) // ONE_DAY)
    if len(days) < expected and ledger_fill(ids, [price_book], since=start, now=now):
        days, months = _read(ids, price_book, start, stop)
    for connection_id in ids:
        for month_start, month_end in calendar_months(start, stop):
            numbers = range(day_number(month_start), day_number(month_end))
            held_days = [days[(connection_id, n)] for n in numbers if (connection_id, n) in days]
            whole = is_whole_month(month_start, month_end)
            month = months.get((connection_id, month_start)) if whole else None
            month = month_that_counts(month, len(held_days), len(numbers), prefer_month=by_month)
            if month is not None:
                spend.held.append(month)
            else:
                spend.held.extend(held_days)
                spend.missing_days += len(numbers) - len(held_days)
    return spend
