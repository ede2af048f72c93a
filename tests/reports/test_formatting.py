"""How changes are written (reports/formatting.py, `change_text`, U2): a percentage only where
one reads, otherwise the two amounts, for money and for usage alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports.formatting import change_text

D = Decimal
Change = tuple[str, str]  # the text and its trend: "up", "down", "flat" or ""
VERSUS = "the same days of last month"


def _eur(now: str, before: str | int | None, versus: str = "Oct 2026", **kwargs: Any) -> Change:
    """`change_text` of two amounts in euros, written as strings (made Decimals here)."""
    previous = None if before is None else D(before)
    return change_text(D(now), previous, versus, currency="EUR", **kwargs)


def _usage(now: float, before: float, unit: str, decimals: int) -> Change:
    """`change_text` of two usage amounts in `unit`, against Oct 2026."""
    return change_text(now, before, "Oct 2026", unit=unit, decimals=decimals)


def test_a_tiny_base_writes_the_amounts_not_a_five_digit_percentage() -> None:
    # The demo team page's "+28041.4 % vs the same days of last month".
    assert _eur("26.28", "0.09", VERSUS) == (
        "EUR 26.28, up from EUR 0.09 in the same days of last month",
        "up",
    )
    assert _eur("0.05", "0.90") == ("EUR 0.05, down from EUR 0.90 in Oct 2026", "down")
    # Just under the base, even a small change is written as amounts.
    assert _eur("1.10", "0.99") == ("EUR 1.10, up from EUR 0.99 in Oct 2026", "up")


def test_a_normal_base_writes_a_percentage() -> None:
    assert _eur("12.34", "10.00") == ("+23.4 % vs Oct 2026", "up")
    assert _eur("18.00", "34.80", VERSUS) == ("-48.3 % vs the same days of last month", "down")
    # A base of exactly 1.00 reads; so does a change of exactly 999 %.
    assert _eur("1.50", "1.00")[0] == "+50.0 % vs Oct 2026"
    assert _eur("99.90", "10.00")[0] == "+899.0 % vs Oct 2026"
    assert _eur("109.90", "10.00")[0] == "+999.0 % vs Oct 2026"
    # The digests and alerts name the base a percentage is of.
    assert _eur("12.34", "10.00", with_base=True) == ("+23.4 % vs Oct 2026 (EUR 10.00)", "up")


def test_a_change_beyond_999_percent_writes_the_amounts_even_on_a_normal_base() -> None:
    assert _eur("110.00", "10.00") == ("EUR 110.00, up from EUR 10.00 in Oct 2026", "up")
    assert _eur("313088.37", "15572.79") == (
        "EUR 313,088.37, up from EUR 15,572.79 in Oct 2026",
        "up",
    )
    # with_base adds nothing to amounts: the base is in the text already.
    assert _eur("110.00", "10.00", with_base=True)[0] == "EUR 110.00, up from EUR 10.00 in Oct 2026"


def test_a_zero_base_is_new_since_and_nothing_to_nothing_is_no_change() -> None:
    assert _eur("26.28", 0) == ("new since Oct 2026", "up")
    assert _eur("0", 0) == ("no change", "flat")
    assert _usage(3.5, 0.0, "GPU-hours", 1) == ("new since Oct 2026", "up")


def test_an_unknown_previous_figure_writes_nothing() -> None:
    assert _eur("26.28", None) == ("", "")


def test_the_trend_keeps_its_meaning_and_what_reads_the_same_is_no_change() -> None:
    # Within 0.05 % of a normal base: no change.
    assert _eur("100.04", "100.00") == ("no change vs Oct 2026", "flat")
    # Amounts that are written the same: no change, rather than "EUR 0.09, up from EUR 0.09".
    assert _eur("0.091", "0.094") == ("no change vs Oct 2026", "flat")
    # A credit before (a negative base) is no base for a percentage: the amounts, and up.
    assert _eur("5.00", "-2.00") == ("EUR 5.00, up from EUR -2.00 in Oct 2026", "up")


def test_a_usage_change_on_a_tiny_base_writes_the_amounts_with_units() -> None:
    assert _usage(12.3, 0.1, "GPU-hours", 1) == (
        "12.3 GPU-hours, up from 0.1 GPU-hours in Oct 2026",
        "up",
    )
    assert _usage(0.25, 0.75, "GB-months", 2) == (
        "0.25 GB-months, down from 0.75 GB-months in Oct 2026",
        "down",
    )
    assert _usage(2500.0, 3.0, "images", 0) == ("2,500 images, up from 3 images in Oct 2026", "up")


def test_a_usage_change_on_a_normal_base_writes_a_percentage() -> None:
    assert _usage(12.0, 10.0, "GPU-hours", 1) == ("+20.0 % vs Oct 2026", "up")
    # Usage under the base whose amounts read the same as written: no change.
    assert _usage(0.04, 0.01, "GPU-hours", 1) == ("no change vs Oct 2026", "flat")
