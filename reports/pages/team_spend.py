"""The team page's spend: who spent what over a period, from held data (no form, no wait).

A period switch (`?period=`: this month, last month, this quarter, last quarter, the last 12
months; `this_quarter` is read as `quarter_to_date`), then tiles (spend, its change against
the period the product compares it with: reports/periods.py `comparison_period`), a chart
stacked by member, and a table per member (spend, previous period, change, share, top ML
stage), or per connection (`?by=connection`). Admins and viewers see every member
(SEE_TEAM_SPEND); a member sees only their own part: the connections they share.

Every figure adds up the rows of reports/spend/period_spend.py, which the team's CSV
(`team_period_csv` in reports/pages/downloads.py) exports: its total is the page's.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import User
from django.core.cache import cache
from django.urls import reverse

from reports.access import Capability, roles_that_may
from reports.formatting import change_text
from reports.metrics import STAGE_LABELS
from reports.models import Connection, Granularity, Membership, PriceBook, Team
from reports.pages import anomalies as anomaly_pages
from reports.pages import charts
from reports.pages.blocks import ChartBlock, chart_block
from reports.pages.links import PRESET_ALIASES
from reports.pages.report import DRAWING_CODE, FIGURES_CACHE_SECONDS
from reports.periods import (
    PRESETS,
    Period,
    comparison_period,
    describe,
    preset_period,
    split_period,
)
from reports.spend import pricing
from reports.spend.monthly import price_book_of
from reports.spend.period_spend import PeriodSpend, period_spend
from reports.teams import roster, sharing

ZERO = Decimal(0)
# The switch, in its order. Quarters and the year are drawn by month, months by day.
TEAM_PERIODS = ("this_month", "last_month", "quarter_to_date", "last_quarter", "last_12_months")
BY_MONTH = frozenset({"quarter_to_date", "last_quarter", "last_12_months"})
DEFAULT_PERIOD = "this_month"
# Periods that end now, in words (their ends as timestamps crowd a tile), and what each is
# compared with (periods.comparison_period); closed periods are described by their months.
RUNNING = {
    "this_month": ("This month so far", "the same days of last month"),
    "quarter_to_date": ("This quarter so far", "the same days of last quarter"),
    "last_12_months": ("The last 12 months", "the 12 months before"),
}
GROUPINGS = ("member", "connection")
CHART_SERIES = 8  # the biggest spenders by name; the rest as one "everyone else"


def team_period(value: str | None) -> str:
    """The switch's value from the query string: unknown values are this month."""
    value = PRESET_ALIASES.get(value or "", value or "")
    return value if value in TEAM_PERIODS else DEFAULT_PERIOD


@dataclass(frozen=True)
class SpendRow:
    """A member's (or a connection's) line of the table."""

    name: str
    detail: str  # whose connection, or how many connections a member shares
    spend: Decimal
    previous: Decimal | None
    change: str
    trend: str
    share: str
    top_stage: str
    is_you: bool = False
    # The causes of its connections' anomalies in the period (N5): labels, never an account.
    anomalies: tuple[str, ...] = ()


def _top_stage(costs: Mapping[str, Decimal] | None) -> str:
    if not costs or not costs.get("total"):
        return ""
    stages = pricing.stage_costs(costs)
    stage = max(stages, key=lambda name: stages[name])
    return STAGE_LABELS[stage] if stages[stage] > 0 else ""


def _add(costs: Sequence[pricing.Costs]) -> pricing.Costs | None:
    return pricing.sum_costs(list(costs)) if costs else None


def _share(part: Decimal, whole: Decimal) -> str:
    return (
        f"{part / whole * 100:.1f}\u00a0%" if whole > 0 else "\u2013"
    )  # an en dash: nothing to share


@dataclass(frozen=True)
class _Scope:
    """What the viewer may see: every shared connection, or only their own."""

    connections: list[Connection]
    members: list[Membership]


def _scope(team: Team, user: User, *, whole_team: bool) -> _Scope:
    connections = list(sharing.team_shared_connections(team))
    members = list(roster.team_members(team))
    if not whole_team:
        connections = [c for c in connections if c.owner_id == user.pk]
        members = [m for m in members if m.user_id == user.pk]
    return _Scope(connections, members)


def _rows(
    groups: list[tuple[str, str, list[int], bool]],
    current: dict[int, pricing.Costs],
    previous: dict[int, pricing.Costs] | None,
    total: Decimal,
    versus: str,
    currency: str,
    causes: Mapping[int, list[str]],
) -> list[SpendRow]:
    """A row per group of connections (a member's, or one), biggest spender first, with the
    causes of their anomalies in the period."""
    rows = []
    for name, detail, ids, is_you in groups:
        costs = _add([current[i] for i in ids if i in current])
        spend = costs["total"] if costs else ZERO
        before = None
        if previous is not None:
            earlier = _add([previous[i] for i in ids if i in previous])
            before = earlier["total"] if earlier else ZERO
        change, trend = change_text(spend, before, versus, currency=currency)
        flags = tuple(cause for i in ids for cause in causes.get(i, ()))
        rows.append(
            SpendRow(
                name, detail, spend, before, change, trend, _share(spend, total),
                _top_stage(costs), is_you, anomalies=flags,
            )
        )  # fmt: skip
    return sorted(rows, key=lambda row: (-row.spend, row.name))


def _groups(scope: _Scope, user: User, by: str) -> list[tuple[str, str, list[int], bool]]:
    if by == "connection":
        return [
            (c.label, f"of {c.owner.get_username()}", [c.pk], c.owner_id == user.pk)
            for c in scope.connections
        ]
    owned: dict[int, list[int]] = defaultdict(list)
    for connection in scope.connections:
        owned[connection.owner_id].append(connection.pk)
    sharers = roles_that_may(Capability.SHARE_OWN_CONNECTIONS)
    groups = []
    for membership in scope.members:
        ids = owned.get(membership.user_id, [])
        if not ids and membership.role not in sharers:
            continue  # a viewer: never spends the team's money
        detail = f"{len(ids)} connection{'s' if len(ids) != 1 else ''}" if ids else "shares none"
        groups.append((membership.user.get_username(), detail, ids, membership.user_id == user.pk))
    return groups


def _chart(spend: PeriodSpend, scope: _Scope, by_month: bool, title: str) -> ChartBlock:
    """Spend per member over the period, stacked: the biggest spenders by name."""
    owner_of = {c.pk: c.owner.get_username() for c in scope.connections}
    labels: list[str] = []
    index: dict[datetime, int] = {}
    granularity = Granularity.MONTH if by_month else Granularity.DAY
    for start, _ in split_period(spend.start, spend.end, granularity):
        index[start] = len(labels)
        labels.append(f"{start:%b %Y}" if by_month else f"{start:%d %b}")
    per_member: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(labels))
    for cost in spend.held:
        slot = cost.start.replace(day=1) if by_month else cost.start
        if slot in index:
            per_member[owner_of[cost.connection_id]][index[slot]] += float(cost.total)
    ranked = sorted(per_member, key=lambda name: -sum(per_member[name]))
    series = {name: per_member[name] for name in ranked[:CHART_SERIES]}
    if len(ranked) > CHART_SERIES:
        others = [per_member[name] for name in ranked[CHART_SERIES:]]
        rest = [sum(values) for values in zip(*others, strict=True)]
        series[f"{len(ranked) - CHART_SERIES} others"] = rest
    x_title = "Month (UTC)" if by_month else "Day (UTC)"
    # Cached by what it shows, as the overview's and reports' figures are: building the
    # Plotly figure was a fifth of the page, and any change to a figure makes a new key.
    content = (DRAWING_CODE, labels, series, spend.currency, title, x_title)
    key = f"team-spend:{hashlib.sha256(repr(content).encode()).hexdigest()}"
    block: ChartBlock | None = cache.get(key)
    if block is None:
        figure = charts.stacked_bars_figure(
            labels, series, unit=spend.currency, title=title, x_title=x_title
        )
        block = chart_block("team-spend", figure, wide=True)
        cache.set(key, block, FIGURES_CACHE_SECONDS)
    return block


def team_spend(
    team: Team,
    user: User,
    *,
    whole_team: bool,
    period: str,
    by: str,
    now: datetime,
) -> dict[str, Any]:
    """The spend section of the team page for this viewer (see the module docstring)."""
    book: PriceBook | None = price_book_of(team)
    scope = _scope(team, user, whole_team=whole_team)
    by = by if by in GROUPINGS and whole_team else "member"
    start, end = preset_period(period, now)
    switch = [
        {"value": name, "label": "This quarter" if name == "quarter_to_date" else PRESETS[name],
         "url": _url(team, name, by), "current": name == period}
        for name in TEAM_PERIODS
    ]  # fmt: skip
    section: dict[str, Any] = {
        "period": period,
        "period_label": RUNNING[period][0] if period in RUNNING else describe(start, end),
        "switch": switch,
        "by": by,
        "by_urls": {g: _url(team, period, g) for g in GROUPINGS},
        "whole_team": whole_team,
        "price_book": book,
    }
    if book is None:
        return section
    ids = [c.pk for c in scope.connections]
    by_month = period in BY_MONTH
    current = held_spend(ids, book, period, now=now)
    before: Period = comparison_period(period, start, end)
    previous = period_spend(ids, book, *before, now=now)
    versus = RUNNING[period][1] if period in RUNNING else describe(*before)
    # A period before what is held (or still filling in) says nothing to compare with.
    known = previous.missing_days == 0 and bool(previous.held)
    per_connection = current.costs_by_connection()
    total = current.total
    change, trend = change_text(
        total, previous.total if known else None, versus, currency=book.currency
    )
    section.update(
        currency=book.currency,
        total=total,
        previous=previous.total if known else None,
        versus=versus,
        change=change,
        trend=trend,
        missing_days=current.missing_days,
        rows=_rows(
            _groups(scope, user, by),
            per_connection,
            previous.costs_by_connection() if known else None,
            total,
            versus,
            book.currency,
            # One query: the anomalies of the connections it shows, on the period's days.
            anomaly_pages.causes_by_connection(anomaly_pages.between(ids, start, end), book),
        ),
        anomalies_url=f"{reverse('anomaly_list')}?{urlencode({'team': team.pk})}"
        if whole_team
        else reverse("anomaly_list"),
        chart=_chart(current, scope, by_month, "Spend per member") if whole_team and ids else None,
    )
    return section


def _url(team: Team, period: str, by: str) -> str:
    query = {"period": period} | ({"by": by} if by != "member" else {})
    return f"{reverse('team_detail', args=[team.pk])}?{urlencode(query)}#spend"


def held_spend(
    connection_ids: Sequence[int], book: PriceBook, period: str, *, now: datetime
) -> PeriodSpend:
    """The rows behind the figures of a period of the switch: the page's and its CSV's."""
    start, end = preset_period(period, now)
    return period_spend(connection_ids, book, start, end, now=now, by_month=period in BY_MONTH)
