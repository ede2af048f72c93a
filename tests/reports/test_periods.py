"""Periods (reports/periods.py): presets in UTC, buckets that tile a period exactly, and the
period a report is compared with."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reports.periods import (
    DASH,
    PRESETS,
    comparison_buckets,
    comparison_period,
    count_buckets,
    describe,
    preset_period,
    previous_period,
    split_period,
)

NOW = datetime(2026, 11, 22, 15, 30, 12, 999, tzinfo=UTC)
COMPARED_AT = datetime(2026, 11, 26, 13, 27, tzinfo=UTC)


def d(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("preset", "start", "end"),
    [
        ("this_month", d(2026, 11, 1), d(2026, 11, 22, 15, 30, 12)),
        ("last_month", d(2026, 10, 1), d(2026, 11, 1)),
        ("last_7_days", d(2026, 11, 15), d(2026, 11, 22)),
        ("last_30_days", d(2026, 10, 23), d(2026, 11, 22)),
        ("last_90_days", d(2026, 8, 24), d(2026, 11, 22)),
        ("quarter_to_date", d(2026, 10, 1), d(2026, 11, 22, 15, 30, 12)),
        ("last_quarter", d(2026, 7, 1), d(2026, 10, 1)),
        ("year_to_date", d(2026, 1, 1), d(2026, 11, 22, 15, 30, 12)),
        ("last_12_months", d(2025, 12, 1), d(2026, 11, 22, 15, 30, 12)),
    ],
)
def test_presets_mean_utc_periods(preset, start, end):
    assert preset_period(preset, NOW) == (start, end)


def test_every_preset_is_known():
    for name in PRESETS:
        start, end = preset_period(name, NOW)
        assert start < end <= NOW


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="Unknown"):
        preset_period("last_century", NOW)


def test_last_12_months_by_month_has_one_open_bucket():
    start, end = preset_period("last_12_months", NOW)
    buckets = split_period(start, end, "month")
    assert len(buckets) == 12
    assert all(end <= d(2026, 11, 1) for _, end in buckets[:-1])  # closed, reusable
    assert buckets[-1] == (d(2026, 11, 1), d(2026, 11, 22, 15, 30, 12))


def test_weeks_start_on_monday_and_are_clipped():
    buckets = split_period(d(2026, 11, 1), d(2026, 11, 20), "week")
    # 2026-11-01 is a Sunday: a one-day first bucket, then Mondays.
    assert buckets[0] == (d(2026, 11, 1), d(2026, 11, 2))
    assert buckets[1] == (d(2026, 11, 2), d(2026, 11, 9))
    assert buckets[-1] == (d(2026, 11, 16), d(2026, 11, 20))
    assert all(s.weekday() == 0 for s, _ in buckets[1:])


def test_total_is_one_bucket():
    assert split_period(d(2026, 1, 1), d(2026, 7, 1), "total") == [(d(2026, 1, 1), d(2026, 7, 1))]


def test_previous_period_has_equal_length():
    assert previous_period(d(2026, 3, 1), d(2026, 3, 31)) == (d(2026, 1, 30), d(2026, 3, 1))


@given(
    start=st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2026, 1, 1)),
    days=st.floats(min_value=0.001, max_value=800),
    granularity=st.sampled_from(["total", "day", "week", "month"]),
)
def test_buckets_tile_the_period_exactly(start, days, granularity):
    from datetime import timedelta

    start = start.replace(tzinfo=UTC)
    end = start + timedelta(days=days)
    buckets = split_period(start, end, granularity)
    assert buckets[0][0] == start and buckets[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(buckets))
    assert all(s < e for s, e in buckets)
    assert count_buckets(start, end, granularity) == len(buckets)
    if granularity != "total":
        # Every inner boundary is a UTC midnight.
        assert all(e.hour == e.minute == e.second == e.microsecond == 0 for _, e in buckets[:-1])


# --- What a report is compared with: the product rules -------------------------------------
# How that period is fetched and read: tests/reports/pipeline/test_comparison.py.


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("this_month", (d(2026, 10, 1), d(2026, 10, 26, 13, 27))),
        ("last_month", (d(2026, 9, 1), d(2026, 10, 1))),
        ("last_7_days", (d(2026, 11, 12), d(2026, 11, 19))),
        ("last_30_days", (d(2026, 9, 27), d(2026, 10, 27))),
        ("last_90_days", (d(2026, 5, 30), d(2026, 8, 28))),
        ("quarter_to_date", (d(2026, 7, 1), d(2026, 8, 26, 13, 27))),
        ("last_quarter", (d(2026, 4, 1), d(2026, 7, 1))),
        ("year_to_date", (d(2025, 1, 1), d(2025, 11, 26, 13, 27))),
        ("last_12_months", (d(2024, 12, 1), d(2025, 11, 26, 13, 27))),
    ],
)
def test_every_preset_has_a_comparison_by_the_product_rules(
    preset: str, expected: tuple[datetime, datetime]
) -> None:
    start, end = preset_period(preset, COMPARED_AT)
    assert comparison_period(preset, start, end) == expected


@pytest.mark.parametrize(
    ("preset", "now", "expected"),
    [
        # The 29th to the 31st after a 28-day February: all of February.
        ("this_month", d(2027, 3, 31, 23, 30), (d(2027, 2, 1), d(2027, 3, 1))),
        ("this_month", d(2027, 3, 29, 0, 5), (d(2027, 2, 1), d(2027, 3, 1))),
        ("this_month", d(2027, 3, 28, 0, 5), (d(2027, 2, 1), d(2027, 2, 28, 0, 5))),
        # The 31st after a 30-day month; a 30-day month after a 31-day one keeps its day.
        ("this_month", d(2027, 5, 31, 12), (d(2027, 4, 1), d(2027, 5, 1))),
        ("this_month", d(2027, 4, 30, 12), (d(2027, 3, 1), d(2027, 3, 30, 12))),
        ("quarter_to_date", d(2027, 5, 31, 12), (d(2027, 1, 1), d(2027, 3, 1))),
        # A leap day: the year before has no 29 February.
        ("year_to_date", d(2028, 2, 29, 12), (d(2027, 1, 1), d(2027, 3, 1))),
        ("last_12_months", d(2028, 2, 29, 12), (d(2026, 3, 1), d(2027, 3, 1))),
        ("this_month", d(2028, 2, 29, 12), (d(2028, 1, 1), d(2028, 1, 29, 12))),
        # The 1st, five minutes in.
        ("this_month", d(2027, 1, 1, 0, 5), (d(2026, 12, 1), d(2026, 12, 1, 0, 5))),
    ],
)
def test_a_preset_ending_now_compares_with_the_same_days_even_where_that_month_is_shorter(
    preset: str, now: datetime, expected: tuple[datetime, datetime]
) -> None:
    start, end = preset_period(preset, now)
    assert comparison_period(preset, start, end) == expected


def test_this_month_compares_with_the_same_days_of_last_month_as_the_overview_does() -> None:
    """At the guard's clocks too (tests/support/clock.py): a "this month" report and the
    overview mean the same days of last month, on the 31st as on the 1st."""
    from dateutil.relativedelta import relativedelta
    from django.utils import timezone

    from reports.spend.monthly import load_spend

    now = timezone.now().replace(microsecond=0)  # as the report form and presets take it
    overview = load_spend([], now)
    start, end = preset_period("this_month", now)
    assert comparison_period("this_month", start, end) == (
        overview.month_start - relativedelta(months=1),
        overview.previous_end,
    )


# Quarters at their edges: the first and last instant of a quarter, and the turn of a year.
@pytest.mark.parametrize(
    ("now", "to_date", "last", "compared"),
    [
        (d(2026, 1, 1), d(2026, 1, 1), (d(2025, 10, 1), d(2026, 1, 1)), d(2025, 7, 1)),
        (
            d(2026, 3, 31, 23, 59, 59),
            d(2026, 1, 1),
            (d(2025, 10, 1), d(2026, 1, 1)),
            d(2025, 7, 1),
        ),
        (d(2026, 4, 1), d(2026, 4, 1), (d(2026, 1, 1), d(2026, 4, 1)), d(2025, 10, 1)),
        (d(2026, 4, 1, 0, 0, 1), d(2026, 4, 1), (d(2026, 1, 1), d(2026, 4, 1)), d(2025, 10, 1)),
        (d(2026, 6, 30, 12), d(2026, 4, 1), (d(2026, 1, 1), d(2026, 4, 1)), d(2025, 10, 1)),
        (d(2026, 7, 1), d(2026, 7, 1), (d(2026, 4, 1), d(2026, 7, 1)), d(2026, 1, 1)),
        (d(2026, 12, 31, 23), d(2026, 10, 1), (d(2026, 7, 1), d(2026, 10, 1)), d(2026, 4, 1)),
    ],
)
def test_quarters_at_their_edges(
    now: datetime,
    to_date: datetime,
    last: tuple[datetime, datetime],
    compared: datetime,
) -> None:
    """ "Last quarter" is the whole calendar quarter before the one `now` is in, compared with
    the quarter before it; "quarter to date" starts on the quarter's first day."""
    assert preset_period("quarter_to_date", now)[0] == to_date
    assert preset_period("last_quarter", now) == last
    assert comparison_period("last_quarter", *last) == (compared, last[0])
    assert describe(*last) == f"{last[0]:%b %Y}{DASH}{last[1] - timedelta(days=1):%b %Y}"


def test_custom_ranges_compare_whole_months_with_months_and_days_with_days() -> None:
    assert comparison_period("", d(2026, 1, 1), d(2026, 4, 1)) == (
        d(2025, 10, 1),
        d(2026, 1, 1),
    )
    assert comparison_period("", d(2026, 3, 10), d(2026, 3, 20)) == (
        d(2026, 2, 28),
        d(2026, 3, 10),
    )
    # A range that ends today, mid-day: the same whole number of days earlier.
    assert comparison_period("", d(2026, 11, 20), COMPARED_AT) == (
        d(2026, 11, 13),
        d(2026, 11, 19, 13, 27),
    )
    assert set(PRESETS) <= {
        "this_month",
        "last_month",
        "last_7_days",
        "last_30_days",
        "last_90_days",
        "quarter_to_date",
        "last_quarter",
        "year_to_date",
        "last_12_months",
    }


def test_the_comparison_is_fetched_as_whole_months_then_days_up_to_a_midnight() -> None:
    plan = comparison_buckets(d(2025, 1, 1), d(2025, 3, 3, 13, 27))
    assert plan == [
        (d(2025, 1, 1), d(2025, 2, 1)),
        (d(2025, 2, 1), d(2025, 3, 1)),
        (d(2025, 3, 1), d(2025, 3, 2)),
        (d(2025, 3, 2), d(2025, 3, 3)),
        (d(2025, 3, 3), d(2025, 3, 4)),
    ]
    assert describe(d(2026, 10, 1), d(2026, 11, 1)) == "Oct 2026"
    assert describe(d(2025, 1, 1), d(2025, 11, 1)) == "Jan 2025 \u2013 Oct 2025"
    assert describe(d(2026, 10, 1), d(2026, 10, 26, 13, 27)) == (
        "2026-10-01 \u2013 2026-10-26 13:27"
    )
    assert describe(d(2026, 11, 12), d(2026, 11, 19)) == "2026-11-12 \u2013 2026-11-18"
