"""A new connection's history, filled in by a real `qcluster` worker in the background
(issue 19, P15's bound for people, P21).

- A person's one-bucket report on the same OSAI account as a connection that is filling in
  its history is not held up: between its request and OSAI's answer to its POST /Reports,
  the history starts no more OSAI reports than the steps already in the broker plus the
  ones the workers were running (the backfill leaves OSAI_BACKGROUND_RESERVE slots free at
  the connection, the account and the person, and room in the queue). Its time, idle and
  beside the backfill, is P21's figure: measured, not asserted (it depends on the load).
- A backfill interrupted by worker kills (the failpoints) and by a whole-cluster kill resumes
  and completes without duplicates: one bucket per held period, one ledger row per bucket
  and price book, no extra OSAI report beyond the documented window.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from osai.sandbox import account_id_for_token
from reports.models import Bucket, LedgerEntry, Report
from reports.spend import tracking
from tests.factories import ensure_example_price_book, make_connection, make_user, request_report
from tests.support import figures
from tests.support.worker import FAST_PIPELINE_ENV, seconds_to_done, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

POST = "POST /api/Reports"


def _one_day(owner: Any, connection: Any, day: datetime) -> Report:
    return request_report(owner, [connection], period=(day, day + timedelta(days=1)))


def test_a_persons_report_on_the_account_of_a_backfilling_connection_is_not_held_up(
    use_sandbox: Any, worker: Any, settings: Any
) -> None:
    settings.OSAI_HELD_MONTHS = 12  # a small window: a year of months, days since last month
    settings.OSAI_HELD_DAYS_SINCE = "month"
    use_sandbox.set_latency(2.0)  # long enough that the history stays in flight meanwhile
    owner = make_user("backfiller")
    token = "osai-sandbox-backfill-account"
    account = account_id_for_token(token)
    # Two connections of one token: one OSAI account, one cap (F1).
    backfilling = make_connection(owner, "New", token=token, osai_account_id=account)
    mine = make_connection(owner, "Reports", token=token, osai_account_id=account)

    seconds_to_done(_one_day(owner, mine, datetime(2024, 1, 1, tzinfo=UTC)))  # signs in
    idle = seconds_to_done(_one_day(owner, mine, datetime(2024, 1, 2, tzinfo=UTC)))

    tracking.tracking_refresh(backfilling)  # a new connection: its history, in the background
    history = Bucket.objects.filter(connection=backfilling, background=True)
    wait_until(
        lambda: history.filter(state=Bucket.State.POLLING).count() >= 10,
        timeout=60,
        message="the history to have reports in flight at OSAI",
    )
    report = _one_day(owner, mine, datetime(2024, 1, 3, tzinfo=UTC))
    behind = seconds_to_done(report)
    waiting = history.exclude(state=Bucket.State.DONE).count()
    my_bucket = Bucket.objects.get(reports=report)
    started_ahead = history.filter(
        created_seen_at__gt=my_bucket.created_at, created_seen_at__lt=my_bucket.created_seen_at
    ).count()
    figures.figure("P21 one-bucket report on the account, idle (s)", round(idle, 2))
    figures.figure("P21 one-bucket report beside a backfill on its account (s)", round(behind, 2))
    figures.figure("P21 history buckets still waiting when it finished", waiting)
    figures.figure("P21 history reports started at OSAI ahead of the person's", started_ahead)
    assert waiting >= 10  # it really ran beside the backfill, not after it
    assert started_ahead <= settings.OSAI_QUEUE_DEPTH + int(FAST_PIPELINE_ENV["Q_WORKERS"])

    # The backfill completes, every held period once.
    wait_until(
        lambda: not history.exclude(state=Bucket.State.DONE).exists(),
        timeout=180,
        message="the history to be filled in",
    )
    closed, _ = tracking.tracked_periods(datetime.now(UTC))
    assert history.filter(is_closed=True).count() == len(closed)


def test_a_backfill_interrupted_by_worker_kills_resumes_without_duplicates(
    use_sandbox: Any, start_worker: Any, settings: Any
) -> None:
    """Kills at the failpoints (after a poll, after a download, after a create) and of the
    whole cluster mid-way: the history completes, one bucket per period, one ledger row per
    bucket and book; at most one extra OSAI report per kill after a create (Q1)."""
    settings.OSAI_HELD_MONTHS = 6
    settings.OSAI_HELD_DAYS_SINCE = "month"
    use_sandbox.set_latency(0.5)
    book = ensure_example_price_book()
    owner = make_user("interrupted")
    token = "osai-sandbox-backfill-interrupted"
    connection = make_connection(owner, "New", token=token)
    first = start_worker(OSAI_FAILPOINTS="after_poll=2,after_download=2,after_create=1")
    started = time.monotonic()
    tracking.tracking_refresh(connection)
    closed, open_day = tracking.tracked_periods(datetime.now(UTC))
    periods = len(closed) + (1 if open_day else 0)
    held = Bucket.objects.filter(connection=connection)
    wait_until(
        lambda: held.filter(state=Bucket.State.DONE).count() >= periods // 3,
        timeout=90,
        message="a third of the history",
    )
    first.kill()  # the whole cluster, mid-backfill
    start_worker()
    wait_until(
        lambda: not held.exclude(state=Bucket.State.DONE).exists(),
        timeout=180,
        message="the history to be filled in after the kills",
    )
    recovery = time.monotonic() - started
    assert held.count() == periods  # one bucket per held period (closed ones are unique)
    assert held.filter(is_closed=True).count() == len(closed)
    posts = use_sandbox.calls_with_token(token).get(POST, 0)
    extra = posts - periods
    # The failpoint after a create: one extra; the cluster kill: one per create in its window.
    assert 0 <= extra <= 1 + 16
    rows = LedgerEntry.objects.filter(bucket__connection=connection, price_book=book)
    per_bucket = {pk: n for pk, n in _counts(rows).items()}
    assert set(per_bucket.values()) == {1} and len(per_bucket) == periods
    figures.fault(
        "backfill: SIGKILL at failpoints and of the cluster",
        injected=6,
        survived=6,
        lost=0,
        duplicated=extra,
        recovery_seconds=recovery,
    )


def _counts(rows: Any) -> dict[int, int]:
    from django.db.models import Count

    return dict(rows.values("bucket_id").annotate(n=Count("pk")).values_list("bucket_id", "n"))
