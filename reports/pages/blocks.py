"""A chart as a page shows it: its data island, its title and its data table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from reports.pages import charts


@dataclass(frozen=True)
class ChartBlock:
    """One chart for the template: its JSON data island id, the figure, its table."""

    id: str
    title: str
    wide: bool  # spans the page: the main chart of each view
    figure: dict[str, Any]
    table: charts.ChartTable | None
    empty_message: str


def chart_block(
    name: str, fig: go.Figure, *, wide: bool, table: charts.ChartTable | None = None
) -> ChartBlock:
    """A figure and its data table (by default the numbers the figure plots)."""
    return ChartBlock(
        id=f"figure-{name}",
        title=str(fig.layout.title.text or ""),
        wide=wide,
        figure=charts.figure_json(fig),
        table=table if table is not None else charts.figure_table(fig),
        empty_message=(fig.layout.meta or {}).get("message", "") if charts.is_empty(fig) else "",
    )
