"""P15: fair turns on the bench's own worker (production timings, 2 worker processes).

Person B's one-bucket report is timed from its request to "done" (the report's own
requested_at and finished_at, as P4 does) twice per round: once on an idle pipeline and
once while person A has more than 1,000 buckets queued (three years, day by day, on two
fresh connections, so nothing can be reused). Interleaved idle / behind over P15_ROUNDS
rounds; the figure is the median of the per-round ratios. After each round A's reports
are cancelled and the pipeline drains, so the next idle time is really idle.

The approach is tests/e2e/test_fairness_worker.py's, but with the bench's production
timings (first poll after 1 s, then 2 s) instead of the tests' compressed ones.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.context import Bench, wait_for
from bench.data import make_connection, make_user, request_report
from bench.idle import wait_idle
from bench.pipeline import _wait_terminal, backoff
from bench.results import Results, fmt_ratios, median, ratios

P15_D = 2.0  # seconds OSAI takes per report: long enough that A always has reports in flight
P15_ROUNDS = 5
BACKLOG_YEARS = (2021, 2022, 2023)  # 1,095 daily buckets over A's two connections
IN_FLIGHT_BEFORE_B = 16  # A's backlog is really running at OSAI before B asks


def _seconds(report_id: int) -> float:
    """Request to done, from the report's own timestamps; waits for it to finish."""
    from reports.models import Report

    report = _wait_terminal(report_id, 180, interval=0.05)
    if report.state != Report.State.DONE:
        raise RuntimeError(f"B's report ended {report.state}: {report.error_message}")
    return float((report.finished_at - report.requested_at).total_seconds())


def _backlog(heavy: Any, round_no: int) -> list[Any]:
    """A's three one-year reports by day (a request is capped at 400 buckets), on two fresh
    connections; returns the reports."""
    connections = [make_connection(heavy, f"P15 heavy {round_no}-{n}")[0] for n in range(2)]
    return [
        request_report(
            heavy,
            connections[year % 2],
            datetime(year, 1, 1, tzinfo=UTC),
            datetime(year + 1, 1, 1, tzinfo=UTC),
            "day",
        )
        for year in BACKLOG_YEARS
    ]


def run_p15(bench: Bench, results: Results) -> None:
    from reports.models import Bucket, Report
    from reports.pipeline import report_requests

    bench.osai_takes(P15_D)
    wait_idle()
    light = make_user(f"p15-light-{secrets.token_hex(3)}")
    heavy = make_user(f"p15-heavy-{secrets.token_hex(3)}")
    light_connection, _ = make_connection(light, "P15 light")
    day = datetime(2024, 1, 1, tzinfo=UTC)

    def one_bucket() -> float:
        nonlocal day
        report = request_report(light, light_connection, day, day + timedelta(days=1), "total")
        day += timedelta(days=1)  # a new closed day each time: nothing to reuse
        return _seconds(report.pk)

    one_bucket()  # warm-up: the first request signs in to OSAI
    idle, behind, backlog_sizes, still_waiting = [], [], [], []
    for n in range(P15_ROUNDS):
        wait_idle(timeout=180)
        idle.append(one_bucket())
        reports = _backlog(heavy, n)
        queued = Bucket.objects.filter(report_buckets__report__in=reports).distinct()
        backlog_sizes.append(queued.count())
        wait_for(
            lambda q=queued: q.filter(state=Bucket.State.POLLING).count() >= IN_FLIGHT_BEFORE_B,
            60,
            "A's backlog to have reports in flight at OSAI",
            0.1,
        )
        behind.append(one_bucket())
        still_waiting.append(queued.exclude(state__in=Bucket.TERMINAL_STATES).count())
        for report in Report.objects.filter(pk__in=[r.pk for r in reports]):
            report_requests.report_cancel(report=report)
    wait_idle(timeout=180)

    add_turn_results(
        results,
        "P15",
        P15_D,
        idle,
        behind,
        relation="behind",
        idle_label=f"B's one-bucket report, idle (s, per round, D={P15_D:g} s)",
        busy_label="B's one-bucket report behind A's backlog (s, per round)",
        waiting_label="A's backlog per round: buckets queued / still waiting when B finished",
        waiting=", ".join(f"{q} / {s}" for q, s in zip(backlog_sizes, still_waiting, strict=True)),
        goal="≤ 1.5 x idle + W",
    )


def add_turn_results(
    results: Results,
    goal_id: str,
    d: float,
    idle: list[float],
    busy_times: list[float],
    *,
    relation: str,
    idle_label: str,
    busy_label: str,
    waiting_label: str,
    waiting: str,
    goal: str,
) -> None:
    """The figures of a person's one-bucket report timed per round on an idle pipeline
    (`idle`) and on a busy one (`busy_times`: P15 behind another person's backlog, P21
    beside a history on the same account): the times, what still waited (`waiting`), and the
    median of the per-round ratios `relation` / idle against the bound."""
    _, w, _ = backoff(d)
    per_round = ratios(busy_times, idle)
    # The goal's bound, per round: 1.5 x that round's idle time + one poll interval (W, the
    # worker's interval in force when OSAI finishes at D), as a ratio to the idle time.
    bounds = [(1.5 * i + w) / i for i in idle]
    results.add(goal_id, idle_label, ", ".join(f"{t:.2f}" for t in idle))
    results.add(goal_id, busy_label, ", ".join(f"{t:.2f}" for t in busy_times))
    results.add(goal_id, waiting_label, waiting)
    results.add(goal_id, f"per-round ratios {relation} / idle", fmt_ratios(per_round))
    results.median_at_most(
        goal_id,
        f"{relation} / idle (median of {len(per_round)}), bound 1.5 + W/idle with W = {w:g} s",
        per_round,
        median(bounds),
        goal=goal,
        detail=f" (bound {median(bounds):.2f}; worst round {max(per_round):.2f})",
    )
