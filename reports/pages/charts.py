"""Plotly figures of a report: one pure function per chart, plain data in, Figure out.

The functions take usage rows (reports/spend/usage.py, raw OSAI units summed per period) and,
for the cost view, one dict of money per row (reports/spend/pricing.py `row_costs`). They only
build bar, scatter and pie traces, the ones in the partial Plotly bundle the page loads.

The page does not use `Figure.to_html()`: it emits inline <script> tags, which the strict
Content-Security-Policy (script-src 'self') blocks. `figure_json()` gives the figure as
plain JSON for a `json_script` data island, and static/js/charts.js draws it.

Each figure keeps its display unit in `layout.meta`, so `figure_table()` can print the
same numbers as an HTML table under the chart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import plotly.graph_objects as go

from osai import contract
from reports.metrics import (
    CATEGORIES,
    METRIC_BY_COLUMN,
    METRICS,
    STORAGE_COLUMNS,
    display_value,
    metrics_in,
)
from reports.models import Granularity
from reports.spend.usage import UsageRow

DEVICE_RENTAL = next(m.column for m in METRICS if m.category == "device_rental")

EMPTY_MESSAGE = "No usage in this period"
EN_DASH = "\u2013"  # between the ends of a range; also the "no value" cell
PRELIMINARY_MARK = " *"  # appended to the label of the open (preliminary) period

# Colours come from the metric registry: one hue per kind of work, a darker shade for the
# 16 GB worker class.
TOTAL_COLOR = "#2f62b0"  # the cumulative spend line

# (column, name in the chart) per series.
COMPUTE_SERIES: tuple[tuple[str, str], ...] = tuple(
    (m.column, m.chart_label) for m in METRICS if m.total.worker_gb or m.category == "augmentation"
)
STORAGE_SERIES: tuple[tuple[str, str], ...] = tuple(
    (column, METRIC_BY_COLUMN[column].chart_label) for column in STORAGE_COLUMNS
)
IMAGE_SERIES: tuple[tuple[str, str], ...] = tuple(
    (m.column, m.chart_label) for m in METRICS if m.total.unit == contract.Unit.COUNT
)
# The share chart's slices: a category each, summing its columns. Compute hours in the usage
# view; every priced category in the cost view.
SPEND_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (c.label, tuple(m.column for m in metrics_in(c.key)))
    for c in CATEGORIES
    if any(m.priced for m in metrics_in(c.key))
)
COMPUTE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (label, columns)
    for label, columns in SPEND_CATEGORIES
    if all(column in dict(COMPUTE_SERIES) for column in columns)
)
CATEGORY_COLORS: dict[str, str] = {c.label: c.color for c in CATEGORIES}

COMPUTE_SUBTITLE = "GPU-hours for training, conversion and prediction; hours for augmentation"

RowCosts = Sequence[Mapping[str, Decimal]]  # one pricing.row_costs() dict per usage row


def _layout_defaults() -> dict[str, Any]:
    """Shared layout: a quiet look, legend below, room for long period labels."""
    return {
        "template": "none",
        "font": {
            "family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
            "size": 13,
            "color": "#1f2933",
        },
        "title": {"x": 0, "xanchor": "left", "font": {"size": 16}},
        "margin": {"l": 64, "r": 16, "t": 64, "b": 48},
        "height": 360,
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        # A vertical legend on the right: below the plot it collides with rotated period labels.
        "legend": {"x": 1.02, "y": 1, "yanchor": "top", "font": {"size": 12}},
        "hoverlabel": {"namelength": -1},
        "xaxis": {
            "type": "category",
            "automargin": True,
            "showgrid": False,
            "linecolor": "#9aa5b1",
            "ticks": "outside",
        },
        "yaxis": {
            "automargin": True,
            "gridcolor": "#e4e7eb",
            "zerolinecolor": "#9aa5b1",
            "rangemode": "tozero",
            "separatethousands": True,
        },
    }


def _figure(title: str, *, x_title: str, y_title: str, unit: str, decimals: int) -> go.Figure:
    fig = go.Figure(layout=_layout_defaults())
    fig.update_layout(
        title_text=title,
        xaxis_title_text=x_title,
        yaxis_title_text=y_title,
        meta={"unit": unit, "decimals": decimals, "x_title": x_title},
    )
    return fig


def empty_figure(title: str, message: str = EMPTY_MESSAGE) -> go.Figure:
    """A figure with no traces and a centred note, for a period without usage."""
    fig = go.Figure(layout=_layout_defaults())
    fig.update_layout(
        title_text=title,
        height=220,
        xaxis={"visible": False},
        yaxis={"visible": False},
        meta={"empty": True, "message": message},
        annotations=[
            {
                "text": message,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"size": 15, "color": "#52606d"},
            }
        ],
    )
    return fig


def is_empty(fig: go.Figure) -> bool:
    """True for a figure made by `empty_figure` (the template shows its message instead)."""
    return bool((fig.layout.meta or {}).get("empty"))


# --- Labels ------------------------------------------------------------------------------------


def _last_day(end: datetime) -> datetime:
    """The last day a period [start, end) touches: the day before a midnight end."""
    if end.hour == end.minute == end.second == end.microsecond == 0:
        return end - timedelta(days=1)
    return end


def period_label(start: datetime, end: datetime, granularity: str) -> str:
    """A short, unambiguous label for one bucket period (UTC dates, end inclusive)."""
    last = _last_day(end)
    if granularity == Granularity.DAY:
        return f"{start:%Y-%m-%d}"
    if granularity == Granularity.WEEK:
        return f"Week of {start:%Y-%m-%d}"
    if granularity == Granularity.MONTH:
        whole_month = start.day == 1 and (last + timedelta(days=1)).month != last.month
        if whole_month or (start.day == 1 and last.date() == end.date()):
            return f"{start:%b %Y}"  # a whole month, or the current month up to now
        return f"{start.day}{EN_DASH}{last.day} {last:%b %Y}"
    return f"{start:%Y-%m-%d} {EN_DASH} {last:%Y-%m-%d}"


def row_labels(rows: Sequence[UsageRow], granularity: str) -> list[str]:
    """The x labels of rows; the open period's label ends with PRELIMINARY_MARK."""
    return [
        period_label(r.period_start, r.period_end, granularity)
        + (PRELIMINARY_MARK if r.preliminary else "")
        for r in rows
    ]


X_TITLES: dict[str, str] = {
    Granularity.DAY.value: "Day (UTC)",
    Granularity.WEEK.value: "Week (UTC, from Monday)",
    Granularity.MONTH.value: "Month (UTC)",
}


def x_title(granularity: str) -> str:
    return X_TITLES.get(granularity, "Period (UTC)")


# --- Values ------------------------------------------------------------------------------------


def _values(rows: Sequence[UsageRow], column: str, costs: RowCosts | None) -> list[float]:
    """A column per row in display units, or its money (plotted as float, computed as Decimal)."""
    if costs is not None:
        return [float(c.get(column, Decimal(0))) for c in costs]
    return [r.display(column) for r in rows]


def _hover(unit: str, decimals: int) -> str:
    return f"%{{x}}<br>%{{y:,.{decimals}f}} {unit}<extra>%{{fullData.name}}</extra>"


def _money(currency: str) -> str:
    return currency or "money"


def _bars(
    title: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    x_title: str,
    y_title: str,
    unit: str,
    decimals: int = 2,
    colors: Mapping[str, str] | None = None,
    stacked: bool = True,
) -> go.Figure:
    """Bars, one trace per series (its name: a value per x label); empty when all are 0."""
    if not x_labels or not any(v for vs in series.values() for v in vs):
        return empty_figure(title)
    fig = _figure(title, x_title=x_title, y_title=y_title, unit=unit, decimals=decimals)
    for name, values in series.items():
        fig.add_trace(
            go.Bar(
                x=list(x_labels),
                y=list(values),
                name=name,
                marker_color=(colors or {}).get(name),
                hovertemplate=_hover(unit, decimals),
            )
        )
    fig.update_layout(barmode="stack" if stacked else "group")
    return fig


def _line(
    x: Sequence[str],
    y: Sequence[float],
    *,
    name: str,
    unit: str,
    color: str = TOTAL_COLOR,
    width: int = 3,
    dash: str = "",
    mode: str = "lines+markers",
) -> go.Scatter:
    """A line of money: by default a running total (spend accumulated day by day or period
    by period); dashed for the forecast, dotted for the budget."""
    return go.Scatter(
        x=x,
        y=y,
        name=name,
        mode=mode,
        line={"color": color, "width": width, **({"dash": dash} if dash else {})},
        hovertemplate=_hover(unit, 2),
    )


# --- The charts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageBars:
    """A chart of bars per period: usage in `unit`, one trace per series; in the cost view
    (given the rows' costs), what that usage cost, stacked. Called like a function:
    `compute_hours_figure(rows, granularity="month", costs=row_costs, currency="EUR")`.

    A chart without a `cost_title` is not priced: it shows usage in either view.
    """

    series: tuple[tuple[str, str], ...]  # (column, name in the chart)
    title: str
    unit: str
    cost_title: str = ""
    decimals: int = 2
    stacked: bool = True
    subtitle: str = ""  # under the usage view's title

    def __call__(
        self,
        rows: Sequence[UsageRow],
        *,
        granularity: str,
        costs: RowCosts | None = None,
        currency: str = "",
    ) -> go.Figure:
        if costs is not None and self.cost_title:
            title, y_title, unit, decimals = (
                self.cost_title,
                f"Cost ({_money(currency)})",
                currency,
                2,
            )
        else:
            costs = None
            title, y_title, unit, decimals = (
                self.title,
                self.unit[0].upper() + self.unit[1:],
                self.unit,
                self.decimals,
            )
        fig = _bars(
            title,
            row_labels(rows, granularity),
            {name: _values(rows, column, costs) for column, name in self.series},
            x_title=x_title(granularity),
            y_title=y_title,
            unit=unit,
            decimals=decimals,
            colors={name: METRIC_BY_COLUMN[column].color for column, name in self.series},
            stacked=self.stacked,
        )
        if costs is None and self.subtitle and not is_empty(fig):
            fig.update_layout(title_subtitle_text=self.subtitle)
        return fig


# Training, conversion and prediction (each 8 GB / 16 GB) and augmentation, stacked.
compute_hours_figure = UsageBars(
    COMPUTE_SERIES,
    title="Compute hours over time",
    unit="hours",
    cost_title="Compute cost over time",
    subtitle=COMPUTE_SUBTITLE,
)
# Hours of rented edge devices per period.
device_rental_figure = UsageBars(
    ((DEVICE_RENTAL, METRIC_BY_COLUMN[DEVICE_RENTAL].chart_label),),
    title="Device rental over time",
    unit="hours",
    cost_title="Device rental cost over time",
)
# Image and model storage per period, in GB-months (or their cost), stacked.
storage_figure = UsageBars(
    STORAGE_SERIES,
    title="Storage over time",
    unit="GB-months",
    cost_title="Storage cost over time",
    decimals=3,
)
# Images existing (at the end of each period) and deleted, side by side. Not priced.
images_figure = UsageBars(
    IMAGE_SERIES, title="Images existing and deleted", unit="images", decimals=0, stacked=False
)


def share_figure(
    rows: Sequence[UsageRow],
    *,
    costs: RowCosts | None = None,
    currency: str = "",
) -> go.Figure:
    """The share of compute hours by category; in the cost view, of all spend."""
    if costs is not None:
        title, unit, categories = "Share of spend by category", currency, SPEND_CATEGORIES
    else:
        title, unit, categories = "Share of compute hours by category", "hours", COMPUTE_CATEGORIES
    labels: list[str] = []
    values: list[float] = []
    for label, columns in categories:
        if costs is not None:
            total = float(
                sum((c.get(col, Decimal(0)) for c in costs for col in columns), Decimal(0))
            )
        else:
            total = sum(display_value(col, r.totals[col]) for r in rows for col in columns)
        if total > 0:
            labels.append(label)
            values.append(total)
    if not values:
        return empty_figure(title)
    fig = _figure(title, x_title="Category", y_title="", unit=unit, decimals=2)
    fig.add_trace(
        go.Pie(
            labels=labels,
            values=values,
            sort=False,
            hole=0.45,
            marker={"colors": [CATEGORY_COLORS[label] for label in labels]},
            textinfo="percent",
            textposition="inside",
            hovertemplate=f"%{{label}}<br>%{{value:,.2f}} {unit}<br>%{{percent}}<extra></extra>",
        )
    )
    # Slices too thin for a readable label keep their share in the hover and the table.
    fig.update_layout(
        xaxis={"visible": False},
        yaxis={"visible": False},
        uniformtext={"minsize": 11, "mode": "hide"},
    )
    return fig


def cumulative_cost_figure(
    rows: Sequence[UsageRow],
    costs: RowCosts,
    *,
    granularity: str,
    currency: str,
) -> go.Figure:
    """Spend accumulated period by period (the "total" of each row's costs)."""
    title = "Cumulative spend"
    running = Decimal(0)
    cumulative: list[float] = []
    for c in costs:
        running += c.get("total", Decimal(0))
        cumulative.append(float(running))
    if not rows or running == 0:
        return empty_figure(title)
    fig = _figure(
        title,
        x_title=x_title(granularity),
        y_title=f"Cost ({_money(currency)})",
        unit=currency,
        decimals=2,
    )
    labels = row_labels(rows, granularity)
    fig.add_trace(_line(labels, cumulative, name="Cumulative spend", unit=currency))
    return fig


def stacked_bars_figure(
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    unit: str,
    title: str,
    x_title: str,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Stacked bars, one trace per series: a team's spend per member by ML stage, or per
    member over time. Floats only for drawing; the table under the chart has the figures."""
    return _bars(title, x_labels, series, x_title=x_title, y_title=unit, unit=unit, colors=colors)


def month_spend_figure(
    day_labels: Sequence[str],
    daily: Sequence[float | None],
    *,
    currency: str,
    forecast: tuple[float, float, float] | None = None,
    budget: float | None = None,
) -> go.Figure:
    """This month day by day: bars of daily spend, the cumulative line, and from today to
    the month's end the forecast (dashed) inside its band, and the budget as a dotted line.

    `daily` has one entry per day of the month so far (None: not fetched yet); `forecast` is
    (value, low, high) at the month's end.
    """
    title = "Spend this month, day by day"
    known = [v for v in daily if v is not None]
    if not known and forecast is None:
        return empty_figure(title, "No usage fetched for this month yet")
    unit = _money(currency)
    fig = _figure(title, x_title="Day (UTC)", y_title=f"Cost ({unit})", unit=currency, decimals=2)
    shown = list(day_labels[: len(daily)])
    fig.add_trace(
        go.Bar(
            x=shown,
            y=[v if v is not None else 0.0 for v in daily],
            name="Daily spend",
            marker_color=CATEGORY_COLORS["Training"],
            hovertemplate=_hover(unit, 2),
        )
    )
    running, cumulative = 0.0, []
    for value in daily:
        running += value or 0.0
        cumulative.append(running)
    fig.add_trace(_line(shown, cumulative, name="Month to date", unit=unit))
    if forecast is not None:
        value, low, high = forecast
        x = [shown[-1], day_labels[-1]] if shown else [day_labels[0], day_labels[-1]]
        start = cumulative[-1] if cumulative else 0.0
        # The band: its invisible low edge, then its high edge filled down to the low one.
        band: dict[str, Any] = {
            "name": "Forecast band (80 %)",
            "mode": "lines",
            "line": {"color": "rgba(47, 98, 176, 0)", "width": 0},
            "hoverinfo": "skip",
        }
        fig.add_trace(go.Scatter(x=x, y=[start, low], showlegend=False, **band))
        fill = {"fill": "tonexty", "fillcolor": "rgba(47, 98, 176, 0.15)"}
        fig.add_trace(go.Scatter(x=x, y=[start, high], **fill, **band))
        forecast_line = _line(
            x, [start, value], name="Forecast (our estimate)", unit=unit, width=2, dash="dash"
        )
        fig.add_trace(forecast_line)
    if budget is not None:
        budget_line = _line(
            [day_labels[0], day_labels[-1]],
            [budget, budget],
            name="Budget",
            unit=unit,
            color="#b42318",
            width=2,
            dash="dot",
            mode="lines",
        )
        fig.add_trace(budget_line)
    fig.update_layout(xaxis={"categoryorder": "array", "categoryarray": list(day_labels)})
    return fig


# --- Output for the page -----------------------------------------------------------------------


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON-able data (numbers encoded by Plotly) for `json_script`."""
    data: dict[str, Any] = json.loads(fig.to_json())
    return data


@dataclass(frozen=True)
class ChartTable:
    """A chart's numbers as text, for the HTML table under it."""

    columns: list[str]
    rows: list[list[str]]


def _fmt(value: float | None, decimals: int) -> str:
    """Round half up, like costs.money, so a table never disagrees with a tile or the CSV."""
    if value is None:
        return EN_DASH
    exact = Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{exact:,.{decimals}f}"


def figure_table(fig: go.Figure) -> ChartTable | None:
    """The numbers a figure plots, one row per x value (or pie slice); None when empty."""
    if is_empty(fig) or not fig.data:
        return None
    meta = fig.layout.meta or {}
    unit, decimals = meta.get("unit", ""), int(meta.get("decimals", 2))
    suffix = f" ({unit})" if unit else ""
    first = fig.data[0]
    if first.type == "pie":
        values = [float(v) for v in first.values]
        total = sum(values) or 1.0
        return ChartTable(
            columns=["Category", f"Amount{suffix}", "Share"],
            rows=[
                [str(label), _fmt(v, decimals), f"{100 * v / total:.1f} %"]
                for label, v in zip(first.labels, values, strict=True)
            ],
        )
    x_values = list(first.x)
    columns = [str(meta.get("x_title", "Period")), *[f"{t.name}{suffix}" for t in fig.data]]
    table_rows = []
    for i, x in enumerate(x_values):
        table_rows.append([str(x), *[_fmt(float(t.y[i]), decimals) for t in fig.data]])
    return ChartTable(columns=columns, rows=table_rows)
