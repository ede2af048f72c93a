"""The metric registry: each OSAI total and each report flag, described once.

OSAI's side of a metric (its JSON field, raw unit, the flag that switches it on, the worker
class) is `osai.contract`; this module adds what the app makes of it: the Bucket column that
keeps it, its label, display unit and divisor, the category its tile and pie slice belong
to, the price-book rate that prices it, its ML stage, its colour and its CSV header.

Models, usage, pricing, charts, tiles, exports, forms and commands read this registry; the
Bucket's usage columns and the PriceBookVersion's rate columns are made from it
(reports/models.py). Adding a metric is one `Metric` entry plus a migration.

Display units: seconds become hours (GPU-hours on an 8 or 16 GB worker); KB-minutes become
GB-months (1 GB = 1,048,576 KB; 1 month = 30 days = 43,200 minutes); counts stay counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from osai import contract

KB_PER_GB: Final = 1_048_576
MINUTES_PER_MONTH: Final = 43_200  # 30 days
SECONDS_PER_HOUR: Final = 3_600
KB_MIN_PER_GB_MONTH: Final = KB_PER_GB * MINUTES_PER_MONTH

# Raw units per display unit.
DIVISORS: Final[dict[contract.Unit, int]] = {
    contract.Unit.COUNT: 1,
    contract.Unit.SECONDS: SECONDS_PER_HOUR,
    contract.Unit.KB_MINUTES: KB_MIN_PER_GB_MONTH,
}


# --- Report flags -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagSpec:
    """One of OSAI's five report flags, as the app names and explains it."""

    field: str  # the model field (Report and Bucket): include_datasets
    osai: contract.Flag
    label: str  # on the form
    help_text: str  # what it includes
    cli_name: str  # in `--flags datasets,models`


FLAGS: Final[tuple[FlagSpec, ...]] = (
    FlagSpec(
        "include_datasets",
        contract.Flag.DATASETS,
        "Datasets",
        "images and image storage",
        "datasets",
    ),
    FlagSpec(
        "include_manipulations",
        contract.Flag.MANIPULATIONS,
        "Augmentation",
        "manipulation hours",
        "manipulations",
    ),
    FlagSpec(
        "include_models",
        contract.Flag.MODELS,
        "Models",
        "training, conversion and model storage",
        "models",
    ),
    FlagSpec(
        "include_rented_devices",
        contract.Flag.RENTED_DEVICES,
        "Rented devices",
        "device rental hours",
        "rented_devices",
    ),
    FlagSpec(
        "include_predictions",
        contract.Flag.PREDICTIONS,
        "Predictions",
        "prediction hours",
        "predictions",
    ),
)
FLAG_FIELDS: Final[tuple[str, ...]] = tuple(flag.field for flag in FLAGS)
# A report's request as asked and its progress, each in one order for every place that lists
# a report's fields (the admin's read-only fields, the report-history CSV's columns).
REPORT_REQUEST_FIELDS: Final[tuple[str, ...]] = (
    "preset",
    "period_start",
    "period_end",
    "granularity",
    *FLAG_FIELDS,
)
REPORT_PROGRESS_FIELDS: Final[tuple[str, ...]] = (
    "state",
    "buckets_total",
    "buckets_done",
    "buckets_failed",
)
FLAG_BY_OSAI: Final[dict[contract.Flag, FlagSpec]] = {flag.osai: flag for flag in FLAGS}
FLAG_BY_CLI_NAME: Final[dict[str, FlagSpec]] = {flag.cli_name: flag for flag in FLAGS}


def to_osai_flags(flags: dict[str, bool]) -> dict[str, bool]:
    """Our flags (include_datasets …) under OSAI's names, for `POST /Reports`."""
    return {flag.osai.value: bool(flags[flag.field]) for flag in FLAGS}


def all_flags(on: bool = True) -> dict[str, bool]:
    return dict.fromkeys(FLAG_FIELDS, on)


def flags_on(flags: Mapping[str, bool]) -> dict[str, bool]:
    """The flags that are on, as a filter: a bucket that matches has at least these on (its
    flags are a superset), so it holds the usage these ask for, and maybe more."""
    return {name: True for name in FLAG_FIELDS if flags.get(name)}


# --- Categories: a tile each, a slice of the share chart ------------------------------------------


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    unit: str  # the display unit of its tile
    decimals: int  # of its tile
    color: str  # of its pie slice


CATEGORIES: Final[tuple[Category, ...]] = (
    Category("training", "Training", "GPU-hours", 1, "#2f62b0"),
    Category("conversion", "Conversion", "GPU-hours", 1, "#c9721c"),
    Category("prediction", "Prediction", "GPU-hours", 1, "#2e8b4f"),
    Category("augmentation", "Augmentation", "hours", 1, "#a58bd6"),
    Category("device_rental", "Device rental", "hours", 1, "#3aa5a0"),
    Category("image_storage", "Image storage", "GB-months", 2, "#5b8def"),
    Category("model_storage", "Model storage", "GB-months", 2, "#e07a5f"),
    Category("images_existing", "Images existing", "images", 0, "#4c78a8"),
    Category("images_deleted", "Images deleted", "images", 0, "#d6616b"),
)


# --- ML stages: data -> augmentation -> training -> conversion -> deployment ----------------------

# Model storage counts as training (training is what produces the stored models), so the stages
# add up to the total.
STAGE_LABELS: Final[dict[str, str]] = {
    "data": "Data (image storage)",
    "augmentation": "Augmentation",
    "training": "Training (incl. model storage)",
    "conversion": "Conversion",
    "deployment": "Deployment (devices + prediction)",
}


# --- The metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One OSAI total as the app keeps, shows, prices and exports it."""

    total: contract.Total
    column: str  # the Bucket column (raw OSAI unit, as received)
    label: str  # "Training, 8 GB"
    chart_label: str  # its name inside its chart ("Images" in the storage chart)
    category: str  # a Category key
    color: str
    csv_header: str  # of its display-unit value in CSV exports
    rate_field: str | None = None  # the PriceBookVersion rate that prices it; None: not priced
    stage: str | None = None  # its ML stage (a STAGE_LABELS key) when priced

    @property
    def osai_field(self) -> str:
        return self.total.field

    @property
    def flag(self) -> str:
        """The model field of the flag that switches it on (include_models …)."""
        return FLAG_BY_OSAI[self.total.flag].field

    @property
    def divisor(self) -> int:
        """Raw value / divisor = display value."""
        return DIVISORS[self.total.unit]

    @property
    def unit(self) -> str:
        """The display unit."""
        if self.total.unit == contract.Unit.SECONDS:
            return "GPU-hours" if self.total.worker_gb else "hours"
        if self.total.unit == contract.Unit.KB_MINUTES:
            return "GB-months"
        return "images"

    @property
    def worker_class(self) -> str:
        """ "8 GB" / "16 GB" where OSAI splits it by worker memory, else ""."""
        return f"{self.total.worker_gb} GB" if self.total.worker_gb else ""

    @property
    def priced(self) -> bool:
        return self.rate_field is not None

    @property
    def cost_header(self) -> str:
        """The CSV header of its cost (cost_training_8gb …); only for priced metrics."""
        assert self.rate_field is not None
        return "cost_" + self.rate_field.removesuffix("_per_hour").removesuffix("_per_gb_month")


# In the order pages and exports show them.
METRICS: Final[tuple[Metric, ...]] = (
    Metric(
        contract.TRAINING_SECONDS_8GB,
        "training_seconds_8gb",
        "Training, 8 GB",
        "Training, 8 GB",
        "training",
        "#7aa6e0",
        "training_8gb_gpu_hours",
        "training_8gb_per_hour",
        "training",
    ),
    Metric(
        contract.TRAINING_SECONDS_16GB,
        "training_seconds_16gb",
        "Training, 16 GB",
        "Training, 16 GB",
        "training",
        "#2f62b0",
        "training_16gb_gpu_hours",
        "training_16gb_per_hour",
        "training",
    ),
    Metric(
        contract.CONVERSION_SECONDS_8GB,
        "conversion_seconds_8gb",
        "Conversion, 8 GB",
        "Conversion, 8 GB",
        "conversion",
        "#f2b36b",
        "conversion_8gb_gpu_hours",
        "conversion_8gb_per_hour",
        "conversion",
    ),
    Metric(
        contract.CONVERSION_SECONDS_16GB,
        "conversion_seconds_16gb",
        "Conversion, 16 GB",
        "Conversion, 16 GB",
        "conversion",
        "#c9721c",
        "conversion_16gb_gpu_hours",
        "conversion_16gb_per_hour",
        "conversion",
    ),
    Metric(
        contract.PREDICTION_SECONDS_8GB,
        "prediction_seconds_8gb",
        "Prediction, 8 GB",
        "Prediction, 8 GB",
        "prediction",
        "#83c995",
        "prediction_8gb_gpu_hours",
        "prediction_8gb_per_hour",
        "deployment",
    ),
    Metric(
        contract.PREDICTION_SECONDS_16GB,
        "prediction_seconds_16gb",
        "Prediction, 16 GB",
        "Prediction, 16 GB",
        "prediction",
        "#2e8b4f",
        "prediction_16gb_gpu_hours",
        "prediction_16gb_per_hour",
        "deployment",
    ),
    Metric(
        contract.MANIPULATION_SECONDS,
        "manipulation_seconds",
        "Augmentation",
        "Augmentation",
        "augmentation",
        "#a58bd6",
        "manipulation_hours",
        "manipulation_per_hour",
        "augmentation",
    ),
    Metric(
        contract.DEVICE_RENTAL_SECONDS,
        "device_rental_seconds",
        "Device rental",
        "Device rental",
        "device_rental",
        "#3aa5a0",
        "device_rental_hours",
        "device_rental_per_hour",
        "deployment",
    ),
    Metric(
        contract.IMAGES_KB_MIN,
        "images_kb_min",
        "Image storage",
        "Images",
        "image_storage",
        "#5b8def",
        "image_storage_gb_months",
        "image_storage_per_gb_month",
        "data",
    ),
    Metric(
        contract.MODELS_KB_MIN,
        "models_kb_min",
        "Model storage",
        "Models",
        "model_storage",
        "#e07a5f",
        "model_storage_gb_months",
        "model_storage_per_gb_month",
        "training",
    ),
    Metric(
        contract.EXISTING_IMAGES,
        "existing_images",
        "Images existing",
        "Existing",
        "images_existing",
        "#4c78a8",
        "existing_images",
    ),
    Metric(
        contract.DELETED_IMAGES,
        "deleted_images",
        "Images deleted",
        "Deleted",
        "images_deleted",
        "#d6616b",
        "deleted_images",
    ),
)

METRIC_BY_COLUMN: Final[dict[str, Metric]] = {m.column: m for m in METRICS}
USAGE_COLUMNS: Final[tuple[str, ...]] = tuple(m.column for m in METRICS)
# OSAI field name -> Bucket column, in OSAI's order (how the pipeline stores an answer).
OSAI_FIELD_TO_COLUMN: Final[dict[str, str]] = {
    total.field: next(m.column for m in METRICS if m.total == total) for total in contract.TOTALS
}
# States at the end of a period (images existing), not sums over it.
STATE_COLUMNS: Final[tuple[str, ...]] = tuple(m.column for m in METRICS if not m.total.additive)
PRICED: Final[tuple[Metric, ...]] = tuple(m for m in METRICS if m.priced)
PRICED_COLUMNS: Final[tuple[str, ...]] = tuple(m.column for m in PRICED)
RATE_FIELDS: Final[tuple[str, ...]] = tuple(m.rate_field for m in PRICED if m.rate_field)
# GPU work on 8 / 16 GB workers: training, conversion, prediction.
COMPUTE_COLUMNS: Final[tuple[str, ...]] = tuple(m.column for m in METRICS if m.total.worker_gb)
TRAINING_COLUMNS: Final[tuple[str, ...]] = tuple(
    m.column for m in METRICS if m.category == "training"
)
PREDICTION_COLUMNS: Final[tuple[str, ...]] = tuple(
    m.column for m in METRICS if m.category == "prediction"
)
STORAGE_COLUMNS: Final[tuple[str, ...]] = tuple(
    m.column for m in METRICS if m.total.unit == contract.Unit.KB_MINUTES
)
STAGES: Final[dict[str, tuple[str, ...]]] = {
    stage: tuple(m.column for m in PRICED if m.stage == stage) for stage in STAGE_LABELS
}


def columns_off(flags: Mapping[str, bool]) -> tuple[str, ...]:
    """The usage columns whose flag is off in `flags`: usage a report did not ask for. A held
    bucket (every flag on) has them; under such a report they count as 0 (masked)."""
    return tuple(m.column for m in METRICS if not flags.get(m.flag))


def masked(totals: Mapping[str, float], off: Iterable[str]) -> dict[str, float]:
    """Totals with the columns in `off` (columns_off of a report's flags) set to 0."""
    result = dict(totals)
    for column in off:
        if column in result:
            result[column] = 0.0
    return result


def metrics_in(category: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS if m.category == category)


def display_value(column: str, raw: float) -> float:
    """A raw OSAI value of a column in its display unit (hours, GB-months, count)."""
    return raw / METRIC_BY_COLUMN[column].divisor
