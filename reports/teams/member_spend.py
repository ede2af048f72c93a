"""A team report's spend per member (a connection's owner) and period.

Per-member sums are SQL aggregates over the report's finished buckets; Python only prices the
aggregated (member, period) rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from reports.access import counted_buckets
from reports.metrics import METRIC_BY_COLUMN, USAGE_COLUMNS
from reports.models import Bucket, PriceBook, Report
from reports.spend import pricing

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
    buckets: QuerySet[Bucket], price_book: PriceBook | None
) -> list[MemberPeriod]:
    grouped = (
        buckets.filter(state=Bucket.State.DONE)
        .values("connection__owner__username", "period_start", "period_end")
        .annotate(open_buckets=Count("pk", filter=Q(is_closed=False)), **_SUMS)
        .order_by("period_start", "period_end", "connection__owner__username")
    )
    cells = []
    for row in grouped:
        totals = {column: float(row[column] or 0.0) for column in USAGE_COLUMNS}
        cells.append(
            MemberPeriod(
                member=row["connection__owner__username"],
                period_start=row["period_start"],
                period_end=row["period_end"],
                preliminary=row["open_buckets"] > 0,
                totals=totals,
                costs=pricing.period_costs(
                    totals, row["period_start"], row["period_end"], price_book
                ),
            )
        )
    return cells


def _add(spend: MemberSpend, cell: MemberPeriod) -> None:
    for column in USAGE_COLUMNS:
        spend.totals[column] += cell.totals[column]
    spend.costs = pricing.sum_costs([spend.costs, cell.costs])


def team_spend(report: Report) -> TeamSpend:
    """Spend per member (a connection's owner) per period, and the team's totals.

    The team's totals are the sum of the members' (exact: costs share one quantum).
    """
    price_book = pricing.price_book_for(report)
    cells = _member_period_cells(counted_buckets(report), price_book)
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
