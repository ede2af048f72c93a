"""The month-edge clock guard: date-sensitive tests run again on the days months turn over.

The overview, budgets, forecasts, digests, tracking, periods, comparisons and exports all
start from "now". A test that passes on the 15th can fail on the 1st (the month has barely
begun: no closed day, a spend of almost nothing), on the 2nd (one closed day, no forecast
yet), on the last day (last month is shorter than this one) or on a leap day. So every test
of a guarded module, and every test marked `month_edges`, runs once at the real clock and
once at each of EDGES, under `time_machine.travel(edge, tick=True)` from before its first
function-scoped fixture until after its last: ids `[clock=now]`, `[clock=2029-01-01]` ….

- A test that travels itself (the `time_machine` fixture's `move_to`, `time_machine.travel`
  in the test or a fixture) keeps its own clock: its travel is started later, so it is on
  top of time-machine's stack and wins; ours resumes when it stops. A test with the
  `time_machine` marker is not moved at all (that marker's travel starts before ours).
- Tests marked `worker` or `browser` are never moved: the processes they start (a qcluster,
  gunicorn, the sandbox) keep the real clock, so such tests must take what they expect from
  the server's own figures.
- Nor is a test that uses the session's OSAI sandbox (the `sandbox` fixture, and so
  `osai_sandbox` and `use_sandbox`): that is another process on the real clock too, which
  refuses report periods ending in its future and signs JWTs and links that expire by its
  clock. Such tests of dates travel themselves, to days before the real one
  (tests/reports/test_tracking.py).
- The edges lie after every fixed date the tests' data uses (2026 and before), as the real
  clock does: a test of "Jan to Apr 2026, all closed" must not run on a day inside it.

`pytest --clock=2029-01-01T00:05` runs every in-process test (guarded or not) at one moment
instead: a search for date bugs outside the guarded modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine

# When each edge runs: the hour matters too (five minutes into a month nothing is spent yet).
EDGES: tuple[datetime, ...] = (
    # The 1st, five minutes in: nothing spent yet; last month is last year; a Monday, so the
    # weekly digest (of a week across the new year) is due with the monthly one.
    datetime(2029, 1, 1, 0, 5, tzinfo=UTC),
    datetime(2027, 3, 2, 0, 5, tzinfo=UTC),  # the 2nd: one closed day, no forecast yet
    datetime(2027, 3, 31, 23, 30, tzinfo=UTC),  # the last day, after a 28-day month
    datetime(2028, 2, 29, 12, 0, tzinfo=UTC),  # a leap day, the last of its month
)
MARKER = "month_edges"
# Test modules (by file name, wherever they sit under tests/) whose every test is guarded:
# spend, budgets, forecasts, digests, tracking, periods, comparisons, exports, and the views
# and commands that show them.
GUARDED_MODULES: frozenset[str] = frozenset(
    {
        "test_spend.py",
        "test_tracking.py",
        "test_periods.py",
        "test_comparison.py",
        "test_exports.py",
        "test_ledger.py",
        "test_downloads.py",
    }
)
# Tests of speed or memory on fixed data in guarded modules: the clock does not change what
# they measure, and four more runs of them would cost a minute.
UNGUARDED_TESTS: frozenset[str] = frozenset(
    {
        "test_export_memory_stays_flat_as_rows_grow",
        "test_a_report_whose_previous_period_holds_10000_daily_buckets_renders",
    }
)
# Processes of their own: the clock of this one does not reach them.
OTHER_PROCESSES = ("worker", "browser")
SANDBOX_FIXTURE = "sandbox"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--clock",
        default=None,
        metavar="ISO_DATETIME",
        help="run every in-process test at this UTC moment (time-machine, ticking)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: run the test at the real clock and again on the 1st, the 2nd and the last "
        "day of a month and on a leap day (tests/support/clock.py)",
    )


def _fixed_clock(config: pytest.Config) -> datetime | None:
    value = config.getoption("clock")
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _movable(node: Any, fixturenames: list[str]) -> bool:
    """False for a test whose other processes keep the real clock."""
    if any(node.get_closest_marker(m) for m in OTHER_PROCESSES):
        return False
    return SANDBOX_FIXTURE not in fixturenames and not node.get_closest_marker("time_machine")


def is_guarded(node: Any, fixturenames: list[str]) -> bool:
    """True for a test the guard runs at every edge."""
    if not _movable(node, fixturenames):
        return False
    if node.get_closest_marker(MARKER):
        return True
    name = getattr(node, "originalname", node.name)
    return Path(str(node.path)).name in GUARDED_MODULES and name not in UNGUARDED_TESTS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _fixed_clock(metafunc.config) is not None:
        return
    if not is_guarded(metafunc.definition, metafunc.fixturenames):
        return
    metafunc.parametrize(
        "osai_clock",
        [None, *EDGES],
        indirect=True,
        ids=["clock=now", *(f"clock={edge:%Y-%m-%d}" for edge in EDGES)],
    )


@pytest.fixture(autouse=True)
def osai_clock(request: pytest.FixtureRequest) -> Iterator[datetime | None]:
    """The moment the test runs at (None: the real clock). Autouse, so it is set up before
    the test's own function-scoped fixtures, which then see the edge too."""
    moment = getattr(request, "param", None) or _fixed_clock(request.config)
    if moment is None or not _movable(request.node, request.fixturenames):
        yield None
        return
    traveller = time_machine.travel(moment, tick=True)
    ours = traveller.start()
    try:
        yield moment
    finally:
        # time-machine stops whatever travel is on top of its stack: it must be ours.
        assert time_machine.traveller_stack[-1] is ours, "a travel started in the test leaked"
        traveller.stop()


def clock_held_at(moment: datetime) -> Callable[..., Iterator[None]]:
    """An autouse fixture holding the clock still at `moment` through each test of a module
    (`_frozen = clock_held_at(NOW)`), so what it shows has fixed dates. Started after
    `osai_clock`, this travel is on top and wins over a guard's edge."""

    @pytest.fixture(autouse=True)
    def held_clock() -> Iterator[None]:
        with time_machine.travel(moment, tick=False):
            yield

    return held_clock
