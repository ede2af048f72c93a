"""The report page knows when OSAI should finish (the badge's ETA and polling schedule), and
does not rebuild the figures of a report it has drawn before (P14)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from reports.models import PriceBook, PriceBookVersion, Report
from reports.pages import report as report_page
from tests.factories import make_done_report, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def frozen_clock(time_machine: Any) -> None:
    """The badge's schedule is measured from "now": a still clock keeps a slow run's render
    time out of the figures the tests compare (3 s ahead stays 3 s ahead)."""
    time_machine.move_to(datetime(2026, 5, 14, 9, 30, tzinfo=UTC), tick=False)


def _running(report: Report, expected_in: float | None) -> Report:
    expected = timezone.now() + timedelta(seconds=expected_in) if expected_in is not None else None
    Report.objects.filter(pk=report.pk).update(
        state=Report.State.RUNNING, finished_at=None, expected_done_at=expected
    )
    report.refresh_from_db()
    return report


def _polled_badge(owner: Any, report: Report) -> str:
    """The status badge as the report page polls it: one query for the session at most and
    one for the report (S6 / P7: the estimate and the worker's next poll are on its row)."""
    client = Client()
    client.force_login(owner)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(
            reverse("report_status", args=[report.pk]),
            {"seen": report.buckets_done},
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200
    assert len(queries) <= 2
    return response.content.decode()


@pytest.mark.parametrize(
    ("expected_in", "trigger", "text"),
    [
        (None, "every 2s", None),  # nobody knows yet: as before
        (40.0, "every 5s", "about 40 s left"),  # far off: every 5 s at most
        # Close: just after the moment, and the worker's write (the test's own time taken off).
        (1.0, r"every (11\d\d|10\d\d|9\d\d)ms|every 1s", None),
        (-0.5, "every 100ms", "finishing"),  # just past it: densely
        (-30.0, "every 2s", "taking longer than usual"),  # long past: as before
        (600.0, "every 5s", "about 10 min left"),
    ],
)
@pytest.mark.usefixtures("frozen_clock")
def test_the_badge_polls_by_the_estimate_and_says_how_long_is_left(
    expected_in: float | None, trigger: str, text: str | None
) -> None:
    owner = make_user()
    report = _running(make_done_report(owner), expected_in)
    body = _polled_badge(owner, report)
    assert re.search(f'hx-trigger="(?:{trigger})"', body)
    if text:
        assert text in body
    elif expected_in is None:
        assert "left" not in body and "finishing" not in body


@pytest.mark.parametrize(
    ("next_check_in", "unfinished", "trigger", "expected_in"),
    [
        (3.0, 1, r"every 3[0-4]\d\dms|every 3s", None),  # just after the worker's next poll
        (8.0, 1, "every 5s", None),  # far off: every 5 s at most
        (-0.3, 1, "every 250ms", None),  # the worker is a little late: a little more often
        (-5.0, 1, "every 2s", None),  # long past: as before
        (3.0, 2, "every 2s", None),  # another bucket may move at any time: as before
        # Long past its estimate the worker is on its back-off: the badge follows it.
        (3.0, 1, r"every 3[0-4]\d\dms|every 3s", -30.0),
    ],
)
@pytest.mark.usefixtures("frozen_clock")
def test_without_an_estimate_the_badge_looks_just_after_the_workers_next_poll(
    next_check_in: float, unfinished: int, trigger: str, expected_in: float | None
) -> None:
    owner = make_user()
    report = _running(make_done_report(owner), expected_in)
    Report.objects.filter(pk=report.pk).update(
        next_check_at=timezone.now() + timedelta(seconds=next_check_in),
        buckets_total=unfinished + 1,
        buckets_done=1,
        buckets_failed=0,
    )
    report.refresh_from_db()
    body = _polled_badge(owner, report)
    assert re.search(f'hx-trigger="(?:{trigger})"', body)
    if expected_in is None:
        assert "left" not in body  # no estimate, no ETA
    else:
        assert "taking longer than usual" in body


# --- P14: figures cached by what they show ---


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every time the figures of a page are built."""
    calls: list[str] = []
    real = report_page.build_figures

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("cost" if args[2] is not None else "usage")
        return real(*args, **kwargs)

    monkeypatch.setattr(report_page, "build_figures", counting)
    return calls


def test_a_repeat_view_builds_no_figure_and_a_price_change_rebuilds_the_cost_view(
    own_cache: None, builds: list[str]
) -> None:
    owner = make_user()
    book = PriceBook.objects.create(name=f"Book {uuid.uuid4().hex[:6]}", currency="EUR")
    PriceBookVersion.objects.create(
        price_book=book,
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        training_8gb_per_hour=Decimal("1.00"),
    )
    report = make_done_report(owner, price_book=book)
    client = Client()
    client.force_login(owner)
    usage_url = reverse("report_detail", args=[report.pk])
    cost_url = f"{usage_url}?view=cost"
    charts_url = reverse("report_charts", args=[report.pk])

    for url in (usage_url, usage_url, charts_url, cost_url, cost_url, f"{charts_url}?view=cost"):
        assert client.get(url).status_code == 200
    assert builds == ["usage", "cost"]  # once per view, then from the cache

    # A new rate changes the cost figures, not the usage ones.
    book.versions.update(training_8gb_per_hour=Decimal("2.00"))
    first_cost_page = client.get(cost_url).content.decode()
    assert client.get(usage_url).status_code == 200
    assert builds == ["usage", "cost", "cost"]
    assert "EUR" in first_cost_page

    # A new version in force during the report's period too.
    PriceBookVersion.objects.create(
        price_book=book,
        effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        training_8gb_per_hour=Decimal("3.00"),
    )
    client.get(cost_url)
    client.get(cost_url)
    assert builds == ["usage", "cost", "cost", "cost"]


def test_the_same_numbers_in_another_report_reuse_the_figures(
    own_cache: None, builds: list[str]
) -> None:
    owner = make_user()
    first, second = make_done_report(owner), make_done_report(owner)
    client = Client()
    client.force_login(owner)
    for report in (first, second):
        assert client.get(reverse("report_detail", args=[report.pk])).status_code == 200
    assert builds == ["usage"]
