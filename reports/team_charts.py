"""Team charts: pure functions from plain data to a plotly Figure (drawn by static/js/charts.js)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

# The quiet look of reports/charts.py: no Plotly theme (it would ship ~10 KB of template JSON).
_LAYOUT = {
    "template": "none",
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13},
    "height": 360,
    "xaxis": {"type": "category", "automargin": True, "showgrid": False},
    "barmode": "stack",
    "margin": {"l": 48, "r": 16, "t": 40, "b": 40},
    "legend": {"orientation": "h", "y": -0.15},
    "hovermode": "x unified",
}


def team_member_bars(
    period_labels: Sequence[str],
    values_by_member: Mapping[str, Sequence[float]],
    *,
    unit: str,
    title: str,
) -> go.Figure:
    """Stacked bars over time, one trace per member, in `unit` (money or usage).

    Values are floats only for drawing; the table under the chart shows the exact figures.
    """
    figure = go.Figure()
    for member, values in values_by_member.items():
        figure.add_trace(
            go.Bar(
                name=member,
                x=list(period_labels),
                y=list(values),
                hovertemplate=f"%{{y:,.2f}} {unit}<extra>%{{fullData.name}}</extra>",
            )
        )
    figure.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        yaxis={"title": {"text": unit}, "automargin": True, "rangemode": "tozero"},
        **_LAYOUT,
    )
    return figure


def figure_data(figure: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data for a `json_script` data island (no inline script, CSP)."""
    data: dict[str, Any] = json.loads(figure.to_json())
    return data
