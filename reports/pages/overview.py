"""The overview (the home page): this month to date per connection and combined, against the
same days of last month, the month-end forecast, a daily chart with the forecast drawn on,
the budgets and what is left, and "data as of". Read from tracked buckets: it never waits on
OSAI, and fills in while tracking fetches a new connection's month.

The same numbers serve `manage.py spend_summary` (`spend_summary`) and the API.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.core.cache import cache
from django.utils import timezone

from reports.formatting import change_text, money, to_cents
from reports.models import Budget, Connection, PriceBook, Team
from reports.pages import charts
from reports.pages.blocks import ChartBlock, chart_block
from reports.pages.report import DRAWING_CODE, FIGURES_CACHE_SECONDS
from reports.spend import pricing
from reports.spend.budgets import budgets_visible_to
from reports.spend.monthly import (
    BookCache,
    BudgetStatus,
    MonthSpend,
    SpendData,
    budget_connection_ids,
    budget_statuses,
    load_spend,
    month_spend_of,
)
from reports.spend.tracking import History, history_held, tracking_in_flight
from reports.teams.sharing import team_shared_connections

ZERO = Decimal(0)


@dataclass(frozen=True)
class HistoryStatus:
    """How far tracking has come with the held history ("9 of 25 months held"), and the
    connections whose history stopped because OSAI no longer accepts their token."""

    held: History
    stopped: tuple[str, ...]
    fetching: bool


def history_status(
    connections: list[Connection], now: datetime, *, fetching: bool, with_owner: bool = False
) -> HistoryStatus:
    stopped = tuple(
        _label(c, with_owner) for c in connections if c.status == Connection.Status.NEEDS_TOKEN
    )
    return HistoryStatus(history_held([c.pk for c in connections], now), stopped, fetching)


def _label(connection: Connection, with_owner: bool) -> str:
    if with_owner:
        return f"{connection.owner.get_username()}: {connection.label}"
    return connection.label


@dataclass(frozen=True)
class ConnectionSpend:
    label: str
    month_to_date: Decimal
    previous: Decimal | None
    change: str
    trend: str
    needs_token: bool


def _day_labels(spend: MonthSpend) -> list[str]:
    first = spend.month_start
    return [f"{first.replace(day=d):%b} {d}" for d in range(1, spend.days_in_month + 1)]


def month_chart(spend: MonthSpend, budget_amount: Decimal | None) -> ChartBlock:
    """The daily chart with the forecast and the budget drawn on, and its table.

    Cached by what it shows, as a report's figures are (reports/pages/report.py): building
    the Plotly figure was a third of a one-connection overview, and it only changes when a
    day's spend, the forecast or the budget does, each of which makes a new key.
    """
    forecast = spend.forecast
    labels = _day_labels(spend)
    daily = [float(d.cost) if d.cost is not None else None for d in spend.days]
    band = (float(forecast.value), float(forecast.low), float(forecast.high)) if forecast else None
    budget = float(budget_amount) if budget_amount is not None else None
    running = ZERO
    rows = []
    for label, day in zip(labels, spend.days, strict=False):
        running += day.cost or ZERO
        cost = money(day.cost) if day.cost is not None else "not fetched yet"
        rows.append([label + (" *" if day.preliminary else ""), cost, money(running)])
    unit = f" ({spend.currency})" if spend.currency else ""
    table = charts.ChartTable(
        columns=["Day (UTC)", f"Spend{unit}", f"Month to date{unit}"], rows=rows
    )
    content = (DRAWING_CODE, labels, daily, spend.currency, band, budget, table)
    key = f"overview-month:{hashlib.sha256(repr(content).encode()).hexdigest()}"
    block: ChartBlock | None = cache.get(key)
    if block is None:
        figure = charts.month_spend_figure(
            labels, daily, currency=spend.currency, forecast=band, budget=budget
        )
        block = chart_block("month", figure, wide=True, table=table)
        cache.set(key, block, FIGURES_CACHE_SECONDS)
    return block


def _scope(
    data: SpendData,
    connections: list[Connection],
    price_book: PriceBook | None,
    *,
    with_owner: bool = False,
) -> dict[str, Any]:
    spend = month_spend_of(data, [c.pk for c in connections], price_book)
    per_connection = []
    for connection in connections:
        # Priced once in `data`: the budget of this connection reuses it.
        previous = data.previous_cost([connection.pk], price_book)
        mtd = spend.by_connection.get(connection.pk, ZERO)
        change, trend = change_text(
            mtd, previous, "the same days of last month", currency=spend.currency
        )
        per_connection.append(
            ConnectionSpend(
                label=_label(connection, with_owner),
                month_to_date=to_cents(mtd),
                previous=None if previous is None else to_cents(previous),
                change=change,
                trend=trend,
                needs_token=connection.status == Connection.Status.NEEDS_TOKEN,
            )
        )
    change, trend = change_text(
        spend.month_to_date,
        spend.previous_same_days,
        "the same days of last month",
        currency=spend.currency,
    )
    return {
        "spend": spend,
        "currency": spend.currency,
        "month_to_date": money(spend.month_to_date),
        "previous": money(spend.previous_same_days),
        "change": change,
        "trend": trend,
        "forecast": spend.forecast,
        "per_connection": per_connection,
        "price_book": price_book,
        "is_example_prices": pricing.is_example(price_book),
    }


def overview_page(
    user: User, *, now: datetime | None = None, own: list[Connection] | None = None
) -> dict[str, Any]:
    """The signed-in person's overview: their connections, and every budget they see (their own,
    and their teams' where their role sees its spend).
    `own`: their connections in label order, if the caller has read them already."""
    now = now or timezone.now()
    if own is None:
        own = list(Connection.objects.filter(owner=user).order_by("label"))
    budgets = budgets_visible_to(user)
    covered = budget_connection_ids(budgets)
    data = load_spend({c.pk for c in own} | {c for ids in covered.values() for c in ids}, now)
    # One instance per book for the page: each is read once, and `data` prices a connection
    # once per book for the totals, the per-connection rows and the budgets alike.
    books = BookCache()
    scope = _scope(data, own, books.of(None))
    statuses = budget_statuses(budgets, data=data, books=books, covered=covered)
    person_budget = next(
        (s.amount for s in statuses if s.budget.scope == Budget.Scope.PERSON), None
    )
    tracking = bool(own) and tracking_in_flight([c.pk for c in own])
    page = {
        **scope,
        "now": now,
        "chart": month_chart(scope["spend"], person_budget),
        "budgets": statuses,
        "tracking": tracking,
        "history": history_status(own, now, fetching=tracking),
    }
    page["overview_key"] = overview_key(user, page)
    page["budgets_key"] = budgets_key(user, statuses)
    return page


def budgets_key(user: User, statuses: list[BudgetStatus]) -> str:
    """What the overview's budget bars show, as a key for their rendered HTML (home.html
    caches them apart from the rest of the body). The body's own key changes every few
    seconds, as last month's same days grow pro rata with the clock, so fifty bars were
    rendered again on nearly every view; the bars depend on the statuses alone. The person
    is part of the key, as in `overview_key`."""
    return hashlib.sha256(repr((user.pk, statuses)).encode()).hexdigest()


def overview_key(user: User, page: dict[str, Any]) -> str:
    """What the overview's body shows, as a key for its rendered HTML (home.html caches the
    fragment under it): rendering fifty budgets cost more than computing them, and the body
    only changes when a figure in it does. The person is part of the key, so no one is ever
    shown a fragment made for someone else."""
    spend: MonthSpend = page["spend"]
    content = (
        user.pk,
        spend.days,  # with the forecast and the budgets below: all the chart draws
        page["tracking"],
        page["is_example_prices"],
        page["currency"],
        page["month_to_date"],
        page["change"],
        page["trend"],
        page["previous"],
        spend.missing_days,
        spend.previous_label,
        spend.data_as_of,
        page["forecast"],
        page["per_connection"],
        page["budgets"],
        page["history"],
    )
    return hashlib.sha256(repr(content).encode()).hexdigest()


def team_overview(team: Team, *, now: datetime | None = None) -> dict[str, Any]:
    """A team's month, as its admins and viewers see it on the team page."""
    now = now or timezone.now()
    shared = list(team_shared_connections(team))
    budgets = list(Budget.objects.filter(team=team).select_related("team__price_book"))
    data = load_spend([c.pk for c in shared], now)
    books = BookCache()
    scope = _scope(data, shared, books.of(team), with_owner=True)
    statuses = budget_statuses(budgets, data=data, books=books)
    tracking = bool(shared) and tracking_in_flight([c.pk for c in shared])
    return {
        **scope,
        "now": now,
        "chart": month_chart(scope["spend"], statuses[0].amount if statuses else None),
        "budgets": statuses,
        "tracking": tracking,
        "history": history_status(shared, now, fetching=tracking, with_owner=True),
    }


def spend_summary(scope: dict[str, Any]) -> dict[str, Any]:
    """What the overview shows, as JSON-ready data: money as strings (manage.py spend_summary)."""
    spend: MonthSpend = scope["spend"]
    forecast = spend.forecast

    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(to_cents(value))

    def budget(status: BudgetStatus) -> dict[str, Any]:
        return {
            "scope": status.budget.scope,
            "name": status.name,
            "amount": str(status.amount),
            "spent": str(status.spent),
            "percent": str(status.percent),
            "remaining": str(status.remaining),
            "remaining_gpu_hours_16gb": text_or_none(status.remaining_gpu_hours_16gb),
            "remaining_gpu_hours_8gb": text_or_none(status.remaining_gpu_hours_8gb),
            "runs_out_on": status.runs_out_on.isoformat() if status.runs_out_on else None,
        }

    return {
        "currency": spend.currency,
        "as_of": spend.data_as_of.isoformat() if spend.data_as_of else None,
        "month": f"{spend.month_start:%Y-%m}",
        "month_to_date_cost": text(spend.month_to_date),
        "previous_month_same_days_cost": text(spend.previous_same_days),
        "forecast_cost": text(forecast.value if forecast else None),
        "forecast_low": text(forecast.low if forecast else None),
        "forecast_high": text(forecast.high if forecast else None),
        "missing_days": spend.missing_days,
        "budgets": [budget(s) for s in scope["budgets"]],
    }


def text_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
