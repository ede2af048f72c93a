"""The OSAI sandbox's usage model: deterministic, plausible and exactly additive.

Every sandbox account gets its own made-up history of OSAI usage from 2020-01-01 (UTC):
per UTC day, how many images it uploaded and deleted, how much it stored, and how many
seconds of manipulation, training, conversion, prediction and device rental it ran.
The history depends only on the account id (through SHA-256, never Python's `hash()`),
so every process and every run tells the same story.

Totals are differences of cumulative functions, `total(a, b) = C(b) - C(a)`, so for any
a < b < c the totals of [a, c) equal those of [a, b) plus [b, c) *exactly*. Within a day,
C pro-rates the day's amount by whole seconds with a floor, so C stays integer-valued.
KB-minutes are kept as integer sixteenths of a KB-minute (dyadic, so exact as floats) and
below 2**48 KB-minutes for the whole modelled range, so their float sums are exact too.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from osai import contract

USAGE_START: Final = datetime(2020, 1, 1, tzinfo=UTC)
# The model stops here: with at most 16 GiB stored per kind, 20 years of KB-minutes stay
# below 2**48 (see MAX_STORED_KB). Nothing happens after this instant.
MODEL_END: Final = datetime(2040, 1, 1, tzinfo=UTC)

SECONDS_PER_DAY: Final = 86_400
KB_MIN_SCALE: Final = 16  # KB-minutes are counted in sixteenths: exact binary fractions
MAX_STORED_KB: Final = 16 * 1024 * 1024  # 16 GiB of images, and as much of models

# OSAI's totals, in the order OSAI sends them, and what the model needs to know of them.
TOTAL_FIELDS: Final[tuple[str, ...]] = contract.TOTAL_FIELDS
# Every total but the image count, which is a state at the end of the period, not a sum.
_ADDITIVE: Final = tuple(t for t in contract.TOTALS if t.additive)
ADDITIVE_FIELDS: Final[tuple[str, ...]] = tuple(t.field for t in _ADDITIVE)
KB_MIN_FIELDS: Final[tuple[str, ...]] = tuple(
    t.field for t in contract.TOTALS if t.unit == contract.Unit.KB_MINUTES
)
FLAG_FIELDS: Final[tuple[str, ...]] = tuple(contract.FLAGS)
FLAG_METRICS: Final[Mapping[str, tuple[str, ...]]] = {
    flag: tuple(t.field for t in contract.totals_switched_on_by(flag)) for flag in contract.FLAGS
}

# The per-day amounts the model keeps, as integers (KB-minutes in sixteenths). Index 0 is
# uploads, which no report shows directly: existing images = uploads - deletions so far.
_UPLOADED = 0
_DAY_FIELDS: Final[tuple[str, ...]] = ("uploadedImages", *ADDITIVE_FIELDS)
_INDEX: Final[Mapping[str, int]] = {name: i for i, name in enumerate(_DAY_FIELDS)}
_MODEL_DAYS: Final = (MODEL_END - USAGE_START).days

Amounts = tuple[int, ...]
# Usage a test added to an account's days (`POST /__sandbox__/usage`): per UTC day, amounts
# of additive totals in the model's integer units (KB-minutes in sixteenths).
Added = Mapping[date, Mapping[str, int]]
# The most one injection may add to one total: keeps KB-minutes exact (below 2**48).
MAX_ADDED: Final = 2**40


def _seed(*parts: object) -> int:
    """A stable 64-bit seed: the same in every process, unlike `hash()`."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class _Traits:
    """What kind of OSAI user an account is; drawn once per account."""

    activity: float  # chance that a working day sees any work at all
    weekend_factor: float  # weekends are quieter by this factor
    share_16gb: float  # how often work lands on a 16 GB worker (0 for some accounts)
    rental_rate: float  # chance that a week has a rented edge device (0 for some)
    predict_rate: float  # chance that an active day runs predictions
    image_kb: int  # average stored size of one image
    max_images: int  # the dataset size the account never exceeds

    @classmethod
    def for_account(cls, account_id: str) -> _Traits:
        rng = random.Random(_seed("traits", account_id))
        image_kb = rng.randint(60, 900)
        return cls(
            activity=rng.uniform(0.35, 0.9),
            weekend_factor=rng.uniform(0.08, 0.35),
            share_16gb=0.0 if rng.random() < 0.15 else rng.uniform(0.08, 0.35),
            rental_rate=0.0 if rng.random() < 0.4 else rng.uniform(0.1, 0.6),
            predict_rate=rng.uniform(0.1, 0.6),
            image_kb=image_kb,
            # Keeps stored image KB within MAX_STORED_KB, and so KB-minutes within 2**48.
            max_images=min(rng.randint(15_000, 150_000), MAX_STORED_KB // image_kb),
        )


def _gpu_seconds(rng: random.Random, median_hours: float) -> int:
    """Spiky GPU time for one day: log-normal around the median, at most 8 hours."""
    hours = min(8.0, rng.lognormvariate(math.log(median_hours), 0.9))
    return int(hours * 3600)


class _History:
    """One account's per-day amounts and their prefix sums, built lazily and in order."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.traits = _Traits.for_account(account_id)
        self._lock = threading.Lock()
        self._days: list[Amounts] = []
        self._prefix: list[Amounts] = [(0,) * len(_DAY_FIELDS)]
        # What the account holds at the start of the next day to generate.
        self._images = 0
        self._models_kb = 0

    def cumulative(self, moment: datetime) -> Amounts:
        """C(moment): every per-day amount summed from USAGE_START up to `moment`."""
        elapsed = (moment - USAGE_START) // timedelta(seconds=1)  # floor, also when negative
        if elapsed <= 0:
            return self._prefix[0]
        day, second = divmod(elapsed, SECONDS_PER_DAY)
        if day >= _MODEL_DAYS:
            day, second = _MODEL_DAYS, 0
        self._ensure(day)
        base = self._prefix[day]
        if second == 0:
            return base
        amounts = self._days[day]
        return tuple(b + a * second // SECONDS_PER_DAY for b, a in zip(base, amounts, strict=True))

    def _ensure(self, day: int) -> None:
        needed = min(day + 1, _MODEL_DAYS)
        if len(self._days) >= needed:
            return
        with self._lock:
            while len(self._days) < needed:
                amounts = self._generate(len(self._days))
                # The prefix first: a reader that sees day n in _days finds prefix n + 1.
                self._prefix.append(
                    tuple(p + a for p, a in zip(self._prefix[-1], amounts, strict=True))
                )
                self._days.append(amounts)

    def _week(self, day_index: int) -> tuple[float, bool]:
        """How busy the (Monday-based) week is, and whether a device is rented in it."""
        week = (day_index + 2) // 7  # 2020-01-01 was a Wednesday
        rng = random.Random(_seed("week", self.account_id, week))
        busy = 0.1 if rng.random() < 0.08 else rng.lognormvariate(0.0, 0.5)  # holidays, crunches
        return busy, rng.random() < self.traits.rental_rate

    def _generate(self, index: int) -> Amounts:
        t = self.traits
        rng = random.Random(_seed("day", self.account_id, index))
        date = USAGE_START.date() + timedelta(days=index)
        busy, device_rented = self._week(index)
        chance = t.activity * min(busy, 1.0)
        if date.weekday() >= 5:
            chance *= t.weekend_factor
        if (date.month, date.day) >= (12, 23) or (date.month, date.day) <= (1, 2):
            chance *= 0.2  # the winter holidays
        active = rng.random() < chance

        manipulation = training_8 = training_16 = conversion_8 = conversion_16 = 0
        prediction_8 = prediction_16 = uploads = new_models_kb = 0
        if active:
            if rng.random() < 0.55:
                training_8 = _gpu_seconds(rng, median_hours=1.5)
            if rng.random() < t.share_16gb:
                training_16 = _gpu_seconds(rng, median_hours=1.0)
            trainings = (training_8 > 0) + (training_16 > 0)
            conversions = trainings + rng.choice((0, 0, 0, 1, 2))
            for _ in range(conversions):
                seconds = rng.randint(45, 900)
                if rng.random() < t.share_16gb:
                    conversion_16 += seconds
                else:
                    conversion_8 += seconds
            if rng.random() < 0.35:
                manipulation = min(4 * 3600, int(rng.lognormvariate(math.log(600), 1.0)))
            if rng.random() < t.predict_rate:
                if rng.random() < t.share_16gb:
                    prediction_16 = rng.randint(1, 60)
                else:
                    prediction_8 = rng.randint(1, 90)
            if rng.random() < 0.3:
                uploads = int(rng.lognormvariate(math.log(120), 1.1))
            # Trained models of 5-80 MB, converted ones of 1-20 MB.
            new_models_kb = trainings * rng.randint(5_000, 80_000)
            new_models_kb += conversions * rng.randint(1_000, 20_000)

        # Deletions only take images that existed when the day began: the pro-rated image
        # count, uploads minus deletions at any second of the day, can never go negative.
        images = self._images
        deletions = 0
        if images and rng.random() < (0.04 if active else 0.005):
            deletions = int(images * rng.uniform(0.005, 0.15))
        uploads = max(0, min(uploads, t.max_images - images + deletions))
        images_end = images + uploads - deletions

        models = self._models_kb
        if models and rng.random() < 0.02:
            models = int(models * rng.uniform(0.3, 0.7))  # an occasional clean-up
        models_end = min(models + new_models_kb, MAX_STORED_KB)

        # Stored KB x minutes over the day, counting what changed as held for half of it;
        # a random sixteenth keeps the values looking like OSAI's fractional doubles.
        images_kb_min = (images + images_end) * t.image_kb * 720 * KB_MIN_SCALE
        if images_kb_min:
            images_kb_min += rng.randrange(KB_MIN_SCALE)
        models_kb_min = (self._models_kb + models_end) * 720 * KB_MIN_SCALE
        if models_kb_min:
            models_kb_min += rng.randrange(KB_MIN_SCALE)

        rental = rng.randint(4 * 3600, SECONDS_PER_DAY) if device_rented else 0

        self._images = images_end
        self._models_kb = models_end
        amounts = {
            contract.DELETED_IMAGES: deletions,
            contract.IMAGES_KB_MIN: images_kb_min,
            contract.MODELS_KB_MIN: models_kb_min,
            contract.MANIPULATION_SECONDS: manipulation,
            contract.TRAINING_SECONDS_8GB: training_8,
            contract.TRAINING_SECONDS_16GB: training_16,
            contract.CONVERSION_SECONDS_8GB: conversion_8,
            contract.CONVERSION_SECONDS_16GB: conversion_16,
            contract.DEVICE_RENTAL_SECONDS: rental,
            contract.PREDICTION_SECONDS_8GB: prediction_8,
            contract.PREDICTION_SECONDS_16GB: prediction_16,
        }
        return (uploads, *(amounts[total] for total in _ADDITIVE))


@functools.lru_cache(maxsize=256)
def _history(account_id: str) -> _History:
    return _History(account_id)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes mean UTC, as in OSAI's requests."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _clip(moment: datetime, as_of: datetime | None) -> datetime:
    return moment if as_of is None else min(moment, _utc(as_of))


def parse_added(day: object, add: object) -> tuple[date, dict[str, int]]:
    """Check an injection (`POST /__sandbox__/usage`): a "YYYY-MM-DD" UTC day in the model's
    range and a non-empty object of OSAI's additive totals to non-negative numbers (whole ones
    but for KB-minutes). Returns the day and the amounts in the model's units (KB-minutes in
    sixteenths). Raises ValueError with every problem."""
    problems: list[str] = []
    parsed: date | None = None
    if isinstance(day, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            parsed = None
    if parsed is None:
        problems.append("day must be a date, YYYY-MM-DD")
    elif not USAGE_START.date() <= parsed < MODEL_END.date():
        problems.append(f"day must be from {USAGE_START.date()} to before {MODEL_END.date()}")
    amounts: dict[str, int] = {}
    if not isinstance(add, dict) or not add:
        problems.append(f"add must be an object of additive totals ({', '.join(ADDITIVE_FIELDS)})")
        add = {}
    for name, value in add.items():
        if name not in ADDITIVE_FIELDS:
            problems.append(f"unknown total {name!r}")
            continue
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_ok or not math.isfinite(value) or value < 0:
            problems.append(f"{name} must be a non-negative number")
        elif name not in KB_MIN_FIELDS and not float(value).is_integer():
            problems.append(f"{name} must be a whole number")
        elif value > MAX_ADDED:
            problems.append(f"{name} must be at most {MAX_ADDED}")
        else:
            scale = KB_MIN_SCALE if name in KB_MIN_FIELDS else 1
            amounts[name] = round(value * scale)
    if problems:
        raise ValueError("; ".join(problems))
    assert parsed is not None
    return parsed, amounts


def _added_between(added: Added, name: str, start: datetime, end: datetime) -> int:
    """What the injections add to one total over [start, end): each day's amount spread over
    its seconds like the model's own (a floor per second), so sums stay exactly additive."""
    result = 0
    for day, amounts in added.items():
        amount = amounts.get(name, 0)
        if not amount:
            continue
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)

        def cumulative(
            moment: datetime, amount: int = amount, day_start: datetime = day_start
        ) -> int:
            elapsed = (moment - day_start) // timedelta(seconds=1)
            return amount * min(max(elapsed, 0), SECONDS_PER_DAY) // SECONDS_PER_DAY

        result += cumulative(end) - cumulative(start)
    return result


def _raw_totals(
    history: _History, start: datetime, end: datetime, added: Added | None = None
) -> dict[str, int | float]:
    """All twelve totals of [start, end) with every flag on, injected usage included."""
    begin, finish = history.cumulative(start), history.cumulative(end)
    totals: dict[str, int | float] = {
        contract.EXISTING_IMAGES.field: finish[_UPLOADED]
        - finish[_INDEX[contract.DELETED_IMAGES.field]]
    }
    for name in ADDITIVE_FIELDS:
        i = _INDEX[name]
        amount = finish[i] - begin[i]
        if added:
            amount += _added_between(added, name, start, end)
        # Exact: a multiple of 1/16 below 2**48 fits a double's 53-bit mantissa.
        totals[name] = amount / KB_MIN_SCALE if name in KB_MIN_FIELDS else amount
    return {name: totals[name] for name in TOTAL_FIELDS}


def _apply_flags(totals: dict[str, int | float], flags: Mapping[str, bool] | None) -> None:
    if flags is None:
        return
    for flag, metrics in FLAG_METRICS.items():
        if not flags.get(flag, False):
            for name in metrics:
                totals[name] = 0.0 if name in KB_MIN_FIELDS else 0


def account_totals(
    account_id: str,
    period_from: datetime,
    period_to: datetime,
    flags: Mapping[str, bool] | None = None,
    *,
    as_of: datetime | None = None,
    added: Added | None = None,
) -> dict[str, int | float]:
    """The twelve totals of an OSAI report for [period_from, period_to), in OSAI's order.

    `flags` uses OSAI's names (`includeDatasets`, ...): None means all on; otherwise a
    missing flag is off, as in OSAI's request. Naive datetimes are UTC. `as_of` is when
    the report was made: usage after it has not happened yet (the sandbox passes the
    report's creation time, so a period that contains "now" is preliminary, like OSAI's).
    Seconds and image counts are ints, KB-minutes are floats; every total except
    `totalExistingImagesNum` (the count at the end of the period) is additive. `added`: usage
    injected into the account's days (`parse_added`), counted like the model's own.
    """
    start, end = _utc(period_from), _utc(period_to)
    if start > end:
        raise ValueError("period_from is after period_to")
    totals = _raw_totals(_history(account_id), _clip(start, as_of), _clip(end, as_of), added)
    _apply_flags(totals, flags)
    return totals


def existing_images_at(account_id: str, moment: datetime) -> int:
    """How many images the account holds at `moment` (uploads minus deletions so far)."""
    totals = _raw_totals(_history(account_id), _utc(moment), _utc(moment))
    return int(totals[contract.EXISTING_IMAGES.field])


def daily_breakdown(
    account_id: str,
    period_from: datetime,
    period_to: datetime,
    flags: Mapping[str, bool] | None = None,
    *,
    as_of: datetime | None = None,
    added: Added | None = None,
) -> list[dict[str, str | int | float]]:
    """Per UTC day of the period (clipped to it, and to `as_of`): the same twelve metrics.

    Keys drop OSAI's `total` prefix (`trainingSeconds8GB`, ...); `existingImagesNum` is
    the count at the end of that day's slice. The additive metrics sum to the totals.
    """
    start = _utc(period_from)
    end = _clip(_utc(period_to), as_of)
    history = _history(account_id)
    days: list[dict[str, str | int | float]] = []
    day_start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day_start < end:
        day_end = day_start + timedelta(days=1)
        totals = _raw_totals(history, max(start, day_start), min(end, day_end), added)
        _apply_flags(totals, flags)
        entry: dict[str, str | int | float] = {"date": day_start.date().isoformat()}
        for name, value in totals.items():
            short = name.removeprefix("total")
            entry[short[0].lower() + short[1:]] = value
        days.append(entry)
        day_start = day_end
    return days
