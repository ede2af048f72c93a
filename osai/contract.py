"""OSAI's report contract, written once: field names, flags, statuses and raw units.

Everything here is what OSAI itself defines (its API and the seed playbook); what this
project makes of it (labels, display units, prices, colours, CSV headers) lives in
`reports/metrics.py`, which refers to these entries. The sandbox (`osai/sandbox/`) and the
client (`osai/client.py`) read this module, so the emulator and the parser can never
disagree about a field name.

    POST /Users/SignIn   JSON string body (the access token) -> the JWT as text
    GET  /Users          -> who the token belongs to
    POST /Reports        {periodFrom, periodTo, include*} -> {id, creationTime, status: -1}
    GET  /Reports/{id}   status -1 (being created), 0 (generated: totals + `path`), 1 (error)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# --- Report status ----------------------------------------------------------------------------

STATUS_GENERATING: Final = -1
STATUS_DONE: Final = 0
STATUS_ERROR: Final = 1
STATUSES: Final = frozenset({STATUS_GENERATING, STATUS_DONE, STATUS_ERROR})

# --- Request fields ---------------------------------------------------------------------------

PERIOD_FROM: Final = "periodFrom"
PERIOD_TO: Final = "periodTo"  # exclusive


class Flag(StrEnum):
    """The five booleans of `POST /Reports`, in OSAI's request order. A flag that is off
    zeroes the totals it switches on (see `Total.flag`)."""

    DATASETS = "includeDatasets"
    MANIPULATIONS = "includeManipulations"
    MODELS = "includeModels"
    RENTED_DEVICES = "includeRentedDevices"
    PREDICTIONS = "includePredictions"


FLAGS: Final[tuple[Flag, ...]] = tuple(Flag)

# --- Totals of a finished report --------------------------------------------------------------


class Unit(StrEnum):
    """The raw unit OSAI reports a total in."""

    COUNT = "count"  # images
    SECONDS = "seconds"  # seconds of work on a worker or a rented device
    KB_MINUTES = "kb_minutes"  # kilobytes stored x minutes


@dataclass(frozen=True)
class Total:
    """One total of a finished report, as OSAI sends it."""

    field: str  # OSAI's JSON field name
    unit: Unit
    flag: Flag  # the request flag that switches it on
    worker_gb: int | None = None  # 8 or 16 where OSAI splits work by worker memory
    # Sums over sub-periods add up to the total of the whole period, except for the count of
    # images existing, which is a state at the end of the period.
    additive: bool = True


EXISTING_IMAGES: Final = Total("totalExistingImagesNum", Unit.COUNT, Flag.DATASETS, additive=False)
DELETED_IMAGES: Final = Total("totalDeletedImagesNum", Unit.COUNT, Flag.DATASETS)
IMAGES_KB_MIN: Final = Total("totalImagesKBMin", Unit.KB_MINUTES, Flag.DATASETS)
MODELS_KB_MIN: Final = Total("totalModelsKBMin", Unit.KB_MINUTES, Flag.MODELS)
MANIPULATION_SECONDS: Final = Total("totalManipulationSeconds", Unit.SECONDS, Flag.MANIPULATIONS)
TRAINING_SECONDS_8GB: Final = Total("totalTrainingSeconds8GB", Unit.SECONDS, Flag.MODELS, 8)
TRAINING_SECONDS_16GB: Final = Total("totalTrainingSeconds16GB", Unit.SECONDS, Flag.MODELS, 16)
CONVERSION_SECONDS_8GB: Final = Total("totalConversionSeconds8GB", Unit.SECONDS, Flag.MODELS, 8)
CONVERSION_SECONDS_16GB: Final = Total("totalConversionSeconds16GB", Unit.SECONDS, Flag.MODELS, 16)
DEVICE_RENTAL_SECONDS: Final = Total("totalDeviceRentalSeconds", Unit.SECONDS, Flag.RENTED_DEVICES)
PREDICTION_SECONDS_8GB: Final = Total(
    "totalPredictionSeconds8GB", Unit.SECONDS, Flag.PREDICTIONS, 8
)
PREDICTION_SECONDS_16GB: Final = Total(
    "totalPredictionSeconds16GB", Unit.SECONDS, Flag.PREDICTIONS, 16
)

# In the order OSAI sends them.
TOTALS: Final[tuple[Total, ...]] = (
    EXISTING_IMAGES,
    DELETED_IMAGES,
    IMAGES_KB_MIN,
    MODELS_KB_MIN,
    MANIPULATION_SECONDS,
    TRAINING_SECONDS_8GB,
    TRAINING_SECONDS_16GB,
    CONVERSION_SECONDS_8GB,
    CONVERSION_SECONDS_16GB,
    DEVICE_RENTAL_SECONDS,
    PREDICTION_SECONDS_8GB,
    PREDICTION_SECONDS_16GB,
)
TOTAL_FIELDS: Final[tuple[str, ...]] = tuple(total.field for total in TOTALS)
TOTAL_BY_FIELD: Final[dict[str, Total]] = {total.field: total for total in TOTALS}


def totals_switched_on_by(flag: Flag) -> tuple[Total, ...]:
    """The totals a request flag switches on (the others stay zero when only it is on)."""
    return tuple(total for total in TOTALS if total.flag == flag)


# --- Fields of a finished report besides the totals ------------------------------------------

ID: Final = "id"
STATUS: Final = "status"
CREATION_TIME: Final = "creationTime"  # .NET: 7 fractional digits ("…33.7629037Z")
READ: Final = "read"
PATH: Final = "path"  # a pre-signed storage URL (Expires=, Signature=): a secret
