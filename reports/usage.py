"""Usage in display units, and a report's buckets summed per period.

OSAI reports seconds and KB-minutes; people read GPU-hours and GB-months
(1 GB = 1,048,576 KB; 1 month = 30 days = 43,200 minutes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from reports.models import OSAI_TOTAL_FIELDS, Bucket, Report

KB_PER_GB = 1_048_576
MINUTES_PER_MONTH = 43_200
SECONDS_PER_HOUR = 3_600

USAGE_COLUMNS: tuple[str, ...] = tuple(OSAI_TOTAL_FIELDS.values())


@dataclass(frozen=True)
class Metric:
    column: str  # Bucket column (OSAI raw unit)
    label: str
    unit: str  # display unit
    category: str  # the OSAI flag that turns it on
    divisor: float  # raw value / divisor = display value
    worker_class: str = ""  # "8 GB" / "16 GB" where OSAI splits it


METRICS: tuple[Metric, ...] = (
    Metric("training_seconds_8gb", "Training, 8 GB", "GPU-hours", "include_models", 3600, "8 GB"),
    Metric(
        "training_seconds_16gb", "Training, 16 GB", "GPU-hours", "include_models", 3600, "16 GB"
    ),
    Metric(
        "conversion_seconds_8gb", "Conversion, 8 GB", "GPU-hours", "include_models", 3600, "8 GB"
    ),
    Metric(
        "conversion_seconds_16gb", "Conversion, 16 GB", "GPU-hours", "include_models", 3600, "16 GB"
    ),
    Metric(
        "prediction_seconds_8gb",
        "Prediction, 8 GB",
        "GPU-hours",
        "include_predictions",
        3600,
        "8 GB",
    ),
    Metric(
        "prediction_seconds_16gb",
        "Prediction, 16 GB",
        "GPU-hours",
        "include_predictions",
        3600,
        "16 GB",
    ),
    Metric("manipulation_seconds", "Augmentation", "hours", "include_manipulations", 3600),
    Metric("device_rental_seconds", "Device rental", "hours", "include_rented_devices", 3600),
    Metric(
        "images_kb_min",
        "Image storage",
        "GB-months",
        "include_datasets",
        KB_PER_GB * MINUTES_PER_MONTH,
    ),
    Metric(
        "models_kb_min",
        "Model storage",
        "GB-months",
        "include_models",
        KB_PER_GB * MINUTES_PER_MONTH,
    ),
    Metric("existing_images", "Images existing", "images", "include_datasets", 1),
    Metric("deleted_images", "Images deleted", "images", "include_datasets", 1),
)
METRIC_BY_COLUMN = {m.column: m for m in METRICS}
COMPUTE_COLUMNS = tuple(c for c in USAGE_COLUMNS if c.endswith(("_8gb", "_16gb")))


def seconds_to_hours(seconds: float) -> float:
    return seconds / SECONDS_PER_HOUR


def kb_min_to_gb_months(kb_min: float) -> float:
    return kb_min / (KB_PER_GB * MINUTES_PER_MONTH)


def display_value(column: str, raw: float) -> float:
    return raw / METRIC_BY_COLUMN[column].divisor


@dataclass
class UsageRow:
    """Usage of one period, summed over the report's connections (raw OSAI units)."""

    period_start: datetime
    period_end: datetime
    preliminary: bool = False  # the open bucket: usage may still grow
    buckets: int = 0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE_COLUMNS, 0.0))

    def display(self, column: str) -> float:
        return display_value(column, self.totals[column])


def rows_from_buckets(buckets: Iterable[Bucket]) -> list[UsageRow]:
    """Sum finished buckets per period, in period order. Unfinished buckets are skipped."""
    rows: dict[tuple[datetime, datetime], UsageRow] = {}
    for bucket in buckets:
        if bucket.state != Bucket.State.DONE:
            continue
        key = (bucket.period_start, bucket.period_end)
        row = rows.setdefault(key, UsageRow(bucket.period_start, bucket.period_end))
        row.buckets += 1
        row.preliminary = row.preliminary or not bucket.is_closed
        for column in USAGE_COLUMNS:
            row.totals[column] += getattr(bucket, column) or 0.0
    return [rows[key] for key in sorted(rows)]


def report_buckets(report: Report) -> list[Bucket]:
    """The report's buckets with their connection, in one query (no files loaded)."""
    return list(
        Bucket.objects.filter(report_buckets__report=report)
        .select_related("connection")
        .order_by("period_start", "connection__label")
    )


def report_usage_rows(report: Report) -> list[UsageRow]:
    return rows_from_buckets(report_buckets(report))


def sum_rows(rows: Iterable[UsageRow]) -> dict[str, float]:
    """Totals over rows. Image counts existing are a state, so the last period's is taken."""
    totals = dict.fromkeys(USAGE_COLUMNS, 0.0)
    last_existing = 0.0
    for row in rows:
        for column in USAGE_COLUMNS:
            totals[column] += row.totals[column]
        last_existing = row.totals["existing_images"]
    totals["existing_images"] = last_existing
    return totals
