"""This month's spend: month to date, the same days of last month, the month-end forecast,
and where each budget stands. Read from tracked daily buckets (reports/spend/tracking.py): nothing
here asks OSAI, so the overview never waits on it.

The forecast is ours, never OSAI's: month-end spend from the month's closed days, a run rate
weighted to recent days (a 7-day half-life), with an 80 % band from the spread of daily
spend. It is shown from the 3rd day of a month, when two closed days are known.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import cache, lru_cache
from typing import cast

from dateutil.relativedelta import relativedelta
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from reports.formatting import to_cents
from reports.metrics import all_flags
from reports.models import Bucket, Budget, Connection, LedgerEntry, PriceBook, Team
from reports.periods import day_number, day_of, describe, utc_midnight
from reports.spend import ledger, pricing

ZERO = Decimal(0)
CENT = Decimal("0.01")
HALF_LIFE_DAYS = 7
BAND_Z = Decimal("1.2816")  # an 80 % band of a normal spread
FORECAST_FROM_DAY = 3


# --- The days of this month -------------------------------------------------------------------


@dataclass(frozen=True)
class DaySpend:
    day: date
    cost: Decimal | None  # None: not fetched yet
    preliminary: bool  # today: it can still grow


@dataclass(frozen=True)
class Forecast:
    value: Decimal  # month-end spend
    low: Decimal
    high: Decimal
    daily_rate: Decimal  # the weighted run rate it extends
    closed_days: int  # how many closed days it rests on


@dataclass
class MonthSpend:
    """A set of connections' spend this month, in one price book's currency."""

    month_start: datetime
    now: datetime
    currency: str
    days: list[DaySpend]
    month_to_date: Decimal
    missing_days: int  # closed days whose buckets are not fetched yet
    previous_same_days: Decimal | None
    previous_label: str
    forecast: Forecast | None
    data_as_of: datetime | None
    by_connection: dict[int, Decimal] = field(default_factory=dict)

    @property
    def days_in_month(self) -> int:
        return calendar.monthrange(self.month_start.year, self.month_start.month)[1]


@dataclass
class SpendData:
    """What the month's figures are made of, for many connections at once: per price book,
    each connection's cost of each day of this month (the closed day, or today's latest
    open-day bucket), and of the same days of last month, read as sums of the spend ledger
    (reports/spend/ledger.py). Each book is read once, with a fixed number of queries however
    many connections, scopes and budgets use it; nothing is priced here."""

    now: datetime
    month_start: datetime
    today: datetime
    previous_end: datetime
    connection_ids: list[int]
    as_of: dict[int, datetime]
    # Said the same way for every scope and budget on a page: worked out once.
    previous_label: str = ""
    days_in_month: int = 31
    _books: dict[int | None, _BookSpend] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _of(self, price_book: PriceBook | None) -> _BookSpend:
        key = price_book.pk if price_book is not None else None
        if key not in self._books:
            self._books[key] = _read_book(self, price_book)
        return self._books[key]

    def day_costs(self, connection_id: int, price_book: PriceBook | None) -> dict[date, Decimal]:
        """The cost of each known day of this month of one connection, in one book."""
        return self._of(price_book).days.get(connection_id, {})

    def previous_cost(
        self, connection_ids: Sequence[int], price_book: PriceBook | None
    ) -> Decimal | None:
        """The same days of last month for these connections together, or None unless each
        one's are known."""
        previous = self._of(price_book).previous
        costs = [previous.get(c) for c in set(connection_ids)]
        if not costs or any(cost is None for cost in costs):
            return None
        return sum((cost for cost in costs if cost is not None), ZERO)


@dataclass
class _BookSpend:
    days: dict[int, dict[date, Decimal]]
    previous: dict[int, Decimal | None]


def _read_book(data: SpendData, price_book: PriceBook | None) -> _BookSpend:
    """One book's day costs of this month, and last month's same days per connection, from
    the ledger: two queries once its rows are written (a held day found without rows is
    written first: ledger_fill). Without a book, which days are known, at no cost."""
    ids = data.connection_ids
    if not ids:
        return _BookSpend({}, {})
    last_month = data.month_start - relativedelta(months=1)
    days = _day_costs(data, price_book, data.month_start)
    earlier = _earlier_costs(data, price_book, last_month)
    closed_days = (data.today - last_month).days
    short = [
        c for c in ids if earlier[c][0] + sum(day < data.today for day in days[c]) < closed_days
    ]
    if price_book is not None and short:
        written = ledger.ledger_fill(short, [price_book], since=last_month, now=data.now)
        if written:
            days = _day_costs(data, price_book, data.month_start)
            earlier = _earlier_costs(data, price_book, last_month)
    cut_day = utc_midnight(data.previous_end.date())
    fraction = Decimal((data.previous_end - cut_day) / timedelta(days=1))
    whole_days = (cut_day - last_month).days
    previous: dict[int, Decimal | None] = {}
    for connection_id in ids:
        known, whole, cut = earlier[connection_id][1:]
        if known < whole_days or (fraction and cut is None):
            previous[connection_id] = None
            continue
        # The day cut at this moment counts pro rata (usage assumed even within the day).
        part = (cut * fraction).quantize(pricing.COST_QUANTUM) if cut and fraction else ZERO
        previous[connection_id] = whole + part
    by_date = {
        c: {start.date(): cost for start, cost in costs.items()} for c, costs in days.items()
    }
    return _BookSpend(by_date, previous)


def _earlier_costs(
    data: SpendData, price_book: PriceBook | None, last_month: datetime
) -> dict[int, tuple[int, int, Decimal, Decimal | None]]:
    """Per connection, of last month's closed held days: how many there are; how many and what
    they cost before the day cut at this moment; and that day's cost (None: not held). Summed
    in SQL: one row per connection."""
    ids = data.connection_ids
    cut_day = utc_midnight(data.previous_end.date())
    result: dict[int, tuple[int, int, Decimal, Decimal | None]] = {
        c: (0, 0, ZERO, None) for c in ids
    }
    if price_book is None:  # what is held costs 0: which days are held is what counts
        for connection_id, all_days, days, cut_days in (
            Bucket.objects.filter(
                known_usage_days(),
                is_closed=True,
                connection_id__in=ids,
                period_start__gte=last_month,
                period_start__lt=data.month_start,
            )
            .values_list("connection_id")
            .annotate(
                all_days=Count("period_start", distinct=True),
                days=Count("period_start", distinct=True, filter=Q(period_start__lt=cut_day)),
                cut_days=Count("pk", filter=Q(period_start=cut_day)),
            )
            .order_by()
        ):
            result[connection_id] = (all_days, days, ZERO, ZERO if cut_days else None)
        return result
    cut = day_number(cut_day)
    before = Q(day__lt=cut)
    for connection_id, all_days, days, whole, cut_units in (
        LedgerEntry.objects.filter(
            price_book=price_book,
            span=LedgerEntry.Span.DAY,
            preliminary=False,
            connection_id__in=ids,
            day__gte=day_number(last_month),
            day__lt=day_number(data.month_start),
        )
        .values_list("connection_id")
        .annotate(
            all_days=Count("day", distinct=True),
            days=Count("day", distinct=True, filter=before),
            whole=Sum("cost_total", filter=before),
            cut_units=Sum("cost_total", filter=Q(day=cut)),
        )
        .order_by()
    ):
        cut_cost = None if cut_units is None else ledger.from_units(cut_units)
        result[connection_id] = (all_days, days, ledger.from_units(whole), cut_cost)
    return result


def _day_costs(
    data: SpendData, price_book: PriceBook | None, since: datetime
) -> dict[int, dict[datetime, Decimal]]:
    """Per connection, the cost of each held day from `since` to today (today: its latest
    open-day bucket; an earlier day: only its closed bucket). One query, of plain integers."""
    ids = data.connection_ids
    first, today = day_number(since), day_number(data.today)
    rows: Iterable[tuple[int, int, int]]
    if price_book is None:
        rows = (
            (c, day_number(start), 0)
            for c, start in Bucket.objects.filter(
                known_usage_days(),
                Q(is_closed=True) | Q(period_start=data.today),
                connection_id__in=ids,
                period_start__gte=since,
                period_start__lte=data.today,
            )
            .values_list("connection_id", "period_start")
            .distinct()
        )
    else:
        rows = (
            LedgerEntry.objects.filter(
                Q(preliminary=False) | Q(day=today),
                price_book=price_book,
                span=LedgerEntry.Span.DAY,
                connection_id__in=ids,
                day__gte=first,
                day__lte=today,
            )
            .values_list("connection_id", "day")
            .annotate(units=Sum("cost_total"))
            .order_by()
        )
    by_day: dict[int, dict[datetime, Decimal]] = {c: {} for c in ids}
    for connection_id, number, units in rows:
        by_day[connection_id][day_of(number)] = ledger.from_units(units)
    return by_day


def known_usage_days() -> Q:
    """Held day buckets: finished, tracked, every flag on (the open day included)."""
    return Q(state=Bucket.State.DONE, tracked=True, **all_flags())


def load_spend(connection_ids: Iterable[int], now: datetime | None = None) -> SpendData:
    """The month's spend of these connections, read from the ledger per book as it is asked
    for; "data as of" (when OSAI made the newest of this month's buckets) in one query."""
    now = now or timezone.now()
    today = utc_midnight(now.date())
    month_start = today.replace(day=1)
    last_month = month_start - relativedelta(months=1)
    previous_end = min(last_month + (now - month_start), month_start)
    ids = sorted(set(connection_ids))
    as_of: dict[int, datetime] = {}
    if ids:
        made = Coalesce("osai_created_at", "finished_at")
        as_of = dict(
            Bucket.objects.filter(
                known_usage_days(),
                connection_id__in=ids,
                period_start__gte=month_start,
                period_start__lte=today,
            )
            .values_list("connection_id")
            .annotate(latest=Max(made))
            .order_by()
        )
    return SpendData(
        now,
        month_start,
        today,
        previous_end,
        ids,
        as_of,
        previous_label=describe(last_month, previous_end),
        days_in_month=calendar.monthrange(today.year, today.month)[1],
    )


def month_spend_of(
    data: SpendData, connection_ids: Iterable[int], price_book: PriceBook | None
) -> MonthSpend:
    """This month so far for some of the loaded connections, with comparison and forecast."""
    ids = sorted(set(connection_ids))
    days: list[DaySpend] = []
    missing = 0
    by_connection = dict.fromkeys(ids, ZERO)
    costs_of = [data.day_costs(c, price_book) for c in ids]
    today = data.today.date()
    for offset in range(data.today.day):
        day = data.month_start.date() + timedelta(days=offset)
        costs = [of.get(day) for of in costs_of]
        preliminary = day == today
        if ids and None not in costs:
            known = cast(list[Decimal], costs)
            for connection_id, cost in zip(ids, known, strict=True):
                by_connection[connection_id] += cost
            days.append(
                DaySpend(day, known[0] if len(known) == 1 else sum(known, ZERO), preliminary)
            )
        else:
            days.append(DaySpend(day, None, preliminary))
            missing += not preliminary
    month_to_date = sum((d.cost for d in days if d.cost is not None), ZERO)
    previous = data.previous_cost(ids, price_book)
    closed = [d.cost for d in days if not d.preliminary]
    forecast = None
    if ids and None not in closed:
        forecast = month_forecast(
            cast(list[Decimal], closed),
            days_in_month=data.days_in_month,
            spent_so_far=month_to_date,
        )
    stamps = [data.as_of[c] for c in ids if c in data.as_of]
    return MonthSpend(
        month_start=data.month_start,
        now=data.now,
        currency=price_book.currency if price_book else "",
        days=days,
        month_to_date=month_to_date,
        missing_days=missing,
        previous_same_days=previous,
        previous_label=data.previous_label,
        forecast=forecast,
        data_as_of=max(stamps, default=None),
        by_connection=by_connection,
    )


def month_spend(
    connections: Iterable[Connection], price_book: PriceBook | None, now: datetime | None = None
) -> MonthSpend:
    """This month so far for these connections, with its comparison and forecast."""
    ids = [c.pk for c in connections]
    return month_spend_of(load_spend(ids, now), ids, price_book)


@cache
def _weights(k: int) -> tuple[Decimal, ...]:
    """The closed days' weights, oldest first (exact Decimals of floats: made once per k,
    as every budget on a page asks for the same ones)."""
    return tuple(Decimal(0.5 ** ((k - 1 - i) / HALF_LIFE_DAYS)) for i in range(k))


def month_forecast(
    closed_days: Sequence[Decimal], *, days_in_month: int, spent_so_far: Decimal
) -> Forecast | None:
    """Month-end spend (see _forecast); remembered by its inputs, since every budget on a
    page and every view of it asks for the same ones."""
    return _forecast(tuple(closed_days), days_in_month, spent_so_far)


@lru_cache(maxsize=4096)
def _forecast(
    closed_days: tuple[Decimal, ...], days_in_month: int, spent_so_far: Decimal
) -> Forecast | None:
    """Month-end spend: the closed days, plus a run rate weighted to recent days for the rest
    of the month (today included). The band is ±1.28 standard deviations of what those days
    may add: the spread of daily spend over the remaining days, and the uncertainty of the
    rate itself. None before the 3rd day of a month."""
    k = len(closed_days)
    if k < FORECAST_FROM_DAY - 1:
        return None
    with localcontext() as ctx:
        ctx.prec = 40
        weights = _weights(k)
        total_weight = sum(weights, ZERO)
        rate = sum((w * c for w, c in zip(weights, closed_days, strict=True)), ZERO) / total_weight
        spread = (
            sum((w * (c - rate) ** 2 for w, c in zip(weights, closed_days, strict=True)), ZERO)
            / total_weight
            * Decimal(k)
            / Decimal(k - 1)
        )
        remaining = Decimal(days_in_month - k)
        value = sum(closed_days, ZERO) + rate * remaining
        deviation = spread.sqrt() * (remaining + remaining * remaining / Decimal(k)).sqrt()
        low = max(value - BAND_Z * deviation, spent_so_far)
        high = value + BAND_Z * deviation
    return Forecast(
        value=to_cents(max(value, spent_so_far)),
        low=to_cents(low),
        high=to_cents(max(high, spent_so_far)),
        daily_rate=to_cents(rate),
        closed_days=k,
    )


# --- Budgets ------------------------------------------------------------------------------------


def budget_connection_ids(budgets: Sequence[Budget]) -> dict[int, list[int]]:
    """Per budget, the connections whose spend counts against it (two queries for any
    number of budgets): a connection; a person's connections; the connections shared with a
    team by its current members."""
    result: dict[int, list[int]] = {}
    owners = {b.owner_id for b in budgets if b.scope == Budget.Scope.PERSON}
    by_owner: dict[int, list[int]] = {}
    # Without person (or team) budgets the query is not even built: building it cost as
    # much as running it, on every overview.
    for pk, owner_id in (
        Connection.objects.filter(owner_id__in=owners).values_list("pk", "owner_id")
        if owners
        else ()
    ):
        by_owner.setdefault(owner_id, []).append(pk)
    team_ids = {b.team_id for b in budgets if b.scope == Budget.Scope.TEAM and b.team_id}
    by_team: dict[int, list[int]] = {}
    for pk, team_id in (
        Connection.objects.counting_for_teams(team_ids).values_list("pk", "shared_with_teams")
        if team_ids
        else ()
    ):
        by_team.setdefault(team_id, []).append(pk)
    for budget in budgets:
        if budget.scope == Budget.Scope.CONNECTION and budget.connection_id:
            result[budget.pk] = [budget.connection_id]
        elif budget.scope == Budget.Scope.TEAM and budget.team_id:
            result[budget.pk] = by_team.get(budget.team_id, [])
        else:
            result[budget.pk] = by_owner.get(budget.owner_id, [])
    return result


def price_book_of(team: Team | None) -> PriceBook | None:
    """A team's price book, else the default one: what a budget's amount is in."""
    if team is not None and team.price_book_id:
        return team.price_book
    return pricing.default_price_book()


def budget_name(budget: Budget) -> str:
    if budget.scope == Budget.Scope.CONNECTION and budget.connection is not None:
        return f"Connection “{budget.connection.label}”"
    if budget.scope == Budget.Scope.TEAM and budget.team is not None:
        return f"Team {budget.team.name}"
    return f"All of {budget.owner.get_username()}'s connections"


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    name: str
    currency: str
    amount: Decimal
    spent: Decimal
    percent: Decimal  # of the amount, spent so far
    remaining: Decimal  # never below 0
    remaining_gpu_hours_16gb: Decimal | None  # of training at the price book's rates
    remaining_gpu_hours_8gb: Decimal | None
    runs_out_on: date | None  # at the current rate; None if not this month
    forecast: Forecast | None
    forecast_percent: Decimal | None
    crossed: list[int]  # thresholds reached by spend so far

    @property
    def over(self) -> bool:
        return self.spent >= self.amount

    @property
    def bar_percent(self) -> int:
        """For drawing the bar: 0 to 100."""
        return int(min(max(self.percent, ZERO), Decimal(100)))


def _hours_at(rate: Decimal | None, money: Decimal) -> Decimal | None:
    if not rate:
        return None
    return (money / rate).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def budget_status(budget: Budget, *, now: datetime | None = None) -> BudgetStatus:
    return budget_statuses([budget], now=now)[0]


def budget_statuses(
    budgets: Sequence[Budget],
    *,
    now: datetime | None = None,
    data: SpendData | None = None,
    books: BookCache | None = None,
    covered: dict[int, list[int]] | None = None,
) -> list[BudgetStatus]:
    """Where each budget stands, from one load of every connection they cover. A page that
    also shows `data` passes its `books` (and the budgets' `covered` connections, if it has
    them), so that the books are read once and each connection is priced once."""
    ids = budget_connection_ids(budgets) if covered is None else covered
    if data is None:
        data = load_spend({c for cs in ids.values() for c in cs}, now)
    books = books or BookCache()
    statuses = []
    for budget in budgets:
        price_book = books.of(budget.team if budget.scope == Budget.Scope.TEAM else None)
        spend = month_spend_of(data, ids[budget.pk], price_book)
        statuses.append(status_from(budget, spend, price_book))
    return statuses


class BookCache:
    """Price books by id, each loaded (with its versions) once however many budgets use it."""

    def __init__(self) -> None:
        self._books: dict[int | None, PriceBook | None] = {}

    def of(self, team: Team | None) -> PriceBook | None:
        key = team.price_book_id if team is not None and team.price_book_id else None
        if key not in self._books:
            self._books[key] = price_book_of(team)
        return self._books[key]


def status_from(budget: Budget, spend: MonthSpend, price_book: PriceBook | None) -> BudgetStatus:
    """Where a budget stands, given the month's spend of its connections."""
    amount = budget.amount
    spent = spend.month_to_date
    percent = (spent / amount * 100).quantize(CENT, rounding=ROUND_HALF_UP)
    remaining = max(amount - spent, ZERO)
    version = pricing.version_in_force(price_book, spend.now)
    rate_16 = getattr(version, "training_16gb_per_hour", None) if version else None
    rate_8 = getattr(version, "training_8gb_per_hour", None) if version else None
    daily = spend.forecast.daily_rate if spend.forecast else None
    runs_out = None
    if daily and remaining > 0:
        # Today's spend so far is in `spent`; the rest of today and the next days at the rate.
        days_left = float(remaining / daily)
        moment = spend.now + timedelta(days=days_left)
        month_end = spend.month_start + relativedelta(months=1)
        runs_out = moment.date() if moment < month_end else None
    forecast_percent = None
    if spend.forecast is not None:
        forecast_percent = (spend.forecast.value / amount * 100).quantize(
            CENT, rounding=ROUND_HALF_UP
        )
    thresholds = sorted(int(t) for t in budget.thresholds)
    return BudgetStatus(
        budget=budget,
        name=budget_name(budget),
        currency=spend.currency,
        amount=amount,
        spent=to_cents(spent),
        percent=percent,
        remaining=to_cents(remaining),
        remaining_gpu_hours_16gb=_hours_at(rate_16, remaining),
        remaining_gpu_hours_8gb=_hours_at(rate_8, remaining),
        runs_out_on=runs_out,
        forecast=spend.forecast,
        forecast_percent=forecast_percent,
        crossed=[t for t in thresholds if percent >= t],
    )
