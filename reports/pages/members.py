"""A team report's breakdown per member: a table and two stacked charts.

In the cost view: spend per member by ML stage, and spend per member over time. In the usage
view: usage per member by category (each in its own unit), compute hours per member by kind
of work, and compute hours per member over time. Members are the owners of the connections
that count for the report (reports/access.py); sums come from reports/teams/.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.formatting import money
from reports.metrics import (
    CATEGORIES,
    COMPUTE_COLUMNS,
    STAGE_LABELS,
    display_value,
    metrics_in,
)
from reports.models import Report
from reports.pages import charts
from reports.pages.blocks import ChartBlock, chart_block
from reports.teams import member_spend

# Stages and compute categories take the colour of the work they stand for.
STAGE_COLORS: dict[str, str] = {
    STAGE_LABELS["data"]: charts.CATEGORY_COLORS["Image storage"],
    STAGE_LABELS["augmentation"]: charts.CATEGORY_COLORS["Augmentation"],
    STAGE_LABELS["training"]: charts.CATEGORY_COLORS["Training"],
    STAGE_LABELS["conversion"]: charts.CATEGORY_COLORS["Conversion"],
    STAGE_LABELS["deployment"]: charts.CATEGORY_COLORS["Prediction"],
}
# The kinds of compute work, as the share chart names them: (label, columns).
COMPUTE_KINDS = charts.COMPUTE_CATEGORIES
# Usage per member: every priced category, in its own unit.
USAGE_CATEGORIES = [c for c in CATEGORIES if any(m.priced for m in metrics_in(c.key))]


@dataclass(frozen=True)
class MemberRow:
    member: str
    values: list[str]
    total: str  # "" in the usage view: categories in different units do not add up


@dataclass(frozen=True)
class MemberBreakdown:
    columns: list[str]
    rows: list[MemberRow]
    team: MemberRow
    charts: list[ChartBlock]
    currency: str
    notice: str | None


def _hours(value: float) -> str:
    return f"{value:,.2f}"


def member_breakdown(report: Report, *, cost_view: bool) -> MemberBreakdown:
    """Spend (or usage) per member of a team report, as a table and stacked charts."""
    spend = member_spend.team_spend(report)
    people = [*spend.members]
    names = [m.member for m in people]
    periods = spend.periods
    period_labels = [charts.period_label(s, e, report.granularity) for s, e in periods]
    cells = {(c.period_start, c.period_end, c.member): c for c in spend.cells}

    if cost_view:
        currency = spend.currency
        columns = [*STAGE_LABELS.values(), f"Total ({currency})" if currency else "Total"]

        def row(m: member_spend.MemberSpend) -> MemberRow:
            stages = m.stages
            return MemberRow(
                m.member, [money(stages[k]) for k in STAGE_LABELS], money(m.costs["total"])
            )

        by_kind = charts.stacked_bars_figure(
            names,
            {label: [float(m.stages[key]) for m in people] for key, label in STAGE_LABELS.items()},
            unit=currency,
            title="Spend per member by ML stage",
            x_title="Member",
            colors=STAGE_COLORS,
        )
        over_time = charts.stacked_bars_figure(
            period_labels,
            {
                name: [
                    float(cells[(s, e, name)].costs["total"]) if (s, e, name) in cells else 0.0
                    for s, e in periods
                ]
                for name in names
            },
            unit=currency,
            title="Spend per member over time",
            x_title=charts.x_title(report.granularity),
        )
    else:
        currency = ""
        columns = [f"{c.label} ({c.unit})" for c in USAGE_CATEGORIES]

        def row(m: member_spend.MemberSpend) -> MemberRow:
            return MemberRow(
                m.member,
                [
                    _hours(sum(m.display(x.column) for x in metrics_in(c.key)))
                    for c in USAGE_CATEGORIES
                ],
                "",
            )

        def compute_hours(totals: dict[str, float]) -> float:
            return sum(display_value(c, totals[c]) for c in COMPUTE_COLUMNS)

        by_kind = charts.stacked_bars_figure(
            names,
            {
                label: [sum(m.display(c) for c in columns_) for m in people]
                for label, columns_ in COMPUTE_KINDS
            },
            unit="hours",
            title="Compute hours per member by kind of work",
            x_title="Member",
            colors=charts.CATEGORY_COLORS,
        )
        over_time = charts.stacked_bars_figure(
            period_labels,
            {
                name: [
                    compute_hours(cells[(s, e, name)].totals) if (s, e, name) in cells else 0.0
                    for s, e in periods
                ]
                for name in names
            },
            unit="GPU-hours",
            title="GPU-hours per member over time (training, conversion, prediction)",
            x_title=charts.x_title(report.granularity),
        )
    team_row = row(spend.team)
    return MemberBreakdown(
        columns=columns,
        rows=[row(m) for m in people],
        team=MemberRow("Team", team_row.values, team_row.total),
        charts=[
            chart_block("members-by-kind", by_kind, wide=False),
            chart_block("members-over-time", over_time, wide=False),
        ],
        currency=currency,
        notice=spend.notice if cost_view else None,
    )
