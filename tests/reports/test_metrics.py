"""The metric registry (reports/metrics.py): one entry per OSAI total, read by everything else."""

from __future__ import annotations

from osai import contract
from reports.metrics import (
    CATEGORIES,
    FLAG_FIELDS,
    FLAGS,
    METRICS,
    OSAI_FIELD_TO_COLUMN,
    PRICED,
    RATE_FIELDS,
    STAGE_LABELS,
    STAGES,
    USAGE_COLUMNS,
    display_value,
    to_osai_flags,
)
from reports.models import Bucket, PriceBookVersion, Report
from reports.pages import charts
from reports.pages.tiles import TILE_SPECS
from reports.spend import exports, pricing


def test_every_osai_total_has_exactly_one_metric_and_one_bucket_column() -> None:
    assert sorted(m.total.field for m in METRICS) == sorted(contract.TOTAL_FIELDS)
    assert list(OSAI_FIELD_TO_COLUMN) == list(contract.TOTAL_FIELDS)  # OSAI's order
    bucket_columns = {f.name for f in Bucket._meta.get_fields()}
    assert set(USAGE_COLUMNS) <= bucket_columns
    assert len(set(USAGE_COLUMNS)) == len(METRICS)
    for column in USAGE_COLUMNS:
        assert Bucket._meta.get_field(column).get_internal_type() == "FloatField"


def test_every_priced_metric_has_a_rate_column_and_a_stage() -> None:
    rate_columns = {f.name for f in PriceBookVersion._meta.get_fields()}
    assert set(RATE_FIELDS) <= rate_columns
    assert len(RATE_FIELDS) == len(PRICED) == len(pricing.RATES)
    assert all(m.stage in STAGE_LABELS for m in PRICED)
    staged = [column for columns in STAGES.values() for column in columns]
    assert sorted(staged) == sorted(m.column for m in PRICED)  # stages add up to the total


def test_display_units_follow_the_raw_unit() -> None:
    by_column = {m.column: m for m in METRICS}
    assert display_value("training_seconds_16gb", 7200) == 2.0
    assert by_column["training_seconds_16gb"].unit == "GPU-hours"
    assert by_column["manipulation_seconds"].unit == "hours"
    assert display_value("images_kb_min", 1_048_576 * 43_200) == 1.0
    assert by_column["images_kb_min"].unit == "GB-months"
    assert display_value("existing_images", 20356) == 20356
    assert by_column["training_seconds_8gb"].worker_class == "8 GB"


def test_flags_map_to_osai_and_switch_on_their_metrics() -> None:
    assert tuple(f.name for f in Report._meta.get_fields() if f.name in FLAG_FIELDS) == FLAG_FIELDS
    assert [f.osai for f in FLAGS] == list(contract.FLAGS)
    ours = dict.fromkeys(FLAG_FIELDS, True) | {"include_models": False}
    assert to_osai_flags(ours) == {
        "includeDatasets": True,
        "includeManipulations": True,
        "includeModels": False,
        "includeRentedDevices": True,
        "includePredictions": True,
    }
    assert {m.column for m in METRICS if m.flag == "include_models"} == {
        "training_seconds_8gb",
        "training_seconds_16gb",
        "conversion_seconds_8gb",
        "conversion_seconds_16gb",
        "models_kb_min",
    }


def test_tiles_charts_and_exports_read_the_registry() -> None:
    assert [t.label for t in TILE_SPECS] == [c.label for c in CATEGORIES]
    tiled = sorted(column for tile in TILE_SPECS for column in tile.columns)
    assert tiled == sorted(USAGE_COLUMNS)
    header = exports.export_columns(team=False, with_cost=True)
    assert all(m.csv_header in header and m.osai_field in header for m in METRICS)
    assert all(m.cost_header in header for m in PRICED)
    assert len(header) == len(set(header))
    charted = {column for column, _ in (*charts.COMPUTE_SERIES, *charts.STORAGE_SERIES)}
    assert charted | {column for column, _ in charts.IMAGE_SERIES} | {charts.DEVICE_RENTAL} == set(
        USAGE_COLUMNS
    )
