"""Fair turns in a real `qcluster` worker (F4, P15): one person's backlog of more than a
thousand OSAI reports does not hold up another person's one-bucket report.

What is asserted is the order of work, not the clock: between the light person's request and
OSAI's answer to its POST /Reports, the heavy person may start no more OSAI reports than the
steps that were already in the broker (OSAI_QUEUE_DEPTH) plus the ones the workers were
running. In arrival order it would wait behind a thousand. Its time from request to "done",
idle and behind the backlog, is recorded as P15's figure (a ratio; the time depends on the
machine's load, so it is measured, not asserted).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reports.models import Bucket, Report
from tests.factories import make_connection, make_user, request_report
from tests.support import figures
from tests.support.worker import FAST_PIPELINE_ENV, seconds_to_done, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SANDBOX_LATENCY = 0.5  # seconds OSAI takes to generate each report


def request_one_day(owner: Any, connection: Any, day: datetime) -> Report:
    return request_report(owner, [connection], period=(day, day + timedelta(days=1)))


def test_one_persons_backlog_does_not_hold_up_another_persons_one_bucket_report(
    use_sandbox: Any, worker: Any, settings: Any
) -> None:
    use_sandbox.set_latency(SANDBOX_LATENCY)
    light, heavy = make_user("light"), make_user("heavy")
    light_connection = make_connection(light, token="osai-sandbox-light-person")
    heavy_connections = [
        make_connection(heavy, token=f"osai-sandbox-heavy-person-{n}") for n in range(2)
    ]

    # Warm up (the first request signs in to OSAI), then time the idle pipeline.
    seconds_to_done(request_one_day(light, light_connection, datetime(2024, 1, 1, tzinfo=UTC)))
    idle = seconds_to_done(
        request_one_day(light, light_connection, datetime(2024, 1, 2, tzinfo=UTC))
    )

    # The heavy person asks for three years, day by day (one request a year: each request is
    # capped at a few hundred OSAI reports), over two connections.
    for year in (2021, 2022, 2023):
        year_period = (datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
        request_report(heavy, [heavy_connections[year % 2]], period=year_period, granularity="day")
    backlog = Bucket.objects.filter(connection__owner=heavy)
    assert backlog.count() >= 1000
    wait_until(
        lambda: backlog.filter(state=Bucket.State.POLLING).count() >= 16,
        timeout=60,
        message="the backlog to have reports in flight at OSAI",
    )

    report = request_one_day(light, light_connection, datetime(2024, 1, 3, tzinfo=UTC))
    behind = seconds_to_done(report)
    waiting = backlog.exclude(state=Bucket.State.DONE).count()
    light_bucket = Bucket.objects.get(reports=report)
    started_ahead = backlog.filter(
        created_seen_at__gt=light_bucket.created_at,
        created_seen_at__lt=light_bucket.created_seen_at,
    ).count()
    figures.figure("P15 one-bucket report, idle (s)", round(idle, 2))
    figures.figure("P15 one-bucket report behind 1,095 buckets (s)", round(behind, 2))
    figures.figure("P15 ratio behind / idle", round(behind / idle, 2))
    figures.figure("P15 backlog buckets still waiting when it finished", waiting)
    figures.figure("F4 backlog reports started at OSAI ahead of the light one", started_ahead)
    assert waiting > 500  # it really was behind a backlog, not after it
    assert started_ahead <= settings.OSAI_QUEUE_DEPTH + int(FAST_PIPELINE_ENV["Q_WORKERS"])
