"""How changes are written (reports/formatting.py, `change_text`, U2): a percentage only where
one reads, otherwise the two amounts, for money and for usage alike."""

from __future__ import annotations

from decimal import Decimal

from reports.formatting import change_text

D = Decimal
VERSUS = "the same days of last month"


def test_a_tiny_base_writes_the_amounts_not_a_five_digit_percentage() -> None:
    # The demo team page's "+28041.4 % vs the same days of last month".
    assert change_text(D("26.28"), D("0.09"), VERSUS, currency="EUR") == (
        "EUR 26.28, up from EUR 0.09 in the same days of last month",
        "up",
    )
    assert change_text(D("0.05"), D("0.90"), "Oct 2026", currency="EUR") == (
        "EUR 0.05, down from EUR 0.90 in Oct 2026",
        "down",
    )
    # Just under the base, even a small change is written as amounts.
    assert change_text(D("1.10"), D("0.99"), "Oct 2026", currency="EUR") == (
        "EUR 1.10, up from EUR 0.99 in Oct 2026",
        "up",
    )


def test_a_normal_base_writes_a_percentage() -> None:
    assert change_text(D("12.34"), D("10.00"), "Oct 2026", currency="EUR") == (
        "+23.4 % vs Oct 2026",
        "up",
    )
    assert change_text(D("18.00"), D("34.80"), VERSUS, currency="EUR") == (
        "-48.3 % vs the same days of last month",
        "down",
    )
    # A base of exactly 1.00 reads; so does a change of exactly 999 %.
    assert change_text(D("1.50"), D("1.00"), "Oct 2026", currency="EUR")[0] == "+50.0 % vs Oct 2026"
    assert change_text(D("99.90"), D("10.00"), "Oct 2026", currency="EUR")[0] == (
        "+899.0 % vs Oct 2026"
    )
    assert change_text(D("109.90"), D("10.00"), "Oct 2026", currency="EUR")[0] == (
        "+999.0 % vs Oct 2026"
    )
    # The digests and alerts name the base a percentage is of.
    assert change_text(D("12.34"), D("10.00"), "Oct 2026", currency="EUR", with_base=True) == (
        "+23.4 % vs Oct 2026 (EUR 10.00)",
        "up",
    )


def test_a_change_beyond_999_percent_writes_the_amounts_even_on_a_normal_base() -> None:
    assert change_text(D("110.00"), D("10.00"), "Oct 2026", currency="EUR") == (
        "EUR 110.00, up from EUR 10.00 in Oct 2026",
        "up",
    )
    assert change_text(D("313088.37"), D("15572.79"), "Oct 2026", currency="EUR") == (
        "EUR 313,088.37, up from EUR 15,572.79 in Oct 2026",
        "up",
    )
    # with_base adds nothing to amounts: the base is in the text already.
    assert change_text(D("110.00"), D("10.00"), "Oct 2026", currency="EUR", with_base=True)[0] == (
        "EUR 110.00, up from EUR 10.00 in Oct 2026"
    )


def test_a_zero_base_is_new_since_and_nothing_to_nothing_is_no_change() -> None:
    assert change_text(D("26.28"), D(0), "Oct 2026", currency="EUR") == (
        "new since Oct 2026",
        "up",
    )
    assert change_text(D(0), D(0), "Oct 2026", currency="EUR") == ("no change", "flat")
    assert change_text(3.5, 0.0, "Oct 2026", unit="GPU-hours", decimals=1) == (
        "new since Oct 2026",
        "up",
    )


def test_an_unknown_previous_figure_writes_nothing() -> None:
    assert change_text(D("26.28"), None, "Oct 2026", currency="EUR") == ("", "")


def test_the_trend_keeps_its_meaning_and_what_reads_the_same_is_no_change() -> None:
    # Within 0.05 % of a normal base: no change.
    assert change_text(D("100.04"), D("100.00"), "Oct 2026", currency="EUR") == (
        "no change vs Oct 2026",
        "flat",
    )
    # Amounts that are written the same: no change, rather than "EUR 0.09, up from EUR 0.09".
    assert change_text(D("0.091"), D("0.094"), "Oct 2026", currency="EUR") == (
        "no change vs Oct 2026",
        "flat",
    )
    # A credit before (a negative base) is no base for a percentage: the amounts, and up.
    assert change_text(D("5.00"), D("-2.00"), "Oct 2026", currency="EUR") == (
        "EUR 5.00, up from EUR -2.00 in Oct 2026",
        "up",
    )


def test_a_usage_change_on_a_tiny_base_writes_the_amounts_with_units() -> None:
    assert change_text(12.3, 0.1, "Oct 2026", unit="GPU-hours", decimals=1) == (
        "12.3 GPU-hours, up from 0.1 GPU-hours in Oct 2026",
        "up",
    )
    assert change_text(0.25, 0.75, "Oct 2026", unit="GB-months", decimals=2) == (
        "0.25 GB-months, down from 0.75 GB-months in Oct 2026",
        "down",
    )
    assert change_text(2500.0, 3.0, "Oct 2026", unit="images", decimals=0) == (
        "2,500 images, up from 3 images in Oct 2026",
        "up",
    )


def test_a_usage_change_on_a_normal_base_writes_a_percentage() -> None:
    assert change_text(12.0, 10.0, "Oct 2026", unit="GPU-hours", decimals=1) == (
        "+20.0 % vs Oct 2026",
        "up",
    )
    # Usage under the base whose amounts read the same as written: no change.
    assert change_text(0.04, 0.01, "Oct 2026", unit="GPU-hours", decimals=1) == (
        "no change vs Oct 2026",
        "flat",
    )
