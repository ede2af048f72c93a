"""What a report is compared with (product rules), how that period is fetched (closed buckets,
once), and how it is read (tiling, the last day pro rata; I3: nothing recurses per bucket)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reports import access
from reports.metrics import all_flags
from reports.models import Bucket, Granularity, ReportBucket
from reports.periods import (
    PRESETS,
    comparison_buckets,
    comparison_period,
    describe,
    preset_period,
)
from reports.pipeline import report_requests
from reports.spend.usage import known_usage, sum_rows
from tests.factories import make_connection, make_done_bucket, make_done_report, make_user

NOW = datetime(2026, 11, 26, 13, 27, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("this_month", (utc(2026, 10, 1), utc(2026, 10, 26, 13, 27))),
        ("last_month", (utc(2026, 9, 1), utc(2026, 10, 1))),
        ("last_7_days", (utc(2026, 11, 12), utc(2026, 11, 19))),
        ("last_30_days", (utc(2026, 9, 27), utc(2026, 10, 27))),
        ("last_90_days", (utc(2026, 5, 30), utc(2026, 8, 28))),
        ("quarter_to_date", (utc(2026, 7, 1), utc(2026, 8, 26, 13, 27))),
        ("year_to_date", (utc(2025, 1, 1), utc(2025, 11, 26, 13, 27))),
        ("last_12_months", (utc(2024, 12, 1), utc(2025, 11, 26, 13, 27))),
    ],
)
def test_every_preset_has_a_comparison_by_the_product_rules(
    preset: str, expected: tuple[datetime, datetime]
) -> None:
    start, end = preset_period(preset, NOW)
    assert comparison_period(preset, start, end) == expected


@pytest.mark.parametrize(
    ("preset", "now", "expected"),
    [
        # The 29th to the 31st after a 28-day February: all of February.
        ("this_month", utc(2027, 3, 31, 23, 30), (utc(2027, 2, 1), utc(2027, 3, 1))),
        ("this_month", utc(2027, 3, 29, 0, 5), (utc(2027, 2, 1), utc(2027, 3, 1))),
        ("this_month", utc(2027, 3, 28, 0, 5), (utc(2027, 2, 1), utc(2027, 2, 28, 0, 5))),
        # The 31st after a 30-day month; a 30-day month after a 31-day one keeps its day.
        ("this_month", utc(2027, 5, 31, 12), (utc(2027, 4, 1), utc(2027, 5, 1))),
        ("this_month", utc(2027, 4, 30, 12), (utc(2027, 3, 1), utc(2027, 3, 30, 12))),
        ("quarter_to_date", utc(2027, 5, 31, 12), (utc(2027, 1, 1), utc(2027, 3, 1))),
        # A leap day: the year before has no 29 February.
        ("year_to_date", utc(2028, 2, 29, 12), (utc(2027, 1, 1), utc(2027, 3, 1))),
        ("last_12_months", utc(2028, 2, 29, 12), (utc(2026, 3, 1), utc(2027, 3, 1))),
        ("this_month", utc(2028, 2, 29, 12), (utc(2028, 1, 1), utc(2028, 1, 29, 12))),
        # The 1st, five minutes in.
        ("this_month", utc(2027, 1, 1, 0, 5), (utc(2026, 12, 1), utc(2026, 12, 1, 0, 5))),
    ],
)
def test_a_preset_ending_now_compares_with_the_same_days_even_where_that_month_is_shorter(
    preset: str, now: datetime, expected: tuple[datetime, datetime]
) -> None:
    start, end = preset_period(preset, now)
    assert comparison_period(preset, start, end) == expected


def test_this_month_compares_with_the_same_days_of_last_month_as_the_overview_does() -> None:
    """At the guard's clocks too (tests/support/clock.py): a "this month" report and the
    overview mean the same days of last month, on the 31st as on the 1st."""
    from dateutil.relativedelta import relativedelta

    from reports.spend.monthly import load_spend

    now = timezone.now().replace(microsecond=0)  # as the report form and presets take it
    overview = load_spend([], now)
    start, end = preset_period("this_month", now)
    assert comparison_period("this_month", start, end) == (
        overview.month_start - relativedelta(months=1),
        overview.previous_end,
    )


def test_custom_ranges_compare_whole_months_with_months_and_days_with_days() -> None:
    assert comparison_period("", utc(2026, 1, 1), utc(2026, 4, 1)) == (
        utc(2025, 10, 1),
        utc(2026, 1, 1),
    )
    assert comparison_period("", utc(2026, 3, 10), utc(2026, 3, 20)) == (
        utc(2026, 2, 28),
        utc(2026, 3, 10),
    )
    # A range that ends today, mid-day: the same whole number of days earlier.
    assert comparison_period("", utc(2026, 11, 20), NOW) == (
        utc(2026, 11, 13),
        utc(2026, 11, 19, 13, 27),
    )
    assert set(PRESETS) <= {
        "this_month",
        "last_month",
        "last_7_days",
        "last_30_days",
        "last_90_days",
        "quarter_to_date",
        "year_to_date",
        "last_12_months",
    }


def test_the_comparison_is_fetched_as_whole_months_then_days_up_to_a_midnight() -> None:
    plan = comparison_buckets(utc(2025, 1, 1), utc(2025, 3, 3, 13, 27))
    assert plan == [
        (utc(2025, 1, 1), utc(2025, 2, 1)),
        (utc(2025, 2, 1), utc(2025, 3, 1)),
        (utc(2025, 3, 1), utc(2025, 3, 2)),
        (utc(2025, 3, 2), utc(2025, 3, 3)),
        (utc(2025, 3, 3), utc(2025, 3, 4)),
    ]
    assert describe(utc(2026, 10, 1), utc(2026, 11, 1)) == "Oct 2026"
    assert describe(utc(2025, 1, 1), utc(2025, 11, 1)) == "Jan 2025 \u2013 Oct 2025"
    assert describe(utc(2026, 10, 1), utc(2026, 10, 26, 13, 27)) == (
        "2026-10-01 \u2013 2026-10-26 13:27"
    )
    assert describe(utc(2026, 11, 12), utc(2026, 11, 19)) == "2026-11-12 \u2013 2026-11-18"


@pytest.mark.django_db
def test_known_usage_counts_the_last_partial_day_pro_rata() -> None:
    conn = make_connection(make_user())
    for day in range(1, 4):
        make_done_bucket(conn, utc(2026, 10, day), utc(2026, 10, day + 1), seed=1)
    rows = known_usage([conn.pk], all_flags(), utc(2026, 10, 1), utc(2026, 10, 3, 6))
    assert rows is not None
    # Two whole days and a quarter of the third: 2.25 x 7,200 s of 8 GB training.
    assert sum_rows(rows)["training_seconds_8gb"] == pytest.approx(2.25 * 7200)
    assert sum_rows(rows)["existing_images"] == 1001  # a state, not scaled
    assert known_usage([conn.pk], all_flags(), utc(2026, 10, 1), utc(2026, 10, 4, 6)) is None


@pytest.mark.django_db
def test_a_report_whose_previous_period_holds_10000_daily_buckets_renders() -> None:
    """I3: tiling walks the bucket boundaries in one pass; no recursion per bucket."""
    owner = make_user()
    conn = make_connection(owner)
    start = utc(2015, 1, 1)
    days = 10_000
    end = start + timedelta(days=days)
    flags = all_flags()
    Bucket.objects.bulk_create(
        Bucket(
            connection=conn,
            period_start=start + timedelta(days=i),
            period_end=start + timedelta(days=i + 1),
            is_closed=True,
            state=Bucket.State.DONE,
            training_seconds_8gb=1.0,
            **flags,
        )
        for i in range(days)
    )
    report = make_done_report(
        owner, [conn], start=end, end=end + timedelta(days=days), granularity=Granularity.TOTAL
    )
    rows = known_usage([conn.pk], flags, start, end)
    assert rows is not None and len(rows) == days
    client = Client()
    client.force_login(owner)
    response = client.get(reverse("report_detail", args=[report.pk]))
    assert response.status_code == 200
    assert response.context["previous_known"] is True


@pytest.mark.django_db(transaction=True)
def test_a_request_fetches_its_comparison_once_and_the_worker_keeps_it_after_the_report(
    queue: list[object],
) -> None:
    owner = make_user()
    conn = make_connection(owner)
    report = report_requests.report_request(
        owner=owner,
        connections=[conn],
        period_start=utc(2025, 3, 1),
        period_end=utc(2025, 4, 1),
        granularity="total",
        flags=all_flags(),
        preset="",
        compare=True,
    )
    compared = access.comparison_buckets_of(report)
    assert [(b.period_start, b.period_end) for b in compared] == [
        (utc(2025, 2, 1), utc(2025, 3, 1))
    ]
    assert access.counted_buckets(report).count() == 1  # the badge counts the report's own
    assert report.buckets_total == 1
    # The report is done; its comparison is still wanted until fetched.
    Bucket.objects.filter(report_buckets__report=report, report_buckets__purpose="main").update(
        state=Bucket.State.DONE
    )
    from reports.pipeline.progress import report_refresh

    report_refresh(report.pk)
    report.refresh_from_db()
    assert report.state == "done"
    assert access.bucket_is_wanted(compared.get())
    # A second request for the same period, a minute later, reuses the comparison bucket.
    again = report_requests.report_request(
        owner=owner,
        connections=[conn],
        period_start=utc(2025, 3, 1),
        period_end=utc(2025, 4, 1),
        granularity="total",
        flags=all_flags(),
        compare=True,
        now=timezone.now() + timedelta(minutes=1),
    )
    assert list(access.comparison_buckets_of(again)) == list(compared)
    assert ReportBucket.objects.filter(purpose="comparison").count() == 2
    # Cancelling a report lets go of its comparison.
    third = report_requests.report_request(
        owner=owner,
        connections=[conn],
        period_start=utc(2024, 3, 1),
        period_end=utc(2024, 4, 1),
        granularity="total",
        flags=all_flags(),
        compare=True,
    )
    february_2024 = access.comparison_buckets_of(third).get()
    report_requests.report_cancel(report=third)
    february_2024.refresh_from_db()
    assert february_2024.state == Bucket.State.CANCELLED
    assert access.bucket_is_wanted(february_2024) is False


@pytest.mark.django_db(transaction=True)
def test_a_finished_report_polls_only_a_small_element_until_its_comparison_arrives(
    queue: list[object],
) -> None:
    owner = make_user()
    conn = make_connection(owner)
    report = report_requests.report_request(
        owner=owner,
        connections=[conn],
        period_start=utc(2025, 3, 1),
        period_end=utc(2025, 4, 1),
        granularity="total",
        flags=all_flags(),
        compare=True,
    )
    Bucket.objects.filter(report_buckets__purpose="main").update(state=Bucket.State.DONE)
    from reports.pipeline.progress import report_refresh

    report_refresh(report.pk)
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("report_detail", args=[report.pk])).content.decode()
    url = reverse("report_comparison", args=[report.pk])
    assert "being fetched from OSAI" in page and f'hx-get="{url}"' in page
    assert 'hx-trigger="report-finished from:body, report-progress from:body"' in page
    assert client.get(url, HTTP_HX_REQUEST="true").status_code == 204  # nothing to swap yet
    Bucket.objects.update(state=Bucket.State.DONE)
    done = client.get(url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and json.loads(done["HX-Trigger"]) == {"report-finished": {}}
