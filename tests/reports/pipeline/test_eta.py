"""How long OSAI takes (reports/pipeline/eta.py): the estimate, the polling schedule it
produces, and how a run of reports of one kind converges, with the pipeline's real back-off
(reports/pipeline/steps.py) for the first.

`simulate` plays one report: OSAI is ready `d` seconds after our POST was answered, and
every poll is answered `lateness` seconds after it was planned (the dispatcher and the
broker). It returns the polls made, the detection delay and the bracket the report records.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from reports.pipeline import eta
from reports.pipeline.eta import Estimate, Sample, estimate, sample_of, seconds_to_next_poll
from reports.pipeline.steps import _backoff_on_schedule, _poll_delay

pytestmark = pytest.mark.django_db(transaction=False)


def simulate(
    plan: Estimate | None, d: float, lateness: float = 0.0
) -> tuple[int, float, tuple[float, float]]:
    elapsed, polls, pending = 0.0, 0, None
    while True:
        elapsed += seconds_to_next_poll(plan, elapsed, polls, _poll_delay) + lateness
        polls += 1
        if elapsed >= d:
            return polls, elapsed - d, sample_of(pending, elapsed, plan)
        pending = elapsed
        assert polls < 200


def run_of_reports(ds: list[float], lateness: float = 0.0) -> list[tuple[int, float]]:
    """Reports of one kind in a row: (polls, detection delay) of each."""
    history: list[Sample] = []
    outcomes = []
    for d in ds:
        polls, delay, (low, high) = simulate(estimate(history), d, lateness)
        history.insert(0, Sample(low, high, polls))
        outcomes.append((polls, delay))
    return outcomes


def seed_loop(d: float) -> int:
    """The OSAI playbook's loop: a status poll every 2 s until done."""
    return int(-(-d // 2))


# --- The estimate ---


def test_no_history_means_no_estimate_and_the_back_off() -> None:
    assert estimate([]) is None
    for polls in range(5):
        assert seconds_to_next_poll(None, 3.0, polls, _poll_delay) == _poll_delay(polls)


def test_agreeing_brackets_intersect() -> None:
    plan = estimate([Sample(9.75, 10.0), Sample(9.0, 11.0)])
    assert plan == Estimate(low=9.75, high=10.0, samples=2)
    assert plan.narrow and plan.first_poll == 10.0


def test_a_slow_outlier_does_not_move_the_estimate() -> None:
    usual = [Sample(9.8, 10.0), Sample(9.8, 10.1), Sample(9.9, 10.05), Sample(9.7, 10.0)]
    plan = estimate([Sample(30.0, 31.0), *usual])
    assert plan is not None and 9.7 <= plan.low < plan.high <= 10.1


def test_a_fast_outlier_does_not_move_the_estimate() -> None:
    usual = [Sample(9.8, 10.0), Sample(9.8, 10.1), Sample(9.9, 10.05), Sample(9.7, 10.0)]
    plan = estimate([*usual[:2], Sample(0.0, 2.0), *usual[2:]])
    assert plan is not None and 9.7 <= plan.low < plan.high <= 10.1


def test_only_the_last_few_reports_count() -> None:
    old = [Sample(59.0, 60.0)] * 10
    recent = [Sample(9.5, 10.0)] * eta.WINDOW
    plan = estimate([*recent, *old])
    assert plan == Estimate(low=9.5, high=10.0, samples=eta.WINDOW)


def test_brackets_that_disagree_everywhere_still_give_an_interval() -> None:
    plan = estimate([Sample(12.0, 13.0), Sample(5.0, 6.0), Sample(13.0, 14.0)])
    assert plan is not None and 0 <= plan.low < plan.high


# --- The schedule ---


def test_a_narrow_estimate_is_one_poll_at_its_end() -> None:
    plan = Estimate(low=9.9, high=10.0, samples=3)
    assert seconds_to_next_poll(plan, 0.0, 0, _poll_delay) == pytest.approx(10.0)
    assert simulate(plan, d=9.95)[:2] == (1, pytest.approx(0.05))


def test_a_wide_estimate_is_walked_densely_and_gives_a_narrow_bracket() -> None:
    plan = Estimate(low=9.0, high=11.0, samples=1)
    polls, delay, (low, high) = simulate(plan, d=10.0)
    assert polls == 5  # 9, 9.25, 9.5, 9.75, 10
    assert delay == pytest.approx(0.0)
    assert high - low == pytest.approx(eta.DENSE_STEP_SECONDS)


def test_after_a_run_of_first_poll_finds_it_probes_earlier() -> None:
    found_at_once = [Sample(9.5, 10.0, polls=1)] * eta.PROBE_AFTER
    plan = estimate([*found_at_once, Sample(9.8, 10.0)])
    assert plan is not None and plan.probe
    assert seconds_to_next_poll(plan, 0.0, 0, _poll_delay) == pytest.approx(8.0)
    assert seconds_to_next_poll(plan, 8.0, 1, _poll_delay) == pytest.approx(2.0)  # then as planned
    assert not estimate([Sample(9.8, 10.0, polls=2), *found_at_once]).probe  # type: ignore[union-attr]


def test_past_the_estimate_it_falls_back_on_the_back_off() -> None:
    plan = Estimate(low=9.9, high=10.0, samples=3)
    assert seconds_to_next_poll(plan, 10.05, 1, _poll_delay) == _poll_delay(1)


def test_a_poll_that_finds_it_done_at_once_keeps_a_lower_end_below_the_plan() -> None:
    plan = Estimate(low=9.75, high=10.0, samples=3)
    assert sample_of(None, 10.0, plan) == (9.5, 10.0)
    assert sample_of(None, 8.0, plan) == (7.75, 8.0)  # a probe found it done early
    assert sample_of(None, 1.0, None) == (0.0, 1.0)  # first of a kind: nothing known below
    assert sample_of(9.9, 10.0, plan) == (9.9, 10.0)


@pytest.mark.parametrize(
    ("length", "kind"),
    [
        (timedelta(hours=6), (timedelta(0), timedelta(days=1))),
        (timedelta(days=1), (timedelta(0), timedelta(days=1))),
        (timedelta(days=28), (timedelta(days=7), timedelta(days=31))),
        (timedelta(days=31), (timedelta(days=7), timedelta(days=31))),
        (timedelta(days=365), (timedelta(days=92), timedelta(days=366))),
    ],
)
def test_bucket_lengths_make_kinds(length: timedelta, kind: tuple[timedelta, timedelta]) -> None:
    assert eta.length_class(length) == kind


# --- A run of reports of one kind (P13 in the small) ---


@pytest.mark.parametrize("d", [10.0, 60.0])
def test_the_third_report_of_a_kind_polls_a_third_as_often_as_the_seed_and_as_promptly(
    d: float,
) -> None:
    outcomes = run_of_reports([d] * 9, lateness=0.02)
    assert outcomes[0] == simulate(None, d, 0.02)[:2]  # the first: the back-off (P1)
    third_polls, _ = outcomes[2]
    assert third_polls <= seed_loop(d) / 3
    # From the third on, a probe now and then included (PROBE_AFTER): a third of the polls
    # on average, and never later than one dense step.
    later = outcomes[2:]
    assert sum(polls for polls, _ in later) / len(later) <= seed_loop(d) / 3
    assert all(delay <= eta.DENSE_STEP_SECONDS for _, delay in later)


def test_when_osai_speeds_up_the_estimate_follows() -> None:
    outcomes = run_of_reports([10.0] * 4 + [6.0] * 12, lateness=0.02)
    settled = outcomes[-3:]
    assert all(delay <= 0.5 for _, delay in settled)
    assert all(polls <= 3 for polls, _ in settled)


def test_when_osai_slows_down_the_estimate_follows() -> None:
    outcomes = run_of_reports([10.0] * 4 + [14.0] * 8, lateness=0.02)
    settled = outcomes[-3:]
    assert all(delay <= 0.25 for _, delay in settled)
    assert all(polls <= 2 for polls, _ in settled)


# --- The back-off, kept on its schedule (reports/pipeline/steps.py) ---


@pytest.mark.parametrize("d", [10.0, 60.0])
def test_the_back_off_does_not_add_up_each_polls_lateness(d: float) -> None:
    """Each poll answered 0.25 s after its moment: counted from the create the polls stay on
    the back-off's schedule (the one that sees OSAI done is 0.25 s after its moment, not
    0.25 s per poll), none comes before its moment, and there are no more of them (P1)."""
    lateness = 0.25
    ideal, moment = [], 0.0
    for n in range(100):
        moment += _poll_delay(n)
        ideal.append(moment)
        if moment >= d:
            break
    elapsed, polls, times = 0.0, 0, []
    while elapsed < d:
        step = _poll_delay(0) if polls == 0 else _backoff_on_schedule(elapsed, polls)
        elapsed += step + lateness
        polls += 1
        times.append(elapsed)
    assert polls == len(ideal)
    assert times == pytest.approx([t + lateness for t in ideal])
    # Counted from the previous poll instead, the lateness adds up.
    assert sum(_poll_delay(n) + lateness for n in range(polls)) - ideal[-1] == pytest.approx(
        lateness * polls
    )


def test_a_poll_far_behind_its_schedule_catches_up_at_half_the_interval() -> None:
    assert _backoff_on_schedule(500.0, 5) == _poll_delay(5) / 2
