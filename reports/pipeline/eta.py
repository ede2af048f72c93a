"""How long OSAI takes, learned from finished buckets: when to poll a report it is generating.

OSAI never says when a report will be ready. Each finished bucket tells us a bracket: OSAI
was still generating `pending` seconds after it answered our POST /Reports (the last poll
that said so) and was done by `ready` seconds (the poll that said so). Seconds are counted on
our clock from the POST's answer, so a clock difference with OSAI cancels out.

For one kind of report (one connection, one bucket length: a day, a week, a month …) the
last few brackets make an estimate, the interval (low, high]: OSAI is usually still working
at `low` and usually done by `high`. When the brackets agree, it is their intersection; when
they do not (OSAI's time varied, or one report was an outlier), their medians.

The polling schedule that follows (`seconds_to_next_poll`):

- no finished bucket of the kind yet: the back-off of reports/pipeline/steps.py, as before (P1);
- a narrow estimate (high - low <= NARROW_SECONDS): one poll at `high`;
- a wide one: polls from `low` up to `high`, DENSE_STEPS of them at most and never closer
  than NARROW_SECONDS, so this report's bracket is narrower than the estimate was;
- past `high` and still generating: the back-off again.

A poll at `high` that already finds the report done says only that OSAI was quicker than
`high`. Its bracket keeps the estimate's lower end moved down by the estimate's width, so
when OSAI speeds up the estimate widens after a few reports and learns the new time, rather
than polling late for ever.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = 5  # finished buckets of a kind that make its estimate
NARROW_SECONDS = 0.3  # an estimate this narrow is polled once, at its end
DENSE_STEP_SECONDS = 0.25  # the closest two polls across a wide estimate come
DENSE_STEPS = 8
# After this many reports in a row found done at their first poll, the next one first polls
# PROBE_EARLIER of the way earlier: if OSAI got quicker, only such a probe can tell.
PROBE_AFTER = 3
PROBE_EARLIER = 0.2
# Bucket lengths that make a kind: reports of a day and of a month take OSAI different times.
LENGTH_CLASSES: tuple[timedelta, ...] = (
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=31),
    timedelta(days=92),
    timedelta(days=366),
)


@dataclass(frozen=True)
class Sample:
    """One finished bucket: generating at `pending` s (0: never seen) and done by `ready` s,
    found after `polls` status polls."""

    pending: float
    ready: float
    polls: int = 2


@dataclass(frozen=True)
class Estimate:
    """OSAI is usually still generating at `low` seconds and done by `high`."""

    low: float
    high: float
    samples: int
    probe: bool = False  # poll first a little earlier than the estimate says (PROBE_AFTER)

    @property
    def narrow(self) -> bool:
        return self.high - self.low <= NARROW_SECONDS

    @property
    def step(self) -> float:
        """Gap between polls across a wide estimate."""
        return max(DENSE_STEP_SECONDS, (self.high - self.low) / DENSE_STEPS)

    @property
    def first_poll(self) -> float:
        planned = self.high if self.narrow else self.low
        return min(planned, self.high * (1 - PROBE_EARLIER)) if self.probe else planned


def estimate(samples: Sequence[Sample]) -> Estimate | None:
    """The estimate from a kind's finished buckets, newest first (None: no history)."""
    recent = list(samples[:WINDOW])
    if not recent:
        return None
    low = max(s.pending for s in recent)
    high = min(s.ready for s in recent)
    if low >= high:
        # The brackets do not overlap: OSAI's time varies, or one report was an outlier.
        low = statistics.median(s.pending for s in recent)
        high = statistics.median(s.ready for s in recent)
        if low >= high:
            spread = statistics.median(abs(s.ready - high) for s in recent)
            low = max(0.0, high - max(2 * spread, NARROW_SECONDS))
    probe = len(recent) >= PROBE_AFTER and all(s.polls == 1 for s in recent[:PROBE_AFTER])
    return Estimate(low=max(0.0, low), high=high, samples=len(recent), probe=probe)


def seconds_to_next_poll(
    plan: Estimate | None, elapsed: float, polls: int, backoff: Callable[[int], float]
) -> float:
    """Seconds from now to the next status poll of a report OSAI is still generating.

    `elapsed`: seconds since OSAI answered our POST; `polls`: status polls made so far;
    `backoff(polls)`: the pipeline's back-off, used without a plan and once past it.
    """
    if plan is None or elapsed >= plan.high:
        return backoff(polls)
    if polls == 0:
        return plan.first_poll - elapsed
    if plan.narrow or elapsed >= plan.high - plan.step:
        return plan.high - elapsed
    if elapsed < plan.low:
        return plan.low - elapsed
    steps_done = int((elapsed - plan.low) // plan.step) + 1
    return min(plan.low + steps_done * plan.step, plan.high) - elapsed


def sample_of(
    pending_seen: float | None, ready_seen: float, plan: Estimate | None
) -> tuple[float, float]:
    """The bracket a finished bucket records: (pending, ready) in seconds.

    With no pending poll, the lower end is what the plan believed, moved down by its width
    (see the module docstring); without a plan, 0.
    """
    if pending_seen is not None:
        return pending_seen, ready_seen
    if plan is None:
        return 0.0, ready_seen
    width = plan.high - plan.low
    return max(0.0, min(plan.low, ready_seen) - width), ready_seen


def length_class(length: timedelta) -> tuple[timedelta, timedelta]:
    """The range of bucket lengths treated as one kind, (shortest excluded, longest)."""
    shorter = timedelta(0)
    for bound in LENGTH_CLASSES:
        if length <= bound:
            return shorter, bound
        shorter = bound
    return shorter, timedelta(days=100_000)


# A step due this close to a report's expected_ready_at is the poll aimed at that moment: the
# only step the dispatcher sends ahead of its time, so it is on the spot when OSAI is done.
AIMED_TOLERANCE_SECONDS = 0.05


def is_aimed(due: datetime | None, expected: datetime | None) -> bool:
    """True if a step due at `due` is the poll aimed at the expected moment `expected`."""
    return (
        due is not None
        and expected is not None
        and abs((expected - due).total_seconds()) < AIMED_TOLERANCE_SECONDS
    )
