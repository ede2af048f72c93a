"""Team pages: the team itself (members, shared connections, its reports) and a team report.

A team report shows spend per member on the connections members share with the team
(reports/teams.py computes it); only the team's current admins see it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from reports import charts, pricing, teams
from reports.metrics import COMPUTE_COLUMNS, STAGE_LABELS
from reports.models import Connection, Granularity, Membership, Report
from reports.pages.report import badge_context


def team_page(user: Any, membership: Membership) -> dict[str, Any]:
    """The team as a member sees it; admins also see its reports."""
    team = membership.team
    is_admin = membership.role == Membership.Role.ADMIN
    return {
        "team": team,
        "membership": membership,
        "is_admin": is_admin,
        "members": teams.team_members(team),
        "shared_connections": teams.team_shared_connections(team),
        "my_shared": Connection.objects.filter(owner=user, shared_with_teams=team),
        # Team reports show other people's spend: admins only.
        "reports": teams.team_reports(team)[:50] if is_admin else [],
    }


def _period_label(start: datetime, end: datetime, granularity: str) -> str:
    if granularity == Granularity.MONTH and start.day == 1:
        return f"{start:%Y-%m}"
    if end - start == timedelta(days=1):
        return f"{start:%Y-%m-%d}"
    return f"{start:%Y-%m-%d} to {(end - timedelta(microseconds=1)):%Y-%m-%d}"


def _amount(value: Decimal | float, *, cost_view: bool) -> str:
    """Display text: money rounded to cents once, here; usage to two decimals."""
    if cost_view:
        return f"{pricing.money(Decimal(value)):,.2f}"
    return f"{value:,.2f}"


def _member_table(spend: teams.TeamSpend, *, cost_view: bool) -> dict[str, Any]:
    """Members x categories (ML stages in money, or metrics in display units), then the team."""
    if cost_view:
        columns = [*STAGE_LABELS.values(), f"Total ({spend.currency})"]

        def values(m: teams.MemberSpend) -> list[str]:
            return [
                *(_amount(v, cost_view=True) for v in m.stages.values()),
                _amount(m.costs["total"], cost_view=True),
            ]
    else:
        columns = [f"{metric.label} ({metric.unit})" for metric in teams.TEAM_METRICS]

        def values(m: teams.MemberSpend) -> list[str]:
            return [_amount(m.display(x.column), cost_view=False) for x in teams.TEAM_METRICS]

    return {
        "columns": columns,
        "rows": [{"member": m.member, "values": values(m)} for m in spend.members],
        "total": values(spend.team),
    }


def _over_time(
    spend: teams.TeamSpend, report: Report, *, cost_view: bool
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Periods x members (cost, or GPU-hours of compute), as a table and as chart series."""
    members = [m.member for m in spend.members]
    cells = {(c.period_start, c.period_end, c.member): c for c in spend.cells}
    rows: list[dict[str, Any]] = []
    series: dict[str, list[float]] = {m: [] for m in members}
    for start, end in spend.periods:
        values: list[Decimal | float] = []
        preliminary = False
        for member in members:
            cell = cells.get((start, end, member))
            value: Decimal | float
            if cell is None:
                value = Decimal(0) if cost_view else 0.0
            elif cost_view:
                value = cell.costs["total"]
            else:
                value = sum(cell.totals[c] for c in COMPUTE_COLUMNS) / 3600
            preliminary = preliminary or bool(cell and cell.preliminary)
            values.append(value)
            series[member].append(float(value))  # floats for drawing only
        total = sum(values, Decimal(0) if cost_view else 0.0)
        rows.append(
            {
                "label": _period_label(start, end, report.granularity),
                "preliminary": preliminary,
                "values": [_amount(v, cost_view=cost_view) for v in values],
                "total": _amount(total, cost_view=cost_view),
            }
        )
    return {"members": members, "rows": rows}, series


def team_report_page(report: Report, *, cost_view: bool) -> dict[str, Any]:
    """A team report: spend per member, per ML stage and over time, with the status badge."""
    team = report.team
    assert team is not None
    spend = teams.team_spend(report)
    over_time, series = _over_time(spend, report, cost_view=cost_view)
    unit = spend.currency if cost_view else "GPU-hours"
    title = (
        "Cost per member" if cost_view else "Compute per member (training, conversion, prediction)"
    )
    figure = charts.member_bars_figure(
        [row["label"] for row in over_time["rows"]], series, unit=unit, title=title
    )
    previous = spend.previous_total
    context = {
        "team": team,
        "report": report,
        "spend": spend,
        "cost_view": cost_view,
        "unit": unit,
        "members_table": _member_table(spend, cost_view=cost_view),
        "over_time": over_time,
        "team_total": _amount(spend.team.costs["total"], cost_view=True),
        "previous_total": None if previous is None else _amount(previous, cost_view=True),
        "change_percent": None if spend.change is None else f"{100 * spend.change:+.1f} %",
        "is_example": pricing.is_example(spend.price_book),
        "chart": charts.figure_json(figure),
        "chart_title": title,
        # What the report page's status-badge partial needs (elapsed, status_url, ...).
        **badge_context(report),
    }
    return context
