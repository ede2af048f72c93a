"""The pipeline in a real `qcluster` worker against the real sandbox over a socket.

Workers are killed with SIGKILL at exact points (reports/pipeline/failpoints.py) and as a whole
cluster; every report must still complete, with no lost buckets and no extra OSAI reports
beyond the documented window (Q1: a kill after OSAI answered the POST, before our commit).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings

from reports import crypto
from reports.metrics import OSAI_FIELD_TO_COLUMN
from reports.models import Bucket, Report
from tests.factories import make_connection, make_user, request_report
from tests.support import figures
from tests.support.pipeline import direct_totals
from tests.support.worker import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

POST = "POST /api/Reports"


def request_year(
    user: Any, connection: Any, granularity: str = "month", year: int = 2025
) -> Report:
    return request_report(user, [connection], period=year_period(year), granularity=granularity)


def wait_terminal(report: Report, timeout: float = 60) -> Report:
    def terminal() -> bool:
        report.refresh_from_db()
        return report.is_terminal

    wait_until(terminal, timeout=timeout, message=f"report {report.pk} to finish")
    return report


def year_period(year: int = 2025) -> tuple[datetime, datetime]:
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def conn_token(connection: Any) -> str:
    return crypto.decrypt_secret(connection.token_encrypted)


def totals_of(report: Report) -> dict[str, float]:
    buckets = Bucket.objects.filter(report_buckets__report=report)
    return {f: sum(b.totals()[f] for b in buckets) for f in OSAI_FIELD_TO_COLUMN}


@pytest.fixture
def account(use_sandbox: Any) -> tuple[Any, Any]:
    use_sandbox.set_latency(0.5)
    user = make_user()
    return user, make_connection(user, "Main", token=f"osai-sandbox-worker-{user.username}")


def test_a_real_worker_completes_a_year_by_month_and_reuses_it(account, use_sandbox, worker):
    user, conn = account
    report = wait_terminal(request_year(user, conn))
    assert report.state == Report.State.DONE, report.error_message
    assert report.buckets_done == 12
    assert use_sandbox.calls(POST) == 12
    again = request_year(user, conn)
    assert again.state == Report.State.DONE  # every month closed and reused
    assert use_sandbox.calls(POST) == 12
    # The twelve monthly totals add up to OSAI's own answer for the whole year.
    expected = direct_totals(use_sandbox, conn_token(conn), *year_period())
    summed = totals_of(report)
    for field in OSAI_FIELD_TO_COLUMN:
        if field != "totalExistingImagesNum":  # a state at the period's end, not a sum
            assert summed[field] == expected[field], field


@pytest.mark.parametrize(
    ("point", "extra_posts_allowed"),
    [("after_create", 1), ("after_poll", 0), ("after_download", 0)],
)
def test_a_worker_killed_mid_step_loses_nothing(
    account, use_sandbox, start_worker, point, extra_posts_allowed
):
    """Q1 and Q2: SIGKILL right after POST returned, mid-poll, mid-download."""
    user, conn = account
    start_worker(OSAI_FAILPOINTS=f"{point}=2")
    started = time.monotonic()
    report = wait_terminal(request_year(user, conn, granularity="total"), timeout=90)
    recovery = time.monotonic() - started
    assert report.state == Report.State.DONE, report.error_message
    posts = use_sandbox.calls(POST)
    assert 1 <= posts <= 1 + 2 * extra_posts_allowed
    bucket = Bucket.objects.get(report_buckets__report=report)
    assert bucket.file.size_bytes > 0
    assert totals_of(report) == direct_totals(use_sandbox, conn_token(conn), *year_period())
    figures.fault(
        f"Q1/Q2 SIGKILL {point}",
        injected=2,
        survived=2,
        lost=0,
        duplicated=posts - 1,
        recovery_seconds=recovery,
    )


def test_the_whole_cluster_killed_and_restarted_finishes_every_report(
    account, use_sandbox, start_worker
):
    """Q3: kill -9 the whole cluster while a report is in flight; restart; it completes."""
    user, conn = account
    use_sandbox.set_latency(3)
    first = start_worker()
    report = request_year(user, conn)
    wait_until(lambda: use_sandbox.calls(POST) >= 6, timeout=30, message="reports created")
    first.kill()
    killed_at = time.monotonic()
    posts_at_kill = use_sandbox.calls(POST)
    start_worker()
    wait_terminal(report, timeout=120)
    recovery = time.monotonic() - killed_at
    assert report.state == Report.State.DONE, report.error_message
    lost = report.buckets_total - report.buckets_done
    broker = "Redis broker (Q4)" if settings.REDIS_URL else "ORM broker (Q3)"
    figures.fault(
        f"cluster SIGKILL, {broker}",
        survived=1 if not lost else 0,
        lost=lost,
        duplicated=use_sandbox.calls(POST) - 12,
        recovery_seconds=recovery,
    )
    assert use_sandbox.calls(POST) <= 12 + (12 - posts_at_kill) + 1
    assert lost == 0


def test_a_bucket_that_always_crashes_its_worker_stops_with_a_message(
    account, use_sandbox, start_worker
):
    """Q5: our own attempt limit, not django-q2's, ends it."""
    user, conn = account
    start_worker(OSAI_FAILPOINTS="step_start=1000")
    report = wait_terminal(request_year(user, conn, granularity="total"), timeout=120)
    assert report.state == Report.State.FAILED
    bucket = Bucket.objects.get(report_buckets__report=report)
    assert bucket.state == Bucket.State.ERROR
    assert "Gave up after" in bucket.error_message
    assert use_sandbox.calls(POST) == 0
    figures.fault("Q5 poison bucket", survived=1)
