"""Chart functions: traces, stacking, values in display units, money, empty states, tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from reports.pages import charts
from reports.spend.usage import UsageRow
from tests.factories import usage

JAN, FEB, MAR, APR = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4))
GB_MONTH_KB_MIN = 1_048_576 * 43_200


def row(start: datetime, end: datetime, seed: int = 1, *, preliminary: bool = False) -> UsageRow:
    return UsageRow(start, end, preliminary=preliminary, buckets=1, totals=usage(seed))


@pytest.fixture
def rows() -> list[UsageRow]:
    return [row(JAN, FEB, 1), row(FEB, MAR, 2), row(MAR, APR, 3)]


def money(**values: str) -> dict[str, Decimal]:
    return {key: Decimal(value) for key, value in values.items()}


def test_compute_hours_are_stacked_bars_split_by_worker_class(rows: list[UsageRow]) -> None:
    fig = charts.compute_hours_figure(rows, granularity="month")
    assert fig.layout.barmode == "stack"
    assert [t.type for t in fig.data] == ["bar"] * 7
    assert [t.name for t in fig.data] == [
        "Training, 8 GB",
        "Training, 16 GB",
        "Conversion, 8 GB",
        "Conversion, 16 GB",
        "Prediction, 8 GB",
        "Prediction, 16 GB",
        "Augmentation",
    ]
    by_name = {t.name: list(t.y) for t in fig.data}
    # usage(seed): training 8 GB = 7200 s x seed, 16 GB = 3600 s x seed; augmentation 1800 s.
    assert by_name["Training, 8 GB"] == [2.0, 4.0, 6.0]
    assert by_name["Training, 16 GB"] == [1.0, 2.0, 3.0]
    assert by_name["Conversion, 16 GB"] == pytest.approx([300 / 3600, 600 / 3600, 900 / 3600])
    assert by_name["Augmentation"] == [0.5, 1.0, 1.5]
    assert list(fig.data[0].x) == ["Jan 2026", "Feb 2026", "Mar 2026"]
    assert fig.layout.title.text == "Compute hours over time"
    assert fig.layout.yaxis.title.text == "Hours"
    assert "GPU-hours" in fig.layout.title.subtitle.text
    assert fig.layout.xaxis.title.text == "Month (UTC)"
    assert "%{y:,.2f} hours" in fig.data[0].hovertemplate


def test_device_rental_in_hours(rows: list[UsageRow]) -> None:
    fig = charts.device_rental_figure(rows, granularity="month")
    assert len(fig.data) == 1
    assert list(fig.data[0].y) == [1.0, 2.0, 3.0]
    assert fig.layout.yaxis.title.text == "Hours"


def test_storage_in_gb_months_for_images_and_models(rows: list[UsageRow]) -> None:
    fig = charts.storage_figure(rows, granularity="month")
    assert [t.name for t in fig.data] == ["Images", "Models"]
    assert fig.layout.barmode == "stack"
    assert list(fig.data[0].y) == pytest.approx([5.0e9 * s / GB_MONTH_KB_MIN for s in (1, 2, 3)])
    assert list(fig.data[1].y) == pytest.approx([1.0e9 * s / GB_MONTH_KB_MIN for s in (1, 2, 3)])
    assert fig.layout.yaxis.title.text == "GB-months"


def test_images_existing_and_deleted_side_by_side(rows: list[UsageRow]) -> None:
    fig = charts.images_figure(rows, granularity="month")
    assert fig.layout.barmode == "group"
    assert {t.name: list(t.y) for t in fig.data} == {
        "Existing": [1001, 1002, 1003],
        "Deleted": [11, 12, 13],
    }


def test_share_of_compute_by_category(rows: list[UsageRow]) -> None:
    fig = charts.share_figure(rows)
    (pie,) = fig.data
    assert pie.type == "pie"
    assert list(pie.labels) == ["Training", "Conversion", "Prediction", "Augmentation"]
    # Training: (7200 + 3600) s x (1 + 2 + 3) = 18 h; conversion 900 s x 6 = 1.5 h;
    # prediction 180 s x 6 = 0.3 h; augmentation 1800 s x 6 = 3 h.
    assert list(pie.values) == pytest.approx([18.0, 1.5, 0.3, 3.0])


def test_share_leaves_out_categories_without_usage() -> None:
    only_training = UsageRow(JAN, FEB, buckets=1)
    only_training.totals["training_seconds_16gb"] = 7200
    (pie,) = charts.share_figure([only_training]).data
    assert list(pie.labels) == ["Training"]


def test_cost_view_plots_money_from_row_costs(rows: list[UsageRow]) -> None:
    costs = [
        money(training_seconds_8gb="10.50", training_seconds_16gb="1", total="11.50"),
        money(training_seconds_8gb="0", training_seconds_16gb="2.25", total="2.25"),
        money(training_seconds_8gb="3", total="3"),
    ]
    fig = charts.compute_hours_figure(rows, granularity="month", costs=costs, currency="EUR")
    assert fig.layout.title.text == "Compute cost over time"
    assert fig.layout.yaxis.title.text == "Cost (EUR)"
    by_name = {t.name: list(t.y) for t in fig.data}
    assert by_name["Training, 8 GB"] == [10.5, 0.0, 3.0]
    assert by_name["Training, 16 GB"] == [1.0, 2.25, 0.0]
    assert "%{y:,.2f} EUR" in fig.data[0].hovertemplate

    share = charts.share_figure(rows, costs=costs, currency="EUR")
    assert share.layout.title.text == "Share of spend by category"
    assert list(share.data[0].labels) == ["Training"]
    assert list(share.data[0].values) == [16.75]


def test_cumulative_spend_adds_up_period_by_period(rows: list[UsageRow]) -> None:
    costs = [money(total="1.10"), money(total="2.20"), money(total="0.05")]
    fig = charts.cumulative_cost_figure(rows, costs, granularity="month", currency="EUR")
    (line,) = fig.data
    assert line.type == "scatter" and line.mode == "lines+markers"
    assert list(line.y) == pytest.approx([1.10, 3.30, 3.35])
    assert list(line.x) == ["Jan 2026", "Feb 2026", "Mar 2026"]


@pytest.mark.parametrize(
    "build",
    [
        lambda r: charts.compute_hours_figure(r, granularity="day"),
        lambda r: charts.device_rental_figure(r, granularity="day"),
        lambda r: charts.storage_figure(r, granularity="day"),
        lambda r: charts.images_figure(r, granularity="day"),
        lambda r: charts.share_figure(r),
        lambda r: charts.cumulative_cost_figure(
            r, [money(total="0")] * len(r), granularity="day", currency="EUR"
        ),
    ],
    ids=["compute", "devices", "storage", "images", "share", "cumulative"],
)
@pytest.mark.parametrize("zero_rows", [0, 2], ids=["no-rows", "zero-usage"])
def test_empty_state_when_there_is_no_usage(build: object, zero_rows: int) -> None:
    rows = [UsageRow(JAN, FEB, buckets=1) for _ in range(zero_rows)]
    fig = build(rows)  # type: ignore[operator]
    assert charts.is_empty(fig)
    assert not fig.data
    assert fig.layout.annotations[0].text == "No usage in this period"
    assert charts.figure_table(fig) is None


def test_the_open_period_is_marked_preliminary() -> None:
    rows = [row(JAN, FEB), row(FEB, datetime(2026, 2, 10, 13, 5, tzinfo=UTC), preliminary=True)]
    fig = charts.compute_hours_figure(rows, granularity="month")
    assert list(fig.data[0].x) == ["Jan 2026", "Feb 2026 *"]


@pytest.mark.parametrize(
    ("start", "end", "granularity", "label"),
    [
        (JAN, FEB, "month", "Jan 2026"),
        (datetime(2026, 1, 15, tzinfo=UTC), FEB, "month", "15\u201331 Jan 2026"),
        (MAR, datetime(2026, 3, 11, tzinfo=UTC), "month", "1\u201310 Mar 2026"),
        (
            datetime(2026, 1, 5, tzinfo=UTC),
            datetime(2026, 1, 12, tzinfo=UTC),
            "week",
            "Week of 2026-01-05",
        ),
        (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC), "day", "2026-01-05"),
        (JAN, APR, "total", "2026-01-01 \u2013 2026-03-31"),
    ],
)
def test_period_labels(start: datetime, end: datetime, granularity: str, label: str) -> None:
    assert charts.period_label(start, end, granularity) == label


def test_table_under_a_bar_chart_has_one_row_per_period(rows: list[UsageRow]) -> None:
    table = charts.figure_table(charts.device_rental_figure(rows, granularity="month"))
    assert table is not None
    assert table.columns == ["Month (UTC)", "Device rental (hours)"]
    assert table.rows == [["Jan 2026", "1.00"], ["Feb 2026", "2.00"], ["Mar 2026", "3.00"]]


def test_table_under_the_images_chart_shows_whole_counts(rows: list[UsageRow]) -> None:
    table = charts.figure_table(charts.images_figure(rows, granularity="month"))
    assert table is not None
    assert table.rows[0] == ["Jan 2026", "1,001", "11"]


def test_table_under_the_pie_has_amounts_and_shares(rows: list[UsageRow]) -> None:
    table = charts.figure_table(charts.share_figure(rows))
    assert table is not None
    assert table.columns == ["Category", "Amount (hours)", "Share"]
    assert table.rows[0] == ["Training", "18.00", f"{100 * 18 / 22.8:.1f} %"]


def test_figure_json_is_plain_json_with_only_the_partial_bundles_trace_types(
    rows: list[UsageRow],
) -> None:
    costs = [money(total="1")] * 3
    figures = [
        charts.compute_hours_figure(rows, granularity="month"),
        charts.device_rental_figure(rows, granularity="month"),
        charts.storage_figure(rows, granularity="month"),
        charts.images_figure(rows, granularity="month"),
        charts.share_figure(rows),
        charts.cumulative_cost_figure(rows, costs, granularity="month", currency="EUR"),
    ]
    for fig in figures:
        data = charts.figure_json(fig)
        json.dumps(data)  # serialisable as is, for json_script
        assert {trace["type"] for trace in data["data"]} <= {"bar", "scatter", "pie"}
        assert data["layout"]["title"]["text"]
        # A small template of our own, not Plotly's default one of several KB.
        assert len(json.dumps(data["layout"])) < 3000


def test_tables_round_half_up_like_the_money_tiles_and_the_csv():
    from reports.pages.charts import _fmt

    # 10,700 s of device rental at 0.90/h is exactly 2.675: the tile and the CSV say 2.68.
    assert _fmt(2.675, 2) == "2.68"
    assert _fmt(1234567.125, 2) == "1,234,567.13"
    assert _fmt(None, 2) == "\u2013"  # an en dash
