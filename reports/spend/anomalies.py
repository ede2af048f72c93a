"""Anomalies: a closed held day whose usage is far from its usual, and paid storage left idle.

For each connection, priced metric (reports/metrics.py PRICED: training, conversion and
prediction per worker class, augmentation, device rental, image and model storage) and
closed held day (the open day never counts: it can still grow), the usual range comes from
the last OSAI_ANOMALY_WINDOW_DAYS held days before it (N1):

- on USAGE, OSAI's raw units from the held day buckets, never money: a re-pricing changes
  what an anomaly is shown to cost, never whether it was one;
- robust: the median and the MAD (scaled by 1.4826, a standard deviation for normal data)
  of every held day, and of the days the metric ran at all (usage is mostly zero on many
  days: the usual of an active day is what an active day is compared with). The top of the
  range is the higher of `median + SPREAD x MAD` over both; with fewer than
  MIN_ACTIVE_DAYS active days, the largest one. The bottom is `median - SPREAD x MAD`, at
  least 0. A metric that never ran has the range 0-0;
- not weekday-aware: 28 days hold four of each weekday, too few for a median and a MAD of
  their own, and weekends are the quiet days, so pooling them only raises a weekend's top
  (fewer flags, never false ones);
- a day is flagged (N2) when its usage is above the top and the excess, priced by the book
  in force that day (the connection's: the default one), costs at least
  OSAI_ANOMALY_MIN_AMOUNT: pennies never alert; never before OSAI_ANOMALY_MIN_HISTORY_DAYS
  held days.

**Idle storage** (N4): images or models stored at a cost while no training, conversion or
prediction ran for OSAI_ANOMALY_IDLE_DAYS held days in a row; found once per streak, on the
day it reaches that length, when a month of that day's storage costs at least the minimum.

Each day is judged once (N3): `Connection.anomalies_checked_through` is the last closed held
day looked at, and an `Anomaly` is unique on connection, metric and day. The detector runs
after a tracking refresh of the connection ends (reports/tasks.py `tracking_bucket_done`),
once the connection's whole held history is in; its first run judges every held day.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from reports.formatting import money
from reports.metrics import (
    CATEGORIES,
    COMPUTE_COLUMNS,
    METRIC_BY_COLUMN,
    MINUTES_PER_MONTH,
    PRICED,
    STORAGE_COLUMNS,
    Metric,
    all_flags,
)
from reports.models import Anomaly, Bucket, Connection, PriceBook
from reports.periods import utc_midnight
from reports.spend import pricing

ONE_DAY = timedelta(days=1)
SPREAD = 4.0  # MADs above the median that are still usual
MAD_TO_SIGMA = 1.4826
MIN_ACTIVE_DAYS = 5  # days it ran that make an "active day" median of their own
SPARSE_FACTOR = 10.0  # with fewer, the top is ten times the largest of them
DAYS_PER_MONTH = MINUTES_PER_MONTH // (24 * 60)  # 30, as a GB-month counts them
_CATEGORY_LABELS = {category.key: category.label for category in CATEGORIES}


@dataclass(frozen=True)
class Usual:
    """A metric's usual range on one day, in raw units, from the held days before it."""

    low: float
    high: float


def _median_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """The median and the MAD scaled to a standard deviation."""
    median = statistics.median(values)
    return median, MAD_TO_SIGMA * statistics.median(abs(x - median) for x in values)


def usual_range(history: Sequence[float], active: Sequence[float] | None = None) -> Usual:
    """The usual range of a metric from its usage on the last held days before a day
    (`history`) and on the last days it ran at all (`active`, positive; by default those in
    `history`): see the module."""
    median, spread = _median_and_spread(history)
    low, high = max(0.0, median - SPREAD * spread), median + SPREAD * spread
    active = [x for x in history if x > 0] if active is None else active
    if len(active) >= MIN_ACTIVE_DAYS:
        # Work on the days it ran is log-normal (a job of twice the usual length is as likely
        # as one of half): its median and MAD are taken of the logarithms.
        log_median, log_spread = _median_and_spread([math.log(x) for x in active])
        high = max(high, math.exp(log_median + SPREAD * log_spread))
    elif active:
        high = max(high, SPARSE_FACTOR * max(active))
    return Usual(low, high)


def minimum_amount() -> Decimal:
    return Decimal(str(settings.OSAI_ANOMALY_MIN_AMOUNT))


def _rate(book: PriceBook | None, metric: Metric, day: date) -> Decimal:
    """The metric's rate in the book's version in force at the start of `day` (0 without)."""
    version = pricing.version_in_force(book, utc_midnight(day))
    if version is None or metric.rate_field is None:
        return Decimal(0)
    return Decimal(getattr(version, metric.rate_field))


def cost_of(book: PriceBook | None, column: str, day: date, raw: float) -> Decimal:
    """What `raw` units of a metric cost on `day` in the book (display units x rate)."""
    metric = METRIC_BY_COLUMN[column]
    return pricing.to_decimal(raw) / metric.divisor * _rate(book, metric, day)


def monthly_cost_of(book: PriceBook | None, column: str, day: date, raw: float) -> Decimal:
    """A month of a storage metric at `day`'s level (its KB-minutes of one day x 30)."""
    return cost_of(book, column, day, raw) * DAYS_PER_MONTH


# --- Finding them ------------------------------------------------------------------------------


def _held(connection: Connection, today: date) -> QuerySet[Bucket]:
    """The connection's finished closed held buckets (days and months)."""
    return Bucket.objects.filter(
        connection=connection,
        tracked=True,
        is_closed=True,
        state=Bucket.State.DONE,
        period_end__lte=utc_midnight(today),
        **all_flags(),
    )


def _held_after(connection: Connection, through: date, today: date) -> bool:
    """True if a closed held bucket starts after `through`."""
    after = utc_midnight(through + ONE_DAY)
    return _held(connection, today).filter(period_start__gte=after).exists()


def _held_days(connection: Connection, today: date) -> dict[date, dict[str, float]]:
    """Every closed held day of the connection, its priced usage by day: one query."""
    buckets = _held(connection, today)
    days: dict[date, dict[str, float]] = {}
    columns = [m.column for m in PRICED]
    # The rows as the database driver gives them: Django's per-row datetime converters cost
    # more than the rest of a detection (P22); the period's bounds are read here instead (a
    # string in SQLite, a datetime in PostgreSQL, both UTC).
    query = buckets.values_list("period_start", "period_end", *columns)
    sql, params = query.query.sql_with_params()
    with connections[query.db].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    for start, end, *usage in rows:
        start, end = _moment(start), _moment(end)
        if end - start == ONE_DAY:
            days[start.date()] = {c: float(u or 0.0) for c, u in zip(columns, usage, strict=True)}
    return days


def _moment(value: datetime | str) -> datetime:
    """A period bound as the driver gives it (naive UTC text in SQLite), as a datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def history_in_flight(connection: Connection, today: date) -> bool:
    """True while tracking still fetches one of the connection's closed held periods."""
    return (
        Bucket.objects.active()
        .filter(connection=connection, tracked=True, period_end__lte=utc_midnight(today))
        .exists()
    )


class _Book:
    """A price book read the first time a cost is needed: most days need none (P22)."""

    def __init__(self, book: PriceBook | Callable[[], PriceBook | None] | None) -> None:
        self._source = book

    def get(self) -> PriceBook | None:
        if callable(self._source):
            self._source = self._source()
        return self._source


def find(
    days: Mapping[date, Mapping[str, float]],
    judge: Iterable[date],
    book: PriceBook | Callable[[], PriceBook | None] | None,
) -> list[Anomaly]:
    """The anomalies of the days in `judge` (unsaved, without a connection), from the held
    days' usage in `days` (every priced column of each). Pure but for the book's versions.
    `book` may be a function that gives it: it is called only if a cost is needed."""
    the_book = _Book(book)
    held = sorted(days)
    window = settings.OSAI_ANOMALY_WINDOW_DAYS
    min_history = settings.OSAI_ANOMALY_MIN_HISTORY_DAYS
    idle_days = settings.OSAI_ANOMALY_IDLE_DAYS
    least = minimum_amount()
    position = {day: i for i, day in enumerate(held)}
    # Per metric, the positions (in `held`) and usage of the days it ran.
    ran: dict[str, tuple[list[int], list[float]]] = {}
    for metric in PRICED:
        where = [i for i, d in enumerate(held) if days[d][metric.column] > 0]
        ran[metric.column] = (where, [days[held[i]][metric.column] for i in where])
    found: list[Anomaly] = []
    for day in sorted(judge):
        i = position.get(day)
        if i is None:
            continue
        usage = days[day]
        before = held[max(0, i - window) : i]
        if len(before) >= min_history:
            for metric in PRICED:
                actual = usage[metric.column]
                where, values = ran[metric.column]
                cut = bisect.bisect_left(where, i)
                usual = usual_range(
                    [days[d][metric.column] for d in before],
                    values[max(0, cut - window) : cut],
                )
                if actual <= usual.high:
                    continue
                if cost_of(the_book.get(), metric.column, day, actual - usual.high) >= least:
                    found.append(
                        Anomaly(
                            kind=Anomaly.Kind.SPIKE,
                            column=metric.column,
                            day=day,
                            actual=actual,
                            expected_low=usual.low,
                            expected_high=usual.high,
                        )
                    )
        found.extend(_idle_storage(days, day, idle_days, the_book, least))
    return found


def _idle(usage: Mapping[str, float]) -> bool:
    return not any(usage[column] for column in COMPUTE_COLUMNS)


def _idle_storage(
    days: Mapping[date, Mapping[str, float]],
    day: date,
    idle_days: int,
    book: _Book,
    least: Decimal,
) -> list[Anomaly]:
    """Paid storage on the day an idle streak of held days reaches `idle_days` (once a streak:
    the day before it, the streak was shorter; a day not held breaks it)."""
    streak = [day - timedelta(days=n) for n in range(idle_days)]
    if not all(d in days and _idle(days[d]) for d in streak):
        return []
    before = day - timedelta(days=idle_days)
    if before in days and _idle(days[before]):
        return []  # reached earlier
    return [
        Anomaly(
            kind=Anomaly.Kind.IDLE_STORAGE,
            column=column,
            day=day,
            actual=days[day][column],
            expected_low=0.0,
            expected_high=0.0,
        )
        for column in STORAGE_COLUMNS
        if days[day][column] > 0
        and monthly_cost_of(book.get(), column, day, days[day][column]) >= least
    ]


@dataclass(frozen=True)
class Detection:
    judged: int  # closed held days looked at
    new: list[Anomaly]
    waiting: bool = False  # the history is still being fetched: nothing was judged


def detect(
    connection: Connection,
    *,
    now: datetime | None = None,
    book: PriceBook | None = None,
    then: Callable[[], object] | None = None,
) -> Detection:
    """Judge the connection's closed held days not judged yet, record what is anomalous.

    Idempotent: a day is judged once (the connection's `anomalies_checked_through`) and an
    anomaly is unique, so a repeat or a concurrent run records nothing new. `book`: the one
    that prices the minimum amount (the default book without). `then`: run inside the
    transaction that records new anomalies, when there are any (tasks.py queues their alerts
    there: the anomalies and their messages commit together, or neither does)."""
    today = (now or timezone.now()).astimezone(UTC).date()
    through = connection.anomalies_checked_through
    if through is not None and not _held_after(connection, through, today):
        return Detection(0, [])  # most refreshes: no new closed day (one query)
    if history_in_flight(connection, today):
        return Detection(0, [], waiting=True)
    days = _held_days(connection, today)
    judge = [day for day in days if through is None or day > through]
    if not judge:
        return Detection(0, [])
    found = find(days, judge, book if book is not None else pricing.default_price_book)
    last = max(judge)
    if not found:  # most days: only the mark moves
        Connection.objects.filter(pk=connection.pk).update(anomalies_checked_through=last)
        connection.anomalies_checked_through = last
        return Detection(len(judge), [])
    with transaction.atomic():
        for anomaly in found:
            anomaly.connection = connection
        existing = set(
            Anomaly.objects.filter(
                connection=connection, day__in=[a.day for a in found]
            ).values_list("column", "day")
        )
        new = [a for a in found if (a.column, a.day) not in existing]
        Anomaly.objects.bulk_create(new, ignore_conflicts=True)
        Connection.objects.filter(pk=connection.pk).update(anomalies_checked_through=last)
        connection.anomalies_checked_through = last
        if new and then is not None:
            then()
    return Detection(len(judge), new)


# --- Showing them ------------------------------------------------------------------------------


def metric_phrase(column: str) -> str:
    """ "training on 16 GB workers", "device rental", "model storage"."""
    metric = METRIC_BY_COLUMN[column]
    what = _CATEGORY_LABELS[metric.category].lower()
    return f"{what} on {metric.worker_class} workers" if metric.worker_class else what


def cause(anomaly: Anomaly, book: PriceBook | None, connection_label: str = "") -> str:
    """What happened, priced now in `book` (at the rates in force on its day): "training on
    16 GB workers on Dana's lab: EUR 84.10 against a usual EUR 3.00 to 12.00" (an en dash
    between the ends); "..., where it usually costs nothing" when the usual top prices at
    0.00 (a metric that had not run), not a range of "EUR 0.00-0.00"."""
    label = connection_label or anomaly.connection.label
    currency = book.currency if book is not None else ""
    what = f"{metric_phrase(anomaly.column)} on {label}"
    if anomaly.kind == Anomaly.Kind.IDLE_STORAGE:
        monthly = monthly_cost_of(book, anomaly.column, anomaly.day, anomaly.actual)
        days = settings.OSAI_ANOMALY_IDLE_DAYS
        return (
            f"{what}: {money(monthly, currency)} a month while no training, conversion or "
            f"prediction ran for {days} days"
        )
    actual = cost_of(book, anomaly.column, anomaly.day, anomaly.actual)
    low = cost_of(book, anomaly.column, anomaly.day, anomaly.expected_low)
    high = cost_of(book, anomaly.column, anomaly.day, anomaly.expected_high)
    if money(high, "") == money(Decimal(0), ""):
        return f"{what}: {money(actual, currency)} where it usually costs nothing"
    return (
        f"{what}: {money(actual, currency)} against a usual "
        f"{money(low, currency)}\u2013{money(high, '')}"
    )


def listed(connections: Iterable[Connection], book: PriceBook | None) -> list[dict[str, object]]:
    """The anomalies of these connections, newest day first, as the command, the Anomalies
    page, its CSV and the API list them: what was recorded, and the cause priced now in `book`."""
    return rows_of(Anomaly.objects.filter(connection__in=list(connections)), book)


ORDER = ("-day", "connection__label", "column", "pk")  # newest day first, then by connection


def rows_of(anomalies: QuerySet[Anomaly], book: PriceBook | None) -> list[dict[str, object]]:
    """These anomalies as `listed` writes them, newest day first (one query, and the book's
    versions once)."""
    rows = anomalies.select_related("connection").order_by(*ORDER)
    return [row_of(anomaly, book) for anomaly in rows]


def row_of(anomaly: Anomaly, book: PriceBook | None) -> dict[str, object]:
    """One anomaly as `listed` writes it: never the connection's token or account name."""
    currency = book.currency if book is not None else ""
    return {
        "id": anomaly.pk,
        "connection": anomaly.connection.label,
        "connection_id": anomaly.connection_id,
        "kind": anomaly.kind,
        "metric": anomaly.column,
        "label": METRIC_BY_COLUMN[anomaly.column].label,
        "day": anomaly.day.isoformat(),
        "actual": anomaly.actual,
        "expected_low": anomaly.expected_low,
        "expected_high": anomaly.expected_high,
        "currency": currency,
        "feedback": anomaly.feedback,
        "alerting": anomaly.alerting,
        "cause": cause(anomaly, book),
        "created_at": anomaly.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
