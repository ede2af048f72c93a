"""The report page's KPI tiles (a tile per category of usage, or its money in the cost view,
with the change against the period compared with) and, in the cost view, the cost by ML stage,
the unit costs and the training what-if (8 GB vs 16 GB workers)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from reports import formatting
from reports.metrics import CATEGORIES, STAGE_LABELS, display_value, metrics_in
from reports.models import PriceBook, Report
from reports.pages import charts
from reports.spend import pricing
from reports.spend.usage import UsageRow


@dataclass(frozen=True)
class TileSpec:
    """A KPI tile: one category of the metric registry."""

    label: str
    columns: tuple[str, ...]
    unit: str
    flag: str
    priced: bool
    decimals: int


TILE_SPECS: tuple[TileSpec, ...] = tuple(
    TileSpec(
        label=category.label,
        columns=tuple(m.column for m in metrics_in(category.key)),
        unit=category.unit,
        flag=metrics_in(category.key)[0].flag,
        priced=any(m.priced for m in metrics_in(category.key)),
        decimals=category.decimals,
    )
    for category in CATEGORIES
)


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    unit: str  # a unit of usage after the value, or a currency before it
    detail: str  # the 8 GB / 16 GB split, or why there is no value
    change: str  # against the previous period (formatting.change_text), "" when unknown
    trend: str  # "up", "down", "flat" or "" (for the colour)
    included: bool
    is_money: bool = False


def tiles(
    report: Report,
    totals: dict[str, float],
    previous: dict[str, float] | None,
    *,
    money: pricing.Costs | None,
    previous_money: pricing.Costs | None,
    currency: str,
    versus: str,
) -> list[Tile]:
    """One tile per category: usage in display units, or money in the cost view."""
    tiles = []
    for spec in TILE_SPECS:
        if not getattr(report, spec.flag):
            tiles.append(Tile(spec.label, charts.EN_DASH, "", "not included", "", "", False))
            continue
        detail = ""
        if len(spec.columns) == 2:  # OSAI splits it by worker class
            gb8, gb16 = (display_value(c, totals[c]) for c in spec.columns)
            detail = f"8 GB {gb8:,.{spec.decimals}f} · 16 GB {gb16:,.{spec.decimals}f}"
        if money is not None and spec.priced:
            amount = sum((money.get(c, Decimal(0)) for c in spec.columns), Decimal(0))
            before = None
            if previous_money is not None:
                before = sum((previous_money.get(c, Decimal(0)) for c in spec.columns), Decimal(0))
            change, trend = formatting.change_text(amount, before, versus, currency=currency)
            detail = f"{detail} {spec.unit}" if detail else ""
            value = formatting.money(amount)
            tiles.append(Tile(spec.label, value, currency, detail, change, trend, True, True))
            continue
        usage = sum(display_value(c, totals[c]) for c in spec.columns)
        before_usage = None
        if previous is not None:
            before_usage = round(sum(display_value(c, previous[c]) for c in spec.columns), 6)
        change, trend = formatting.change_text(
            round(usage, 6), before_usage, versus, unit=spec.unit, decimals=spec.decimals
        )
        if money is not None:
            detail = "not priced"
        value = f"{usage:,.{spec.decimals}f}"
        tiles.append(Tile(spec.label, value, spec.unit, detail, change, trend, True))
    if money is not None:
        # The whole report's spend, rounded once, as the CSV's total is.
        total = money.get("total", Decimal(0))
        before_total = previous_money.get("total") if previous_money is not None else None
        change, trend = formatting.change_text(total, before_total, versus, currency=currency)
        value = formatting.money(total)
        tiles.insert(0, Tile("Total", value, currency, "all categories", change, trend, True, True))
    return tiles


@dataclass(frozen=True)
class StageView:
    """Cost by ML stage, unit costs, and the 8 GB vs 16 GB what-if, formatted."""

    stages: list[tuple[str, str, str]]  # label, money, share
    unit_costs: list[tuple[str, str]]  # what, money per unit (or "" when no usage)
    what_if: list[tuple[str, str, str]]  # label, money, change against actual


def ml_stages(
    rows: list[UsageRow],
    totals: dict[str, float],
    money: pricing.Costs,
    price_book: PriceBook | None,
) -> StageView:
    """The report's cost by ML stage (data, augmentation, training, conversion, deployment),
    its unit costs, and what its training would have cost all on 8 GB or all on 16 GB."""
    total = money.get("total", Decimal(0))
    stages = []
    for key, cost in pricing.stage_costs(money).items():
        share = f"{cost / total * 100:.1f} %" if total else charts.EN_DASH
        stages.append((STAGE_LABELS[key], formatting.money(cost), share))
    units = pricing.unit_costs(totals, money)
    labels = {
        "per_training_gpu_hour": "per training GPU-hour",
        "per_prediction_hour": "per prediction hour",
        "per_stored_gb_month": "per stored GB-month (images and models)",
    }
    unit_costs = [(labels[key], formatting.money(value)) for key, value in units.items()]
    what_if = pricing.training_what_if_rows(rows, price_book)
    actual = what_if["actual"]
    scenarios = [
        ("As it ran", actual),
        ("All training on 8 GB workers", what_if["all_on_8gb"]),
        ("All training on 16 GB workers", what_if["all_on_16gb"]),
    ]
    return StageView(
        stages=stages,
        unit_costs=unit_costs,
        what_if=[
            (
                label,
                formatting.money(value),
                f"{(value - actual) / actual * 100:+.1f} %" if actual and value != actual else "",
            )
            for label, value in scenarios
        ],
    )
