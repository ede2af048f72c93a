"""Fair turns in a real `qcluster` worker (F4, P15): one person's backlog of more than a
thousand OSAI reports does not hold up another person's one-bucket report.

The one-bucket report is timed twice from the request to "done": once with the pipeline idle
and once behind the backlog. Behind the backlog it must finish within 1.5 x its idle time
plus one poll interval (the slowest poll the worker waits between two looks at OSAI).
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
POLL_INTERVAL = float(FAST_PIPELINE_ENV["OSAI_POLL_MAX_SECONDS"])


def request_one_day(owner: Any, connection: Any, day: datetime) -> Report:
    return request_report(owner, [connection], period=(day, day + timedelta(days=1)))


def test_one_persons_backlog_does_not_hold_up_another_persons_one_bucket_report(
    use_sandbox: Any, worker: Any
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

    behind = seconds_to_done(
        request_one_day(light, light_connection, datetime(2024, 1, 3, tzinfo=UTC))
    )
    waiting = backlog.exclude(state=Bucket.State.DONE).count()
    figures.figure("P15 one-bucket report, idle (s)", round(idle, 2))
    figures.figure("P15 one-bucket report behind 1,095 buckets (s)", round(behind, 2))
    figures.figure("P15 ratio behind / idle", round(behind / idle, 2))
    figures.figure("P15 backlog buckets still waiting when it finished", waiting)
    assert waiting > 500  # it really was behind a backlog, not after it
    assert behind <= 1.5 * idle + POLL_INTERVAL
