"""Price books and cost: usage in OSAI's raw units times the rates in force, as exact Decimals.

The rules, in one place:

- Money is `Decimal`, never float. A raw OSAI value (stored as a double) enters as
  `Decimal(repr(x))`: the shortest decimal that round-trips the double, which is what OSAI
  sent in its JSON. No float arithmetic touches money.
- A period is priced by the price-book version in force during it. A row that spans a
  version change is split pro rata by time: usage is assumed uniform within the row. A
  row summed from buckets of shorter periods (held days under a week) is priced per bucket
  period, so the usage falls where it was and the page agrees with the CSV's bucket rows.
  Time before a book's first version has no prices: it costs 0 and the row is flagged
  (`Costs.unpriced`), so the page can say so (`pricing_notice`).
- Each cost is kept at `COST_QUANTUM` (10^-10 of the currency unit, ROUND_HALF_EVEN). That is
  far below a cent and fixed, so adding costs is exact and does not depend on the order of
  the rows. Only display (reports/formatting.py) rounds to cents,
  once, on the final figure, with ROUND_HALF_UP (commercial rounding).

Conversions follow reports/metrics.py: hours = seconds / 3600; GB-months = KB-minutes /
(1,048,576 KB per GB x 43,200 minutes per 30-day month).
"""

from __future__ import annotations

import itertools
import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from django.db.models import prefetch_related_objects

from reports.metrics import (
    KB_MIN_PER_GB_MONTH,
    PREDICTION_COLUMNS,
    PRICED,
    PRICED_COLUMNS,
    SECONDS_PER_HOUR,
    STAGES,
    STORAGE_COLUMNS,
    TRAINING_COLUMNS,
)
from reports.models import PriceBook, PriceBookVersion, Report
from reports.periods import utc_midnight
from reports.spend.usage import UsageRow

# Usage column (raw OSAI unit) -> the PriceBookVersion rate that prices it, and how many raw
# units make one rate unit (seconds per hour, KB-minutes per GB-month).
RATES: dict[str, str] = {m.column: m.rate_field for m in PRICED if m.rate_field}
_RAW_PER_RATE_UNIT: dict[str, int] = {m.column: m.divisor for m in PRICED}

COST_QUANTUM = Decimal("1E-10")  # internal precision of every cost (see the module docstring)
CENT = Decimal("0.01")
# Enough digits that products of 1.5e18 KB-minutes and 6-decimal rates stay exact before the
# single quantize of each cost.
_PRECISION = 60

ZERO = Decimal(0)


class Costs(dict[str, Decimal]):
    """Cost per priced column, plus "total", in the price book's currency.

    `unpriced` is True when some of the period had no prices in force (costed at 0);
    `versions` are the price-book versions that priced it, oldest first.
    """

    def __init__(self, values: Mapping[str, Decimal] | None = None) -> None:
        super().__init__(values or {})
        self.unpriced: bool = False
        self.versions: list[PriceBookVersion] = []


# --- Price books ------------------------------------------------------------------------------


def default_price_book() -> PriceBook | None:
    """The book reports use when none was chosen (the shipped example until an admin changes it)."""
    return PriceBook.objects.filter(is_default=True).order_by("pk").first()


def price_book_for(report: Report) -> PriceBook | None:
    """The book a report is priced with: a team report follows its team's book; otherwise the
    report's own book; else the default one; else None (costs are then 0)."""
    if report.team_id is not None and report.team is not None and report.team.price_book_id:
        return report.team.price_book
    if report.price_book_id is not None:
        return report.price_book
    return default_price_book()


def is_example(price_book: PriceBook | None) -> bool:
    """True for a book that pages must label as an example, not OSAI's prices."""
    return bool(price_book is not None and price_book.is_example)


def price_book_versions(price_book: PriceBook) -> list[PriceBookVersion]:
    """The book's versions, oldest first, read once per PriceBook instance.

    They are kept in Django's prefetch cache, so `refresh_from_db()` or a fresh instance sees
    new versions, and a caller's `prefetch_related("versions")` is reused.
    """
    prefetch_related_objects([price_book], "versions")
    return sorted(price_book.versions.all(), key=lambda v: v.effective_from)


def version_in_force(price_book: PriceBook | None, at: datetime) -> PriceBookVersion | None:
    """The version whose rates apply at the instant `at`, or None before the first version."""
    if price_book is None:
        return None
    current = None
    for version in price_book_versions(price_book):
        if version.effective_from > at:
            break
        current = version
    return current


def versions_in(
    price_book: PriceBook | None, start: datetime, end: datetime
) -> list[PriceBookVersion]:
    """The book's versions in force during part of [start, end), oldest first."""
    if price_book is None:
        return []
    versions = price_book_versions(price_book)
    return [
        version
        for version, following in zip(versions, [*versions[1:], None], strict=True)
        if version.effective_from < end and (following is None or following.effective_from > start)
    ]


def repriced_by(
    price_book: PriceBook | None,
    start: datetime,
    end: datetime,
    *,
    since: datetime,
    back_dated_only: bool = False,
) -> list[PriceBookVersion]:
    """Versions saved after `since` that are in force during part of [start, end): figures of
    that period shown at `since` (a report when it was requested) have been re-priced by
    them, and the page says so. `back_dated_only`: only versions in force from before the UTC
    day they were saved (staff back-dating), for pages whose figures are always current.
    Versions without a save time (older than the field) are never counted."""
    repriced = []
    for version in versions_in(price_book, start, end):
        saved = version.created_at
        if saved is None or saved <= since:
            continue
        if back_dated_only and version.effective_from >= utc_midnight(saved.astimezone(UTC).date()):
            continue
        repriced.append(version)
    return repriced


def repricing_notes(versions: Iterable[PriceBookVersion]) -> list[str]:
    """One sentence per re-pricing version, for the page."""
    return [
        f"Prices changed on {v.created_at:%Y-%m-%d} from {v.effective_from:%Y-%m-%d} (UTC): "
        "these figures were re-priced with the new rates."
        for v in versions
        if v.created_at is not None
    ]


# --- Arithmetic -------------------------------------------------------------------------------


def to_decimal(value: float | int | Decimal | None) -> Decimal:
    """A raw OSAI number as an exact Decimal. None and non-finite values (never usage) are 0."""
    if value is None:
        return ZERO
    if isinstance(value, Decimal):
        return value if value.is_finite() else ZERO
    if isinstance(value, float) and not math.isfinite(value):
        return ZERO
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _segments(
    price_book: PriceBook | None, start: datetime, end: datetime
) -> list[tuple[PriceBookVersion | None, int]]:
    """Split [start, end) by the versions in force: (version or None, overlap in microseconds)."""
    versions = None if price_book is None else price_book_versions(price_book)
    return _segments_of(versions, start, end)


def _segments_of(
    versions: list[PriceBookVersion] | None, start: datetime, end: datetime
) -> list[tuple[PriceBookVersion | None, int]]:
    """_segments for a book's versions already read (None: no book), so that pricing many
    rows reads them once instead of once a row."""
    if versions is None:
        return [(None, max(_micros(end - start), 1))]
    if end <= start:  # a degenerate period is priced at its start instant
        in_force = [v for v in versions if v.effective_from <= start]
        return [(in_force[-1] if in_force else None, 1)]
    segments: list[tuple[PriceBookVersion | None, int]] = []
    first_from = versions[0].effective_from if versions else end
    if start < first_from:
        segments.append((None, _micros(min(first_from, end) - start)))
    for i, version in enumerate(versions):
        v_start = version.effective_from
        v_end = versions[i + 1].effective_from if i + 1 < len(versions) else None
        lo = max(start, v_start)
        hi = end if v_end is None else min(end, v_end)
        if hi > lo:
            segments.append((version, _micros(hi - lo)))
    return segments


def _costs_over_segments(
    totals: Mapping[str, Any],
    segments: list[tuple[PriceBookVersion | None, int]],
    duration: int | None = None,
) -> Costs:
    """The cost of `totals` over these segments of its period (`duration`: the whole period's
    length, when the segments are only part of it)."""
    if duration is None:
        duration = sum(overlap for _, overlap in segments)
    costs = Costs()
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        exact = dict.fromkeys(PRICED_COLUMNS, ZERO)
        for version, overlap in segments:
            if version is None:
                costs.unpriced = True
                continue
            costs.versions.append(version)
            for column, rate_field in RATES.items():
                raw = to_decimal(totals.get(column))
                rate: Decimal = getattr(version, rate_field)
                # One division per term: raw x rate x (overlap / duration) / raw-per-rate-unit.
                exact[column] += (raw * rate * overlap) / (duration * _RAW_PER_RATE_UNIT[column])
        for column, value in exact.items():
            costs[column] = value.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)
        costs["total"] = sum((costs[c] for c in PRICED_COLUMNS), ZERO)
    return costs


def usage_cost(totals: Mapping[str, Any], version: PriceBookVersion | None) -> Costs:
    """The cost of raw usage totals at one version's rates (pure; None prices nothing)."""
    return _costs_over_segments(totals, [(version, 1)])


def row_costs(row: UsageRow, price_book: PriceBook | None) -> Costs:
    """The cost of one period's usage, split pro rata over the versions in force during it.

    A row summed from buckets of other periods (held days under a week: `row.parts`) is
    priced part by part, where its usage was, as the CSV prices those buckets."""
    versions = None if price_book is None else price_book_versions(price_book)
    return _row_costs(row, versions)


def _row_costs(row: UsageRow, versions: list[PriceBookVersion] | None) -> Costs:
    if row.parts:
        return sum_costs(_row_costs(part, versions) for part in row.parts)
    return _costs_over_segments(
        row.totals, _segments_of(versions, row.period_start, row.period_end)
    )


def period_costs(
    totals: Mapping[str, Any], start: datetime, end: datetime, price_book: PriceBook | None
) -> Costs:
    """Like row_costs, for totals of [start, end) that are not a UsageRow (a bucket, a member)."""
    return _costs_over_segments(totals, _segments(price_book, start, end))


def version_costs(
    totals: Mapping[str, Any], start: datetime, end: datetime, price_book: PriceBook
) -> list[tuple[PriceBookVersion | None, Costs]]:
    """period_costs split by the versions in force: the cost of each version's part of the
    period (None: the part before the book's first version, costed 0). They add up to
    period_costs to within one COST_QUANTUM per part."""
    segments = _segments(price_book, start, end)
    duration = sum(overlap for _, overlap in segments)
    return [
        (version, _costs_over_segments(totals, [(version, overlap)], duration))
        for version, overlap in segments
    ]


def rows_costs(rows: Iterable[UsageRow], price_book: PriceBook | None) -> list[Costs]:
    """row_costs for each row, in order (the book's versions read once for all of them)."""
    versions = None if price_book is None else price_book_versions(price_book)
    return [_row_costs(row, versions) for row in rows]


# A row's total is a pure function of its period, its priced usage and the rates (and start)
# of the book's versions. The overview prices every covered connection's days on each view,
# and those barely change between views, so totals are remembered here by exactly that
# content, never by an id: a new or refetched bucket, an edited rate or a new version is a
# new key, and nothing can go stale. Bounded (about 14 MB per process when full); the least
# recently used go first.
TOTALS_MEMO_SIZE = 20_000
_totals_memo: OrderedDict[tuple[Any, ...], Decimal] = OrderedDict()
# A book's rates content -> a short key for it. Keys are never reused (even after a clear),
# so an entry priced at other rates can never answer for these.
_rates_ids: dict[tuple[Any, ...] | None, int] = {}
_next_rates_id = itertools.count()
_memo_lock = threading.Lock()
_priced_usage = operator.itemgetter(*PRICED_COLUMNS)


def _rates_id(versions: list[PriceBookVersion] | None) -> int:
    rates = None
    if versions is not None:
        rates = tuple(
            (v.effective_from, tuple(getattr(v, f) for f in RATES.values())) for v in versions
        )
    with _memo_lock:
        if rates not in _rates_ids:
            if len(_rates_ids) >= 1000:  # books edited very often: forget the old rates
                _rates_ids.clear()
            _rates_ids[rates] = next(_next_rates_id)
        return _rates_ids[rates]


class TotalsPricer:
    """Row totals at one price book's rates: its versions are read once, here, for however
    many rows are priced with it (make one per book for a page)."""

    def __init__(self, price_book: PriceBook | None) -> None:
        self.price_book = price_book
        self._versions = None if price_book is None else price_book_versions(price_book)
        self._rates = _rates_id(self._versions)

    def totals(self, rows: Iterable[UsageRow], *, remember: bool = True) -> list[Decimal]:
        """row_costs(row, price_book)["total"] for each row, in order, each computed once per
        process for the same content (see above). `remember=False` for rows that will not
        come again (a day cut at this moment): priced, not kept."""
        totals = []
        for row in rows:
            try:
                usage = _priced_usage(row.totals)
            except KeyError:  # a row without some column: it costs nothing, as in row_costs
                usage = tuple(row.totals.get(c) for c in PRICED_COLUMNS)
            key = (self._rates, row.period_start, row.period_end, usage)
            with _memo_lock:
                total = _totals_memo.get(key)
                if total is not None:
                    _totals_memo.move_to_end(key)
            if total is None:
                segments = _segments_of(self._versions, row.period_start, row.period_end)
                total = _costs_over_segments(row.totals, segments)["total"]
                if remember:
                    with _memo_lock:
                        _totals_memo[key] = total
                        if len(_totals_memo) > TOTALS_MEMO_SIZE:
                            _totals_memo.popitem(last=False)
            totals.append(total)
        return totals


def add_up(amounts: Iterable[Decimal]) -> Decimal:
    """A sum of costs, exact however large (as sum_costs adds)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return sum(amounts, ZERO)


def clear_totals_memo() -> None:
    """Forget remembered totals (tests that count pricing work start from none)."""
    with _memo_lock:
        _totals_memo.clear()
        _rates_ids.clear()


def sum_costs(items: Iterable[Mapping[str, Decimal]]) -> Costs:
    """Add Costs key by key. Exact (every cost has the same quantum), so order does not matter."""
    result = Costs(dict.fromkeys([*PRICED_COLUMNS, "total"], ZERO))
    for item in items:
        with localcontext() as ctx:
            ctx.prec = _PRECISION  # additions stay exact however large the sums grow
            for key, value in item.items():
                result[key] = result.get(key, ZERO) + value
        if isinstance(item, Costs):
            result.unpriced = result.unpriced or item.unpriced
            for version in item.versions:
                if version not in result.versions:
                    result.versions.append(version)
    result.versions.sort(key=lambda v: v.effective_from)
    return result


def pricing_notice(rows: Iterable[UsageRow], price_book: PriceBook | None) -> str | None:
    """A sentence for the page when some usage could not be priced, else None."""
    rows = list(rows)
    if not rows:
        return None
    if price_book is None:
        return "No price book is set up, so costs are shown as 0."
    unpriced = [row for row in rows if row_costs(row, price_book).unpriced]
    if not unpriced:
        return None
    first = price_book_versions(price_book)
    start = min(row.period_start for row in unpriced)
    end = max(row.period_end for row in unpriced)
    if first:
        end = min(end, first[0].effective_from)
    return (
        f"No prices in force from {start:%Y-%m-%d} until {end:%Y-%m-%d} (UTC) in the price book "
        f"“{price_book.name}”: that usage is costed at 0."
    )


# --- Views of a cost --------------------------------------------------------------------------


def stage_costs(costs: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Cost by ML stage (data, augmentation, training, conversion, deployment); sums to total."""
    return {
        stage: sum((costs.get(column, ZERO) for column in columns), ZERO)
        for stage, columns in STAGES.items()
    }


def _per_unit(cost: Decimal, units: Decimal) -> Decimal | None:
    if units == 0:
        return None
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (cost / units).quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def unit_costs(
    totals: Mapping[str, Any], costs: Mapping[str, Decimal]
) -> dict[str, Decimal | None]:
    """Cost per training GPU-hour, per prediction hour and per stored GB-month (None if no usage).

    `totals` are raw OSAI units (the same totals `costs` were computed from).
    """

    def raw_sum(columns: tuple[str, ...]) -> Decimal:
        return sum((to_decimal(totals.get(c)) for c in columns), ZERO)

    def cost_sum(columns: tuple[str, ...]) -> Decimal:
        return sum((costs.get(c, ZERO) for c in columns), ZERO)

    with localcontext() as ctx:
        ctx.prec = _PRECISION
        training_hours = raw_sum(TRAINING_COLUMNS) / SECONDS_PER_HOUR
        prediction_hours = raw_sum(PREDICTION_COLUMNS) / SECONDS_PER_HOUR
        stored_gb_months = raw_sum(STORAGE_COLUMNS) / KB_MIN_PER_GB_MONTH
    return {
        "per_training_gpu_hour": _per_unit(cost_sum(TRAINING_COLUMNS), training_hours),
        "per_prediction_hour": _per_unit(cost_sum(PREDICTION_COLUMNS), prediction_hours),
        "per_stored_gb_month": _per_unit(cost_sum(STORAGE_COLUMNS), stored_gb_months),
    }


# The training column of each worker class (8 and 16 GB), for the what-if.
_TRAINING_ON: dict[int, str] = {
    m.total.worker_gb: m.column for m in PRICED if m.category == "training" and m.total.worker_gb
}
WHAT_IF_KEYS: dict[str, int] = {"all_on_8gb": 8, "all_on_16gb": 16}


def _training_moved(totals: Mapping[str, Any], worker_gb: int) -> dict[str, Decimal]:
    """Totals with every training second moved to one worker class (for the what-if)."""
    moved: dict[str, Decimal] = {c: to_decimal(totals.get(c)) for c in PRICED_COLUMNS}
    seconds = sum((moved[column] for column in _TRAINING_ON.values()), ZERO)
    for column in _TRAINING_ON.values():
        moved[column] = ZERO
    moved[_TRAINING_ON[worker_gb]] = seconds
    return moved


def _training_cost(costs: Mapping[str, Decimal]) -> Decimal:
    return sum((costs[column] for column in TRAINING_COLUMNS), ZERO)


def _priced_parts(rows: Iterable[UsageRow]) -> Iterable[UsageRow]:
    """The rows as they are priced: a row summed from buckets of other periods, part by part."""
    for row in rows:
        yield from row.parts or (row,)


def training_what_if_rows(
    rows: Iterable[UsageRow], price_book: PriceBook | None
) -> dict[str, Decimal]:
    """An estimate over a report's rows: their training seconds all at the 8 GB rate, all at
    the 16 GB rate, and as they were (actual), each row priced by the versions in force (pro
    rata). The same seconds at the other rate: it ignores that a job may run faster on a
    larger worker."""
    result = dict.fromkeys(("actual", "all_on_8gb", "all_on_16gb"), ZERO)
    for row in _priced_parts(rows):
        segments = _segments(price_book, row.period_start, row.period_end)
        result["actual"] += _training_cost(_costs_over_segments(row.totals, segments))
        for key, worker_gb in WHAT_IF_KEYS.items():
            moved = _training_moved(row.totals, worker_gb)
            result[key] += _training_cost(_costs_over_segments(moved, segments))
    return result
