"""The period a report is compared with: how it is fetched (closed buckets, once, kept after
the report) and how it is read (tiling, the last day pro rata; I3: nothing recurses per
bucket). Which period that is (the product rules) is in tests/reports/test_periods.py."""

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
from reports.pipeline import report_requests
from reports.spend.usage import known_usage, sum_rows
from tests.factories import (
    make_connection,
    make_daily_buckets,
    make_done_bucket,
    make_done_report,
    make_user,
    request_report,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


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
    make_daily_buckets(conn, start, days, training_seconds_8gb=1.0, **flags)
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
    report = request_report(owner, [conn], compare=True)  # March 2025
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
    again = request_report(owner, [conn], compare=True, now=timezone.now() + timedelta(minutes=1))
    assert list(access.comparison_buckets_of(again)) == list(compared)
    assert ReportBucket.objects.filter(purpose="comparison").count() == 2
    # Cancelling a report lets go of its comparison.
    third = request_report(owner, [conn], period=(utc(2024, 3, 1), utc(2024, 4, 1)), compare=True)
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
    report = request_report(owner, compare=True)  # March 2025, one connection
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
