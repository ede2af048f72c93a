"""Price books and cost arithmetic (reports/spend/pricing.py): exact Decimals, pro rata, what-if."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports import formatting
from reports.metrics import PRICED_COLUMNS, STAGE_LABELS, USAGE_COLUMNS
from reports.models import PriceBook, PriceBookVersion
from reports.spend import pricing
from reports.spend.usage import UsageRow, rows_from_buckets
from tests.factories import make_connection, make_done_bucket, make_done_report, make_user

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
GB_MONTH_KB_MIN = 1_048_576 * 43_200

# The example book's rates, rate by rate: the example-book test checks migration 0003 against
# them, and the known-usage tests below work out their figures by hand with them.
RATES = {
    rate: Decimal(value)
    for rate, value in (
        ("training_8gb_per_hour", "1.20"),
        ("training_16gb_per_hour", "2.10"),
        ("conversion_8gb_per_hour", "0.60"),
        ("conversion_16gb_per_hour", "1.05"),
        ("prediction_8gb_per_hour", "0.40"),
        ("prediction_16gb_per_hour", "0.70"),
        ("manipulation_per_hour", "0.25"),
        ("device_rental_per_hour", "0.90"),
        ("image_storage_per_gb_month", "0.08"),
        ("model_storage_per_gb_month", "0.10"),
    )
}


def make_book(name: str = "Test book", *versions: tuple[datetime, dict[str, Decimal]]) -> PriceBook:
    book = PriceBook.objects.create(name=name, currency="EUR")
    for effective_from, rates in versions:
        PriceBookVersion.objects.create(price_book=book, effective_from=effective_from, **rates)
    return book


def row(start: datetime, end: datetime, **totals: float) -> UsageRow:
    values = dict.fromkeys(USAGE_COLUMNS, 0.0)
    values.update(totals)
    return UsageRow(period_start=start, period_end=end, totals=values)


# --- Known usage at known rates -------------------------------------------------------------


def test_usage_cost_of_known_usage_is_exact() -> None:
    version = PriceBookVersion(effective_from=JAN, **RATES)
    totals = {
        "training_seconds_8gb": 7200.0,  # 2 h x 1.20
        "training_seconds_16gb": 1800.0,  # 0.5 h x 2.10
        "conversion_seconds_8gb": 3600.0,  # 1 h x 0.60
        "conversion_seconds_16gb": 0.0,
        "prediction_seconds_8gb": 900.0,  # 0.25 h x 0.40
        "prediction_seconds_16gb": 36.0,  # 0.01 h x 0.70
        "manipulation_seconds": 14400.0,  # 4 h x 0.25
        "device_rental_seconds": 36000.0,  # 10 h x 0.90
        "images_kb_min": 10.0 * GB_MONTH_KB_MIN,  # 10 GB-months x 0.08
        "models_kb_min": 0.5 * GB_MONTH_KB_MIN,  # 0.5 GB-months x 0.10
        "existing_images": 12345.0,  # not priced
    }
    result = pricing.usage_cost(totals, version)
    assert result == {
        "training_seconds_8gb": Decimal("2.40"),
        "training_seconds_16gb": Decimal("1.05"),
        "conversion_seconds_8gb": Decimal("0.60"),
        "conversion_seconds_16gb": Decimal("0"),
        "prediction_seconds_8gb": Decimal("0.10"),
        "prediction_seconds_16gb": Decimal("0.007"),
        "manipulation_seconds": Decimal("1.00"),
        "device_rental_seconds": Decimal("9.00"),
        "images_kb_min": Decimal("0.80"),
        "models_kb_min": Decimal("0.05"),
        "total": Decimal("15.007"),
    }
    assert all(isinstance(v, Decimal) for v in result.values())
    assert not result.unpriced
    assert formatting.to_cents(result["total"]) == Decimal("15.01")
    assert formatting.money(result["total"], "EUR") == "EUR 15.01"


def test_full_precision_is_kept_until_display() -> None:
    version = PriceBookVersion(effective_from=JAN, training_8gb_per_hour=Decimal("1.000000"))
    one_second = pricing.usage_cost({"training_seconds_8gb": 1.0}, version)["total"]
    assert one_second == Decimal("0.0002777778")  # 1/3600 at the 10^-10 internal quantum
    assert formatting.to_cents(one_second) == Decimal("0.00")
    # 3600 one-second rows add up to what one hour costs, to the cent (no per-row rounding).
    assert formatting.to_cents(one_second * 3600) == Decimal("1.00")


def test_raw_doubles_enter_as_the_decimal_osai_sent() -> None:
    assert pricing.to_decimal(1.4956327299571348e18) == Decimal("1.4956327299571348E+18")
    assert pricing.to_decimal(0.1) == Decimal("0.1")  # not 0.1000000000000000055511…
    assert pricing.to_decimal(None) == 0
    assert pricing.to_decimal(float("nan")) == 0
    version = PriceBookVersion(effective_from=JAN, image_storage_per_gb_month=Decimal("0.08"))
    huge = pricing.usage_cost({"images_kb_min": 1.4956327299571348e18}, version)["total"]
    assert huge == Decimal("2641382.4469197853")  # 1.4956…e18 / 45,298,483,200 x 0.08


def test_money_rounds_half_up_only_for_display() -> None:
    assert formatting.to_cents(Decimal("0.005")) == Decimal("0.01")
    assert formatting.to_cents(Decimal("0.0049999999")) == Decimal("0.00")
    assert formatting.to_cents(Decimal("-1.235")) == Decimal("-1.24")


# --- Price books and versions --------------------------------------------------------------


@pytest.mark.django_db
def test_example_price_book_is_the_default_and_labelled_as_example() -> None:
    book = PriceBook.objects.get(name="Example price book")
    assert (book.currency, book.is_example, book.is_default) == ("EUR", True, True)
    versions = list(book.versions.all())
    assert [v.effective_from for v in versions] == [datetime(2020, 1, 1, tzinfo=UTC)]
    assert {field: getattr(versions[0], field) for field in RATES} == RATES
    assert pricing.is_example(book)
    assert not pricing.is_example(None)


@pytest.mark.django_db
def test_price_book_for_prefers_the_reports_own_book_then_the_default() -> None:
    owner = make_user()
    own = make_book("Own", (JAN, RATES))
    with_book = make_done_report(owner, price_book=own)
    without = make_done_report(owner, [make_connection(owner)])
    assert pricing.price_book_for(with_book) == own
    assert pricing.price_book_for(without) == PriceBook.objects.get(is_default=True)
    PriceBook.objects.update(is_default=False)
    assert pricing.price_book_for(without) is None


@pytest.mark.django_db
def test_row_is_priced_by_the_version_in_force() -> None:
    old = {**RATES, "training_8gb_per_hour": Decimal("1.00")}
    new = {**RATES, "training_8gb_per_hour": Decimal("3.00")}
    book = make_book("Versions", (datetime(2025, 1, 1, tzinfo=UTC), old), (FEB, new))
    january = pricing.row_costs(row(JAN, FEB, training_seconds_8gb=3600.0), book)
    february = pricing.row_costs(row(FEB, MAR, training_seconds_8gb=3600.0), book)
    assert january["total"] == Decimal("1.00")
    assert february["total"] == Decimal("3.00")
    assert [v.effective_from for v in february.versions] == [FEB]
    assert pricing.version_in_force(book, FEB).training_8gb_per_hour == Decimal("3.00")


@pytest.mark.django_db
def test_a_rate_that_doubles_halfway_through_a_month_costs_one_and_a_half_times() -> None:
    halfway = JAN + (FEB - JAN) / 2  # 2026-01-16 12:00 UTC
    old = dict.fromkeys(RATES, Decimal("0.50"))
    book = make_book(
        "Doubling",
        (datetime(2024, 1, 1, tzinfo=UTC), old),
        (halfway, dict.fromkeys(RATES, Decimal("1.00"))),
    )
    flat = make_book("Flat", (datetime(2024, 1, 1, tzinfo=UTC), old))

    @settings(max_examples=60, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(list(PRICED_COLUMNS)),
            st.integers(min_value=0, max_value=10**12),
            min_size=1,
        )
    )
    def check(totals: dict[str, int]) -> None:
        usage_row = row(JAN, FEB, **{k: float(v) for k, v in totals.items()})
        split = pricing.row_costs(usage_row, book)
        at_old_rate = pricing.row_costs(usage_row, flat)
        for column in PRICED_COLUMNS:
            # Equal up to the internal quantum (each side is rounded once, at 10^-10).
            assert abs(split[column] - at_old_rate[column] * Decimal("1.5")) <= pricing.COST_QUANTUM
        assert [v.effective_from for v in split.versions] == [
            datetime(2024, 1, 1, tzinfo=UTC),
            halfway,
        ]

    check()
    # The documented example, exactly: 10 GPU-hours at 0.50 then 1.00 cost 7.50, not 5 or 10.
    ten_hours = pricing.row_costs(row(JAN, FEB, training_seconds_8gb=36000.0), book)
    assert ten_hours["total"] == Decimal("7.50")


@pytest.mark.django_db
def test_usage_before_any_version_costs_zero_and_is_flagged() -> None:
    book = make_book("Late", (FEB, RATES))
    early = row(JAN, FEB, training_seconds_8gb=3600.0)
    straddling = row(
        datetime(2026, 1, 17, tzinfo=UTC),
        datetime(2026, 2, 16, tzinfo=UTC),
        training_seconds_8gb=3600.0,
    )
    assert pricing.row_costs(early, book)["total"] == 0
    assert pricing.row_costs(early, book).unpriced
    half = pricing.row_costs(straddling, book)
    assert half.unpriced and half["total"] == Decimal("0.60")  # 15 of 30 days priced
    notice = pricing.pricing_notice([early, row(FEB, MAR)], book)
    assert notice is not None
    assert "No prices in force from 2026-01-01 until 2026-02-01" in notice
    assert pricing.pricing_notice([row(FEB, MAR)], book) is None
    assert pricing.row_costs(early, None)["total"] == 0
    assert (
        pricing.pricing_notice([early], None) == "No price book is set up, so costs are shown as 0."
    )
    empty = make_book("Empty")
    assert pricing.row_costs(early, empty).unpriced


@pytest.mark.django_db
def test_versions_are_read_once_per_book_instance(django_assert_num_queries) -> None:
    book = make_book("Cached", (JAN, RATES))
    rows = [row(JAN, FEB, training_seconds_8gb=3600.0)] * 50
    with django_assert_num_queries(1):
        pricing.rows_costs(rows, book)


@pytest.mark.django_db
def test_remembered_totals_are_row_costs_and_follow_the_rates_the_versions_and_the_usage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TotalsPricer (what the overview prices with) remembers totals by content: a warm
    answer is row_costs' total, and changed rates, a new version or changed usage are never
    answered from before."""
    pricing.clear_totals_memo()
    computed: list[int] = []
    real = pricing._costs_over_segments

    def counting(*args: Any) -> pricing.Costs:
        computed.append(1)
        return real(*args)

    monkeypatch.setattr(pricing, "_costs_over_segments", counting)
    book = make_book("Remembered", (JAN, RATES))
    days = [
        row(JAN.replace(day=d), JAN.replace(day=d + 1), training_seconds_8gb=60.0 * d)
        for d in range(1, 11)
    ]

    def fresh(book: PriceBook) -> list[Decimal]:
        # row_costs on a new instance of the book: no memo, the versions as stored now.
        again = PriceBook.objects.get(pk=book.pk)
        return [
            real(r.totals, pricing._segments(again, r.period_start, r.period_end))["total"]
            for r in days
        ]

    assert pricing.TotalsPricer(book).totals(days) == fresh(book)
    assert len(computed) == 10
    assert pricing.TotalsPricer(PriceBook.objects.get(pk=book.pk)).totals(days) == fresh(book)
    assert len(computed) == 10  # the same content: remembered

    book.versions.update(training_8gb_per_hour=Decimal("2.40"))  # an edited rate
    edited = pricing.TotalsPricer(PriceBook.objects.get(pk=book.pk)).totals(days)
    assert edited == fresh(book) and edited[0] == Decimal("0.04")
    PriceBookVersion.objects.create(  # a new version from the middle of Jan 5
        price_book=book, effective_from=JAN.replace(day=5, hour=12), **RATES
    )
    assert pricing.TotalsPricer(PriceBook.objects.get(pk=book.pk)).totals(days) == fresh(book)
    days[2].totals["training_seconds_8gb"] += 1.0  # a refetched day
    assert pricing.TotalsPricer(PriceBook.objects.get(pk=book.pk)).totals(days) == fresh(book)
    assert pricing.TotalsPricer(None).totals(days) == [Decimal(0)] * 10
    cut = [row(JAN, JAN.replace(hour=7), training_seconds_8gb=99.0)]
    before = len(computed)
    pricing.TotalsPricer(book).totals(cut, remember=False)
    pricing.TotalsPricer(book).totals(cut, remember=False)
    assert len(computed) == before + 2  # a day cut at a moment is not kept


# --- Stages, unit costs, what-if ---------------------------------------------------------------


def test_stage_costs_follow_the_ml_pipeline_and_add_up_to_the_total() -> None:
    version = PriceBookVersion(effective_from=JAN, **RATES)
    totals = {
        "images_kb_min": 1.0 * GB_MONTH_KB_MIN,
        "models_kb_min": 1.0 * GB_MONTH_KB_MIN,
        "manipulation_seconds": 3600.0,
        "training_seconds_8gb": 3600.0,
        "training_seconds_16gb": 3600.0,
        "conversion_seconds_8gb": 3600.0,
        "conversion_seconds_16gb": 3600.0,
        "prediction_seconds_8gb": 3600.0,
        "prediction_seconds_16gb": 3600.0,
        "device_rental_seconds": 3600.0,
    }
    result = pricing.usage_cost(totals, version)
    stages = pricing.stage_costs(result)
    assert stages == {
        "data": Decimal("0.08"),
        "augmentation": Decimal("0.25"),
        "training": Decimal("3.40"),  # 1.20 + 2.10 + model storage 0.10
        "conversion": Decimal("1.65"),
        "deployment": Decimal("2.00"),  # device 0.90 + prediction 0.40 + 0.70
    }
    assert sum(stages.values()) == result["total"]
    assert list(stages) == list(STAGE_LABELS)


def test_unit_costs_and_none_without_usage() -> None:
    version = PriceBookVersion(effective_from=JAN, **RATES)
    totals = {
        "training_seconds_8gb": 3600.0,
        "training_seconds_16gb": 3600.0,
        "images_kb_min": 3.0 * GB_MONTH_KB_MIN,
        "models_kb_min": 1.0 * GB_MONTH_KB_MIN,
    }
    units = pricing.unit_costs(totals, pricing.usage_cost(totals, version))
    assert units == {
        "per_training_gpu_hour": Decimal("1.65"),  # (1.20 + 2.10) / 2 h
        "per_prediction_hour": None,
        "per_stored_gb_month": Decimal("0.085"),  # (0.24 + 0.10) / 4 GB-months
    }


@pytest.mark.django_db
def test_training_what_if_prices_the_same_seconds_on_the_other_worker_class() -> None:
    book = make_book("One", (JAN, RATES))
    totals = dict.fromkeys(USAGE_COLUMNS, 0.0)
    totals |= {"training_seconds_8gb": 7200.0, "training_seconds_16gb": 3600.0}
    row = UsageRow(JAN, datetime(2026, 2, 1, tzinfo=UTC), totals=totals)
    assert pricing.training_what_if_rows([row], book) == {
        "actual": Decimal("4.50"),  # 2 h x 1.20 + 1 h x 2.10
        "all_on_8gb": Decimal("3.60"),  # 3 h x 1.20
        "all_on_16gb": Decimal("6.30"),  # 3 h x 2.10
    }
    assert pricing.training_what_if_rows([row], None) == dict.fromkeys(
        ("actual", "all_on_8gb", "all_on_16gb"), Decimal(0)
    )


@pytest.mark.django_db
def test_training_what_if_over_rows_uses_each_rows_versions() -> None:
    book = make_book("Two", (JAN, RATES), (FEB, {**RATES, "training_8gb_per_hour": Decimal("2")}))
    rows = [
        row(JAN, FEB, training_seconds_16gb=3600.0),
        row(FEB, MAR, training_seconds_16gb=3600.0),
    ]
    result = pricing.training_what_if_rows(rows, book)
    assert result == {
        "actual": Decimal("4.20"),
        "all_on_8gb": Decimal("3.20"),  # 1.20 in January, 2.00 in February
        "all_on_16gb": Decimal("4.20"),
    }


# --- Properties: order independence, additivity -------------------------------------------------

raw_amount = st.one_of(
    st.integers(min_value=0, max_value=2**53).map(float),
    st.floats(min_value=0, max_value=1.5e18, allow_nan=False, allow_infinity=False),
)
usage_totals = st.fixed_dictionaries({column: raw_amount for column in PRICED_COLUMNS})


@settings(max_examples=80, deadline=None)
@given(st.lists(usage_totals, min_size=1, max_size=12), st.randoms())
def test_sum_of_costs_does_not_depend_on_order(
    totals: list[dict[str, float]], rnd: random.Random
) -> None:
    version = PriceBookVersion(effective_from=JAN, **RATES)
    items = [pricing.usage_cost(t, version) for t in totals]
    shuffled = items[:]
    rnd.shuffle(shuffled)
    forward, backward = pricing.sum_costs(items), pricing.sum_costs(shuffled)
    assert forward == backward
    assert forward["total"] == sum(forward[c] for c in PRICED_COLUMNS)


@pytest.mark.django_db
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=6), st.randoms())
def test_report_cost_does_not_depend_on_bucket_order(seeds: list[int], rnd: random.Random) -> None:
    with transaction.atomic():
        owner = make_user()
        connection = make_connection(owner)
        periods = [
            (datetime(2025, m, 1, tzinfo=UTC), datetime(2025, m + 1, 1, tzinfo=UTC))
            for m in range(1, len(seeds) + 1)
        ]
        order = list(zip(periods, seeds, strict=True))
        rnd.shuffle(order)  # insertion (and so primary-key) order differs per example
        buckets = [make_done_bucket(connection, s, e, seed=seed) for (s, e), seed in order]
        book = PriceBook.objects.get(is_default=True)
        totals = []
        for permutation in (buckets, list(reversed(buckets)), rnd.sample(buckets, len(buckets))):
            rows = rows_from_buckets(permutation)
            totals.append(pricing.sum_costs(pricing.rows_costs(rows, book))["total"])
        assert totals[0] == totals[1] == totals[2]
        transaction.set_rollback(True)
