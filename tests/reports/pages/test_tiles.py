"""The report page's KPI tiles (reports/pages/tiles.py): each tile's change is written by the
one rule (reports/formatting.py, `change_text`, U2), in money on the cost view and in usage
units otherwise."""

from __future__ import annotations

from decimal import Decimal

from reports.metrics import METRIC_BY_COLUMN, all_flags
from reports.models import Report
from reports.pages.tiles import tiles

HOUR = 3600.0
D = Decimal


def _totals(**values: float) -> dict[str, float]:
    return {column: 0.0 for column in METRIC_BY_COLUMN} | values


def _report() -> Report:
    return Report(**all_flags())  # not saved: the tiles read its flags only


def _changes(
    current: dict[str, float],
    previous: dict[str, float],
    money: dict[str, Decimal] | None = None,
    previous_money: dict[str, Decimal] | None = None,
) -> dict[str, tuple[str, str]]:
    """Each tile's change and trend against Oct 2026, by the tile's label."""
    found = tiles(
        _report(),
        current,
        previous,
        money=money,
        previous_money=previous_money,
        currency="EUR",
        versus="Oct 2026",
    )
    return {tile.label: (tile.change, tile.trend) for tile in found}


def test_report_tiles_on_a_tiny_base_write_money_amounts_and_a_percentage_otherwise() -> None:
    current = _totals(training_seconds_8gb=20 * HOUR, prediction_seconds_8gb=5 * HOUR)
    previous = _totals(training_seconds_8gb=0.1 * HOUR, prediction_seconds_8gb=4 * HOUR)
    changes = _changes(
        current,
        previous,
        money={"training_seconds_8gb": D("24.00"), "prediction_seconds_8gb": D("2.28"),
               "total": D("26.28")},
        previous_money={"training_seconds_8gb": D("0.12"), "prediction_seconds_8gb": D("1.90"),
                        "total": D("2.02")},
    )  # fmt: skip
    assert changes["Training"] == ("EUR 24.00, up from EUR 0.12 in Oct 2026", "up")
    assert changes["Prediction"] == ("+20.0 % vs Oct 2026", "up")
    # +1201 %, past 999 %: the amounts, though EUR 2.02 is a base that reads.
    assert changes["Total"][0] == "EUR 26.28, up from EUR 2.02 in Oct 2026"
    assert changes["Conversion"][0] == "no change"  # nothing before, nothing now


def test_report_tiles_on_a_tiny_base_write_usage_amounts_with_units() -> None:
    current = _totals(training_seconds_8gb=12.3 * HOUR, prediction_seconds_8gb=12 * HOUR)
    previous = _totals(training_seconds_8gb=0.1 * HOUR, prediction_seconds_8gb=10 * HOUR)
    changes = _changes(current, previous)
    assert changes["Training"] == ("12.3 GPU-hours, up from 0.1 GPU-hours in Oct 2026", "up")
    assert changes["Prediction"] == ("+20.0 % vs Oct 2026", "up")
