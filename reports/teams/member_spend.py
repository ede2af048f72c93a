"""A team report's spend per member (a connection's owner) and report period.

Per-member sums are SQL aggregates over the report's finished buckets (by member, connection
and bucket period); Python prices them per (member, bucket period) and adds them into the
report's periods, so held days roll up into its weeks as on the rest of the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from reports.access import counted_buckets
from reports.metrics import METRIC_BY_COLUMN, STATE_COLUMNS, USAGE_COLUMNS, columns_off
from reports.models import Bucket, PriceBook, Report
from reports.periods import Period
from reports.spend import pricing
from reports.spend.usage import ADDITIVE_COLUMNS, report_periods, row_period

_SUMS = {column: Sum(column) for column in USAGE_COLUMNS}


@dataclass
class MemberPeriod:
    """One member's usage (raw units, summed in SQL) and cost in one period."""

    member: str
    period_start: datetime
    period_end: datetime
    preliminary: bool
    totals: dict[str, float]
    costs: pricing.Costs


@dataclass
class MemberSpend:
    member: str
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE_COLUMNS, 0.0))
    costs: pricing.Costs = field(default_factory=lambda: pricing.sum_costs([]))

    def display(self, column: str) -> float:
        return self.totals[column] / METRIC_BY_COLUMN[column].divisor

    @property
    def stages(self) -> dict[str, Decimal]:
        return pricing.stage_costs(self.costs)


@dataclass
class TeamSpend:
    """A team report's spend: per member, per period, and the team's totals."""

    price_book: PriceBook | None
    periods: list[tuple[datetime, datetime]]
    cells: list[MemberPeriod]
    members: list[MemberSpend]
    team: MemberSpend
    notice: str | None = None

    @property
    def currency(self) -> str:
        return self.price_book.currency if self.price_book else ""


def _member_period_cells(
    buckets: QuerySet[Bucket], report: Report, price_book: PriceBook | None
) -> list[MemberPeriod]:
    """Per member and report period (its period split by its granularity: held days roll up
    into its weeks), the usage and cost. Sums by member, connection and bucket period come
    from SQL; each (member, bucket period) is priced where its usage was, then added into its
    report period. Categories the report did not ask for are masked (0); images existing are
    the state at the period's end (each connection's latest bucket's, summed)."""
    grouped = (
        buckets.filter(state=Bucket.State.DONE)
        .values("connection__owner__username", "connection_id", "period_start", "period_end")
        .annotate(open_buckets=Count("pk", filter=Q(is_closed=False)), **_SUMS)
        .order_by("period_start", "period_end", "connection__owner__username")
    )
    off = columns_off(report.flags())
    periods = report_periods(report)
    starts = [start for start, _ in periods]
    # (member, bucket period) -> usage, and whether any of it is open.
    parts: dict[tuple[str, Period], dict[str, float]] = {}
    part_open: dict[tuple[str, Period], bool] = {}
    # (member, report period, connection) -> (its latest bucket end, that bucket's states).
    states: dict[tuple[str, Period, int], tuple[datetime, dict[str, float]]] = {}
    for row in grouped:
        member = row["connection__owner__username"]
        own = (row["period_start"], row["period_end"])
        usage = {
            column: 0.0 if column in off else float(row[column] or 0.0) for column in USAGE_COLUMNS
        }
        key = (member, own)
        into = parts.setdefault(key, dict.fromkeys(USAGE_COLUMNS, 0.0))
        for column in ADDITIVE_COLUMNS:
            into[column] += usage[column]
        part_open[key] = part_open.get(key, False) or row["open_buckets"] > 0
        period = row_period(*own, periods, starts)
        seen = states.get((member, period, row["connection_id"]))
        if seen is None or own[1] > seen[0]:
            states[(member, period, row["connection_id"])] = (
                own[1],
                {column: usage[column] for column in STATE_COLUMNS},
            )
    cells: dict[tuple[str, Period], MemberPeriod] = {}
    for (member, own), usage in parts.items():
        period = row_period(*own, periods, starts)
        cell = cells.get((member, period))
        if cell is None:
            cell = cells[(member, period)] = MemberPeriod(
                member=member,
                period_start=period[0],
                period_end=period[1],
                preliminary=False,
                totals=dict.fromkeys(USAGE_COLUMNS, 0.0),
                costs=pricing.sum_costs([]),
            )
        cell.preliminary = cell.preliminary or part_open[(member, own)]
        for column in ADDITIVE_COLUMNS:
            cell.totals[column] += usage[column]
        cell.costs = pricing.sum_costs(
            [cell.costs, pricing.period_costs(usage, own[0], own[1], price_book)]
        )
    for (member, period, _), (_, values) in states.items():
        for column, value in values.items():
            cells[(member, period)].totals[column] += value
    return [cells[key] for key in sorted(cells, key=lambda k: (k[1], k[0]))]


def _add(spend: MemberSpend, cell: MemberPeriod) -> None:
    for column in USAGE_COLUMNS:
        spend.totals[column] += cell.totals[column]
    spend.costs = pricing.sum_costs([spend.costs, cell.costs])


def team_spend(report: Report) -> TeamSpend:
    """Spend per member (a connection's owner) per period, and the team's totals.

    The team's totals are the sum of the members' (exact: costs share one quantum).
    """
    price_book = pricing.price_book_for(report)
    cells = _member_period_cells(counted_buckets(report), report, price_book)
    members: dict[str, MemberSpend] = {}
    team_total = MemberSpend(member="Team")
    for cell in cells:
        _add(members.setdefault(cell.member, MemberSpend(member=cell.member)), cell)
        _add(team_total, cell)
    periods = sorted({(c.period_start, c.period_end) for c in cells})
    unpriced_from = [c.period_start for c in cells if c.costs.unpriced]
    notice = None
    if price_book is None and cells:
        notice = "No price book is set up, so costs are shown as 0."
    elif unpriced_from:
        notice = (
            f"No prices in force for part of this report (from {min(unpriced_from):%Y-%m-%d}, "
            f"UTC) in the price book “{price_book.name if price_book else ''}”: that usage is "
            "costed at 0."
        )
    return TeamSpend(
        price_book=price_book,
        periods=periods,
        cells=cells,
        members=sorted(members.values(), key=lambda m: m.member),
        team=team_total,
        notice=notice,
    )
