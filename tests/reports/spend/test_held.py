"""Two years held (issue 19): the windows tracking holds in production, a refresh that stays
cheap once a connection holds its history (P17), background buckets and who adopts them, a
token that stops working, how far the overview says it has come, and a held month that
disagrees with its days (the sandbox's `month_skew` fault, over its real socket)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from dateutil.relativedelta import relativedelta
from django.db import connection as db
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reports.metrics import STATE_COLUMNS, USAGE_COLUMNS, all_flags
from reports.models import Bucket, Connection, HeldDiscrepancy
from reports.pages.overview import overview_page
from reports.spend import discrepancies, ledger, tracking
from tests.factories import (
    ensure_example_price_book,
    held_bucket,
    make_connection,
    make_user,
    request_report,
    usage,
)
from tests.support import figures
from tests.support.pipeline import drive

POST = "POST /api/Reports"
ONE_DAY = timedelta(days=1)


@pytest.fixture
def production_windows(settings: Any) -> Any:
    """The production defaults of settings.py: 25 months, days since the previous quarter."""
    settings.OSAI_HELD_MONTHS = 25
    settings.OSAI_HELD_DAYS_SINCE = "quarter"
    return settings


def _quarter_start(day: date) -> date:
    return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)


# --- The windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "first_day", "first_month", "closed_days"),
    [
        # Early in a quarter: the whole previous quarter and these two days.
        (datetime(2026, 3, 3, 9, 30, tzinfo=UTC), date(2025, 10, 1), date(2024, 2, 1), 153),
        # New Year's first hour: last year's fourth quarter, and no day of this year closed.
        (datetime(2026, 1, 1, 0, 30, tzinfo=UTC), date(2025, 10, 1), date(2023, 12, 1), 92),
        # The last day of the year: two quarters less today, the longest window (184 with it).
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), date(2026, 7, 1), date(2024, 11, 1), 183),
        # The first day of a quarter at midnight exactly: nothing of today has passed.
        (datetime(2026, 4, 1, tzinfo=UTC), date(2026, 1, 1), date(2024, 3, 1), 90),
        # A leap year's February.
        (datetime(2028, 2, 29, 12, tzinfo=UTC), date(2027, 10, 1), date(2026, 1, 1), 151),
    ],
)
def test_production_windows_hold_25_months_and_every_day_since_the_previous_quarter(
    production_windows: Any, now: datetime, first_day: date, first_month: date, closed_days: int
) -> None:
    closed, open_day = tracking.tracked_periods(now)
    months, days = closed[:25], closed[25:]
    this_month = datetime(now.year, now.month, 1, tzinfo=UTC)
    assert months[0][0].date() == first_month
    assert months[-1][1] == this_month  # the last closed month ends where this one starts
    assert all(start + relativedelta(months=1) == end for start, end in months)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(months))  # no gaps
    assert days[0][0].date() == first_day
    assert len(days) == closed_days
    assert all(end - start == ONE_DAY for start, end in days)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    assert days[-1][1] == today
    assert open_day == ((today, now) if now > today else None)


def test_on_every_day_of_two_years_the_days_start_at_the_previous_quarter_and_stay_within_184(
    production_windows: Any,
) -> None:
    """Every day of a common and a leap year, at the day's last minute (the most days)."""
    day = date(2027, 1, 1)
    longest = 0
    while day < date(2029, 1, 1):
        now = datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC)
        closed, open_day = tracking.tracked_periods(now)
        days = closed[25:]
        assert days[0][0].date() == _quarter_start(_quarter_start(day) - ONE_DAY)
        assert len(closed[:25]) == 25 and open_day is not None
        longest = max(longest, len(days) + 1)
        day += ONE_DAY
    assert longest == 184
    figures.figure("held days at most (closed and the open day)", longest)


def test_a_days_window_that_is_neither_quarter_nor_month_is_refused(settings: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    settings.OSAI_HELD_DAYS_SINCE = "week"
    with pytest.raises(ImproperlyConfigured, match="quarter"):
        tracking.tracked_periods(datetime(2026, 3, 3, tzinfo=UTC))


# --- P17: a refresh of a connection that holds its history ----------------------------------


def _hold_everything(connection: Connection, now: datetime) -> int:
    """Every bucket tracking holds for the connection, finished (as earlier refreshes left
    them), and the previous refresh's open day. Returns how many."""
    closed, open_day = tracking.tracked_periods(now - timedelta(hours=1))
    periods = [*closed, *([open_day] if open_day else [])]
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    buckets = [
        Bucket(
            connection=connection,
            period_start=start,
            period_end=end,
            is_closed=end <= today,
            state=Bucket.State.DONE,
            tracked=True,
            background=True,
            osai_report_id=20_000 + n,
            finished_at=now - timedelta(hours=1),
            **all_flags(),
            **usage(n % 7 + 1),
        )
        for n, (start, end) in enumerate(periods)
    ]
    Bucket.objects.bulk_create(buckets)
    return len(buckets)


@pytest.mark.django_db(transaction=True)
def test_a_refresh_of_a_connection_with_its_history_makes_one_bucket_in_a_handful_of_queries(
    production_windows: Any, queue: Any
) -> None:
    """P17 as counts: ~210 held periods are looked up in one query; only the open day is
    new; the ledger's self-heal is cheap when nothing is missing."""
    ensure_example_price_book()
    connection = make_connection(make_user())
    now = datetime(2026, 12, 31, 15, 0, tzinfo=UTC)  # the longest window of the year
    held = _hold_everything(connection, now)
    assert held == 25 + 183 + 1
    ledger.ledger_fill([connection.pk], now=now)  # as the buckets' bucket_done would have
    with CaptureQueriesContext(db) as queries:
        started = tracking.tracking_refresh(connection, now=now)
    assert len(started) == 1
    new = Bucket.objects.get(pk=started[0])
    assert (new.is_closed, new.period_start, new.period_end, new.background) == (
        False,
        datetime(2026, 12, 31, tzinfo=UTC),
        now,
        True,
    )
    figures.figure("P17 queries per tracking refresh with 2 years held", len(queries))
    assert len(queries) <= 24, "\n".join(q["sql"][:150] for q in queries.captured_queries)


# --- Background work -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_tracking_makes_background_buckets_and_a_persons_report_that_reuses_one_adopts_it(
    queue: Any,
) -> None:
    owner = make_user()
    connection = make_connection(owner)
    now = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
    tracking.tracking_refresh(connection, now=now, wake=False)
    assert not Bucket.objects.filter(background=False).exists()
    day = (datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 2, 11, tzinfo=UTC))
    report = request_report(owner, [connection], period=day, now=now)
    adopted = Bucket.objects.get(report_buckets__report=report)
    assert (adopted.tracked, adopted.background) == (True, False)  # now a person's
    assert Bucket.objects.filter(background=True).count() == 2 + 28 + 2 + 1 - 1
    # Tracking finding a person's bucket leaves it a person's.
    tracking.tracking_refresh(connection, now=now + timedelta(hours=1), wake=False)
    adopted.refresh_from_db()
    assert adopted.background is False


# --- A token that stops working ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_connection_whose_token_stops_working_stops_its_history_and_the_overview_says_so(
    use_sandbox: Any, tracking_morning: datetime
) -> None:
    ensure_example_price_book()
    owner = make_user()
    # OSAI refuses this token at sign-in (the sandbox accepts only osai-sandbox-…).
    broken = make_connection(owner, "Lab", token="revoked-token-0001")
    tracking.tracking_refresh(broken)
    waiting = Bucket.objects.active().filter(connection=broken)
    assert waiting.count() == 33
    from reports.pipeline import steps

    first = waiting.order_by("-period_start").values_list("pk", flat=True).first()
    assert first is not None
    steps.bucket_step(first)  # one step meets the 401s ...
    broken.refresh_from_db()
    assert broken.status == Connection.Status.NEEDS_TOKEN
    assert not waiting.exists()  # ... and the whole backfill stops at once, without OSAI
    assert use_sandbox.calls(POST) == 0
    failed = Bucket.objects.filter(connection=broken, state=Bucket.State.ERROR)
    assert failed.count() == 33
    assert "no longer accepts the access token" in failed.first().error_message  # type: ignore[union-attr]

    page = overview_page(owner)
    assert page["history"].stopped == ("Lab",)
    client = Client()
    client.force_login(owner)
    home = client.get(reverse("home")).content.decode()
    assert "History: 0 of 2 months held" in home
    assert "Stopped: OSAI no longer accepts the token of Lab" in home
    edit = client.get(reverse("connection_edit", args=[broken.pk])).content.decode()
    assert "Stopped: OSAI no longer accepts this connection's token." in edit
    # The hourly refresh leaves it alone until a new token comes.
    assert tracking.tracking_refresh_all() == 0


# --- How far it has come -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_overview_and_the_team_page_say_how_much_history_is_held(
    production_windows: Any, queue: Any, own_cache: Any, time_machine: Any
) -> None:
    now = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
    time_machine.move_to(now)
    ensure_example_price_book()
    owner = make_user()
    first, second = make_connection(owner, "A"), make_connection(owner, "B")
    months = tracking.held_months(datetime(2026, 3, 3, tzinfo=UTC))
    for connection, held in ((first, 9), (second, 12)):
        for start, end in months[-held:]:  # the newest months arrive first
            held_bucket(connection, start, end, finished_at=now).save()
    # Two days each, one of them starting with a held month (February's first).
    for connection in (first, second):
        for day in (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)):
            held_bucket(connection, day, day + ONE_DAY, finished_at=now).save()
    history = tracking.history_held([first.pk, second.pk], now)
    assert (history.months_held, history.months) == (9, 25)  # both hold 9 (combined)
    assert (history.days_held, history.days) == (2, 153)
    client = Client()
    client.force_login(owner)
    home = client.get(reverse("home")).content.decode()
    assert "History: 9 of 25 months held, and 2 of 153 days" in home
    # A month more makes a new overview (the cached body is keyed by what it shows).
    start, end = months[-10]
    held_bucket(first, start, end, finished_at=now).save()
    assert "History: 10 of 25 months held" in client.get(reverse("home")).content.decode()

    from tests.factories import make_team, share_with

    team = make_team(admins=[owner])
    share_with(team, first)
    page = client.get(reverse("team_detail", args=[team.pk])).content.decode()
    assert "History: 10 of 25 months held" in page


# --- When a held month and its days disagree --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_month_that_disagrees_with_its_days_is_recorded_and_shown_on_the_connection_page(
    use_sandbox: Any, tracking_morning: datetime
) -> None:
    """The sandbox's month_skew: one-month reports come back 10 % over the sum of their days.
    February is held both ways (the test window: two months, days since last month)."""
    book = ensure_example_price_book()
    owner = make_user()
    connection = make_connection(owner, "Skewed")
    use_sandbox.faults(month_skew=0.1)
    tracking.tracking_refresh(connection)
    drive()
    february = datetime(2026, 2, 1, tzinfo=UTC)
    found = {d.column: d for d in HeldDiscrepancy.objects.filter(connection=connection)}
    assert found, "the skewed month must disagree with its days"
    assert {d.month_start for d in found.values()} == {february}  # January has no held days
    for column, d in found.items():
        assert column not in STATE_COLUMNS  # images existing: the month's end, not skewed
        assert d.month_value == pytest.approx(d.days_value * 1.1, rel=1e-9, abs=0.5)  # whole s
    days = [
        b
        for b in Bucket.objects.filter(
            connection=connection, period_start__gte=february, is_closed=True
        )
        if b.period_end - b.period_start == ONE_DAY and b.period_start.month == 2
    ]
    assert len(days) == 28
    additive_with_usage = {
        c
        for c in USAGE_COLUMNS
        if c not in STATE_COLUMNS and sum(getattr(b, c) or 0 for b in days) > 0
    }
    assert set(found) == additive_with_usage

    # The month answers for the whole month; its days for anything finer.
    month = ledger.period_costs([connection.pk], book, february, february + relativedelta(months=1))
    by_days = ledger.period_costs([connection.pk], book, february, february + 27 * ONE_DAY)
    last_day = ledger.period_costs(
        [connection.pk], book, february + 27 * ONE_DAY, february + 28 * ONE_DAY
    )
    assert month is not None and by_days is not None and last_day is not None
    assert month["total"] > by_days["total"] + last_day["total"]

    # Shown on the connection's page, never hidden.
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("connection_edit", args=[connection.pk])).content.decode()
    assert "month total differs from the sum of its days" in page
    assert "Feb 2026" in page and "(10.0 %)" in page
    figures.figure("held month vs its days, metrics recorded as disagreeing", len(found))

    # Checked again (the last bucket of the month finishing twice): the same rows, updated.
    assert len(discrepancies.held_month_check(connection.pk, february) or []) == len(found)
    assert HeldDiscrepancy.objects.filter(connection=connection).count() == len(found)


@pytest.mark.django_db(transaction=True)
def test_an_additive_month_agrees_with_its_days_and_nothing_is_recorded(
    tracking_morning: datetime,
) -> None:
    connection = make_connection(make_user())
    tracking.tracking_refresh(connection)
    drive()
    february = datetime(2026, 2, 1, tzinfo=UTC)
    assert discrepancies.held_month_check(connection.pk, february) == []  # checked: agree
    assert not HeldDiscrepancy.objects.exists()
    # January is held as a month only: nothing to compare with.
    assert discrepancies.held_month_check(connection.pk, datetime(2026, 1, 1, tzinfo=UTC)) is None
