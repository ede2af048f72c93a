"""The month-edge clock guard itself (tests/support/clock.py): it moves the test and its
fixtures to each edge, a test's own travel wins over it, and ours resumes afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from tests.support.clock import EDGES, is_guarded

pytestmark = pytest.mark.month_edges

MINUTE = timedelta(minutes=1)
FIXED = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def seen_by_a_fixture() -> datetime:
    return timezone.now()


def test_the_test_and_its_fixtures_run_at_the_edge(
    osai_clock: datetime | None, seen_by_a_fixture: datetime
) -> None:
    if osai_clock is None:  # [clock=now]: the real clock, not moved
        assert not time_machine.traveller_stack
        return
    assert osai_clock in EDGES
    assert osai_clock <= seen_by_a_fixture <= timezone.now() < osai_clock + MINUTE


def test_a_travel_of_the_tests_own_wins_and_the_edge_comes_back(
    osai_clock: datetime | None,
) -> None:
    with time_machine.travel(FIXED, tick=False):
        assert timezone.now() == FIXED
    if osai_clock is not None:
        assert osai_clock <= timezone.now() < osai_clock + MINUTE


def test_the_time_machine_fixture_wins_too(osai_clock: datetime | None, time_machine: Any) -> None:
    time_machine.move_to(FIXED, tick=False)
    assert timezone.now() == FIXED
    time_machine.move_to(FIXED + MINUTE, tick=False)
    assert timezone.now() == FIXED + MINUTE


def test_tests_of_other_processes_are_not_moved(request: pytest.FixtureRequest) -> None:
    node = request.node
    assert is_guarded(node, ["osai_clock"])
    assert not is_guarded(node, ["osai_clock", "sandbox"])  # the sandbox keeps the real clock
    node.add_marker(pytest.mark.worker)
    assert not is_guarded(node, ["osai_clock"])
