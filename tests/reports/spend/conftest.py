"""Fixtures of the spend tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.receiver import Receiver

# 9:30 on Tuesday 3 March 2026: February is a closed month, March has two closed days and
# today's open one.
TRACKING_MORNING = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)


@pytest.fixture
def tracking_morning(use_sandbox: Any, fast: Any, queue: Any, time_machine: Any) -> datetime:
    """Tracking against the OSAI sandbox, its tasks run in this process (`queue`, `fast`
    timings), the clock moved to TRACKING_MORNING (it ticks on from there)."""
    time_machine.move_to(TRACKING_MORNING)
    return TRACKING_MORNING


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server that records what is posted to it (`receiver.url`, any path)."""
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def local(settings: Any) -> None:
    """Webhooks and channels may post to this machine (the receiver)."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
