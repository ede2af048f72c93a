"""Tracking (reports/spend/tracking.py): the month kept fresh as daily buckets against the
sandbox; closed days fetched once, only the open day asked again (P17 as a count)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command

from reports import tasks
from reports.access import bucket_is_wanted
from reports.models import Alert, Bucket, Connection
from reports.spend import tracking
from tests.factories import ensure_example_price_book, make_connection, make_user
from tests.support.pipeline import drive

pytestmark = pytest.mark.django_db(transaction=True)

POST = "POST /api/Reports"


def test_tracked_periods_in_tests_are_the_last_two_months_then_days_since_last_month() -> None:
    """The test suite's small window (OSAI_HELD_MONTHS=2, days since last month's start)."""
    closed, open_day = tracking.tracked_periods(datetime(2026, 3, 3, 9, 30, tzinfo=UTC))
    assert closed[:2] == [
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
    ]
    assert closed[2] == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC))
    assert closed[-1] == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert len(closed) == 2 + 28 + 2
    assert open_day == (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 3, 9, 30, tzinfo=UTC))


def test_a_refresh_fetches_closed_days_once_and_only_the_open_day_again(
    use_sandbox: Any, time_machine: Any, tracking_morning: datetime
) -> None:
    connection = make_connection(make_user())
    first = tracking.tracking_refresh(connection)
    assert len(first) == 2 + 28 + 2 + 1
    assert all(bucket_is_wanted(b) for b in Bucket.objects.all())  # no report links them
    drive()
    assert use_sandbox.calls(POST) == 33
    assert Bucket.objects.filter(state=Bucket.State.DONE).count() == 33

    time_machine.move_to(datetime(2026, 3, 3, 10, 30, tzinfo=UTC))
    use_sandbox.reset()
    again = tracking.tracking_refresh(connection)
    drive()
    assert len(again) == 1
    assert use_sandbox.calls(POST) == 1  # the open day only
    # The superseded open-day bucket is gone: one per connection and day.
    open_days = Bucket.objects.filter(is_closed=False)
    tracking.prune_open_buckets(connection, now=datetime(2026, 3, 3, 10, 30, tzinfo=UTC))
    assert open_days.count() == 1
    assert open_days.get().period_end == datetime(2026, 3, 3, 10, 30, tzinfo=UTC)

    # The next morning yesterday is a closed day, fetched once; its open buckets went.
    time_machine.move_to(datetime(2026, 3, 4, 0, 10, tzinfo=UTC))
    use_sandbox.reset()
    tracking.tracking_refresh(connection)
    drive()
    assert use_sandbox.calls(POST) == 2  # March 3 closed, March 4 open
    assert not Bucket.objects.filter(
        is_closed=False, period_start__lt=datetime(2026, 3, 4, tzinfo=UTC)
    ).exists()


def test_the_track_command_refreshes_working_connections_and_budgets_follow(
    tracking_morning: datetime,
) -> None:
    ensure_example_price_book()
    owner = make_user()
    working = make_connection(owner)
    broken = make_connection(owner, status=Connection.Status.NEEDS_TOKEN)
    out = io.StringIO()
    call_command("track", "--user", owner.username, stdout=out)
    assert "Refreshing 1 connection." in out.getvalue()
    assert not Bucket.objects.filter(connection=broken).exists()
    from reports.spend import budgets

    budgets.budget_set(actor=owner, scope="connection", amount="0.01", connection=working)
    # Until the refresh is complete, a finished tracked bucket checks nothing.
    assert tasks.tracking_bucket_done(working.pk) == "refresh still on its way"
    drive()
    # Then its new closed days are judged for anomalies (tests/reports/spend/test_anomalies.py):
    # how many the sandbox's usage of this account makes is not this test's concern.
    assert tasks.tracking_bucket_done(working.pk).startswith("checked 1 budgets, 3 new alerts, ")
    assert sorted(Alert.objects.values_list("threshold", flat=True)) == [50, 80, 100]
    assert (
        tasks.tracking_bucket_done(working.pk) == "checked 1 budgets, 0 new alerts, 0 new anomalies"
    )  # each day is judged once


def test_a_tracking_schedule_made_at_worker_start_waits_one_interval(settings: Any) -> None:
    """Where the migration's schedule is gone (an emptied database), a worker start makes it
    again, first due one interval ahead: it does not refresh every connection at once."""
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from reports.schedules import TRACK, ensure_schedules

    settings.OSAI_TRACK_INTERVAL = 60
    Schedule.objects.filter(name=TRACK).delete()
    ensure_schedules()
    schedule = Schedule.objects.get(name=TRACK)
    assert schedule.minutes == 60
    assert schedule.next_run > timezone.now() + timedelta(minutes=59)
    # An existing one keeps its time and follows the setting.
    settings.OSAI_TRACK_INTERVAL = 30
    ensure_schedules()
    again = Schedule.objects.get(name=TRACK)
    assert (again.minutes, again.next_run) == (30, schedule.next_run)
