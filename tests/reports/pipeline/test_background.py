"""Background work below people (issue 19): tracking's buckets (a new connection's history,
the hourly refresh) are served after everything people asked for, newest period first, and
only in the slots people leave free: OSAI_BACKGROUND_RESERVE stays free at the connection, the
OSAI account and the person, and in the broker's queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from reports.models import Bucket
from reports.pipeline import dispatcher
from reports.pipeline.dispatcher import _Due, background_limit, fair_order
from reports.spend import tracking
from tests.factories import make_connection, make_user, request_report
from tests.support import figures

NOW = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)


def _day(n: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=n)


A_DAY_BEFORE_THE_HISTORY = (datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 5, 2, tzinfo=UTC))


def test_people_first_then_background_polls_then_background_starts_newest_first() -> None:
    due = [
        # Background of person 1: two new days (older first in `due`) and a poll.
        _Due(1, True, 10, 1, "a", background=True, period_start=_day(1)),
        _Due(2, True, 10, 1, "a", background=True, period_start=_day(40)),
        _Due(3, False, 10, 1, "a", background=True, period_start=_day(5)),
        # Another connection's background: a month, newest of all.
        _Due(4, True, 11, 2, "b", background=True, period_start=_day(59)),
        # People: person 2's new bucket, person 1's poll and new bucket.
        _Due(5, True, 20, 2, "c"),
        _Due(6, False, 12, 1, "a"),
        _Due(7, True, 12, 1, "a"),
    ]
    order = [d.pk for d in fair_order(sorted(due, key=lambda d: (d.starts, d.pk)))]
    assert order == [6, 5, 7, 3, 4, 2, 1]


def test_background_leaves_the_reserve_of_each_cap_and_always_gets_one(settings: Any) -> None:
    settings.OSAI_BACKGROUND_RESERVE = 2
    assert background_limit(16) == 14
    assert background_limit(3) == 1
    assert background_limit(1) == 1  # history is filled in even under a tiny cap


@pytest.fixture
def backfilling(settings: Any, queue: list[tuple[Any, ...]], time_machine: Any) -> Any:
    """A person whose new connection's history (production windows: ~180 buckets) is due."""
    settings.OSAI_HELD_MONTHS = 25
    settings.OSAI_HELD_DAYS_SINCE = "quarter"
    settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION = 16
    settings.OSAI_MAX_IN_FLIGHT_PER_ACCOUNT = 16
    settings.OSAI_MAX_IN_FLIGHT_PER_PERSON = 32
    settings.OSAI_QUEUE_DEPTH = 64
    settings.OSAI_BACKGROUND_RESERVE = 2
    time_machine.move_to(NOW)
    owner = make_user()
    connection = make_connection(owner, osai_account_id="acct-1")
    tracking.tracking_refresh(connection)  # its own first steps, then dispatcher rounds
    _rounds()
    return owner, connection


def _rounds(now: datetime | None = None) -> int:
    """Dispatcher rounds until one moves nothing (each looks at a few per connection)."""
    total = 0
    while moved := dispatcher.enqueue_due_buckets(now):
        total += moved
    return total


def _queued(queue: list[tuple[Any, ...]]) -> list[int]:
    return [args[1] for args in queue if args[0] == "reports.tasks.bucket_step"]


@pytest.mark.django_db(transaction=True)
def test_a_backfill_leaves_a_persons_report_a_slot_on_the_same_connection_and_account(
    backfilling: Any, queue: list[tuple[Any, ...]]
) -> None:
    owner, connection = backfilling
    history = Bucket.objects.filter(connection=connection, background=True)
    assert history.count() == 25 + 153 + 1  # Feb 2024..Feb 2026; Oct 1..Mar 2; today
    started = Bucket.objects.filter(pk__in=_queued(queue))
    assert started.count() == 14  # all but the reserve of the account's 16
    # Newest period first: today and the latest days, not 2024's months.
    newest = sorted(history.values_list("period_start", flat=True), reverse=True)[:14]
    assert sorted(started.values_list("period_start", flat=True), reverse=True) == newest
    # More rounds start nothing more: the reserve stays free.
    assert dispatcher.enqueue_due_buckets() == 0

    queue.clear()
    report = request_report(owner, [connection], period=A_DAY_BEFORE_THE_HISTORY)
    mine = Bucket.objects.get(report_buckets__report=report)
    assert _queued(queue) == [mine.pk]  # enqueued by the request itself, at once
    figures.figure("background starts in flight on one account (cap 16, reserve 2)", 14)


@pytest.mark.django_db(transaction=True)
def test_background_steps_never_fill_the_queue(
    backfilling: Any, queue: list[tuple[Any, ...]], settings: Any
) -> None:
    owner, connection = backfilling
    settings.OSAI_QUEUE_DEPTH = 20
    other = make_connection(make_user(), osai_account_id="acct-2")
    Bucket.objects.filter(connection=connection).update(queued_at=None, next_attempt_at=NOW)
    tracking.tracking_refresh(other)  # its first steps ...
    _rounds(timezone.now())  # ... and rounds: two connections, two accounts
    queued = Bucket.objects.filter(queued_at__isnull=False)
    assert queued.count() == 18  # two below the depth: the reserve
    queue.clear()
    report = request_report(owner, [connection], period=A_DAY_BEFORE_THE_HISTORY)
    assert _queued(queue) == [Bucket.objects.get(report_buckets__report=report).pk]


@pytest.mark.django_db(transaction=True)
def test_background_polls_do_not_hide_a_persons_new_bucket_from_the_dispatcher(
    backfilling: Any, queue: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many due polls of the history on a connection: the person's new bucket there is still
    among what a round looks at (a few of each kind per connection)."""
    owner, connection = backfilling
    monkeypatch.setattr(dispatcher, "KICK_STEPS", 0)  # the dispatcher's round alone
    now = timezone.now()
    Bucket.objects.filter(connection=connection, queued_at__isnull=False).update(
        state=Bucket.State.POLLING, osai_report_id=7, queued_at=None, next_attempt_at=now
    )
    report = request_report(owner, [connection], period=A_DAY_BEFORE_THE_HISTORY)
    mine = Bucket.objects.get(report_buckets__report=report)
    queue.clear()
    dispatcher.enqueue_due_buckets(now + timedelta(seconds=1))
    order = _queued(queue)
    assert order[0] == mine.pk  # people first; then the history's polls
    assert len(order) == 1 + dispatcher.SCAN_PER_CONNECTION
