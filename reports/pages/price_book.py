"""A price book as a team's admins see it (its versions, rate by rate), and the notes that
say where a change of prices re-priced what a page shows (reports/teams/price_books.py has
the rules)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from dateutil.relativedelta import relativedelta
from django.contrib.auth.models import User
from django.utils import timezone

from reports.metrics import PRICED, Metric
from reports.models import PriceBook, PriceBookVersion, Team
from reports.periods import utc_midnight
from reports.spend import pricing
from reports.teams import price_books


@dataclass(frozen=True)
class RateRow:
    """One priced metric across the book's versions, newest first."""

    metric: Metric
    unit: str  # "GPU-hour", "hour", "GB-month"
    rates: list[str]  # as format_rate writes them


@dataclass(frozen=True)
class VersionColumn:
    version: PriceBookVersion
    in_force: bool  # the rates of this moment
    upcoming: bool  # from a later day
    deletable: bool


def format_rate(rate: Decimal, *, grouping: bool = True) -> str:
    """A rate with at least two decimals and no trailing zeros beyond: 1.20, 0.085, 1,000.00
    (1000.00 without `grouping`, as a form field takes it)."""
    exponent = min(int(rate.normalize().as_tuple().exponent), -2)
    return f"{rate:{',' if grouping else ''}.{-exponent}f}"


def rate_unit(metric: Metric) -> str:
    if metric.unit == "GB-months":
        return "GB-month"
    return "GPU-hour" if metric.worker_class else "hour"


def price_book_page(team: Team, book: PriceBook, user: User) -> dict[str, Any]:
    """The book's page on the team's pages: who may change it, its versions newest first
    with every rate, and whether the team uses it."""
    now = timezone.now()
    versions = list(reversed(pricing.price_book_versions(book)))
    current = pricing.version_in_force(book, now)
    editable = price_books.can_edit(book, team, user)
    earliest = price_books.earliest_start(user, now)
    columns = [
        VersionColumn(
            version=v,
            in_force=current is not None and v.pk == current.pk,
            upcoming=v.effective_from > now,
            deletable=editable
            and len(versions) > 1
            and (earliest is None or v.effective_from >= earliest),
        )
        for v in versions
    ]
    rows = [
        RateRow(
            metric=m,
            unit=rate_unit(m),
            rates=[format_rate(getattr(v, m.rate_field or "")) for v in versions],
        )
        for m in PRICED
    ]
    default = pricing.default_price_book()
    team_book = team.price_book or default
    return {
        "team": team,
        "book": book,
        "is_own": book.team_id == team.pk,
        "can_edit": editable,
        "can_back_date": earliest is None,
        "today": utc_midnight(now.date()),
        "columns": columns,
        "rate_rows": rows,
        "current": current,
        "in_use": team_book is not None and team_book.pk == book.pk,
        "currency_locked": price_books.currency_locked(book),
        "is_example_prices": pricing.is_example(book),
        "repricing_notes": live_repricing_notes(book, now),
    }


def current_rates(book: PriceBook, now: datetime | None = None) -> dict[str, str]:
    """The rates in force now (else the latest version's), as a form shows them: what a new
    version starts from."""
    versions = pricing.price_book_versions(book)
    version = pricing.version_in_force(book, now or timezone.now()) or (
        versions[-1] if versions else None
    )
    if version is None:
        return {}
    return {
        m.rate_field: format_rate(getattr(version, m.rate_field), grouping=False)
        for m in PRICED
        if m.rate_field
    }


def live_repricing_notes(book: PriceBook | None, now: datetime | None = None) -> list[str]:
    """Notes for pages whose figures are always current (this month and last month: the
    overview, the team page): a version back-dated into that time (only staff can) since it
    began re-priced them."""
    now = now or timezone.now()
    since = utc_midnight(now.date()).replace(day=1) - relativedelta(months=1)
    repriced = pricing.repriced_by(book, since, now, since=since, back_dated_only=True)
    return pricing.repricing_notes(repriced)


def team_price_books(team: Team, book: PriceBook | None) -> dict[str, Any]:
    """The team page's price-book section for its admins: the team's own books, and notes
    where prices of the book it uses (`book`) changed back in time."""
    return {
        "own_price_books": list(price_books.own_books(team)),
        "price_book_notes": live_repricing_notes(book),
    }
