"""Many tenants, one pipeline: fair turns (F4), caps (F1), request limits (F2), one report for
a double click (F3). The web hardening a review asked with them (S10-S12) is in
tests/web/test_security.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import close_old_connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reports.models import Bucket, Connection, Report
from reports.pipeline import dispatcher, report_requests
from reports.pipeline.dispatcher import _Due, fair_order
from tests.factories import make_connection, make_user, request_report
from tests.support import figures

YEAR = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))


def a_year_by_month(owner: Any, connection: Connection, **options: Any) -> Report:
    """Twelve monthly buckets of one connection, all due now."""
    return request_report(owner, [connection], period=YEAR, granularity="month", **options)


def queued_owners(queue: list[tuple[Any, ...]]) -> list[int]:
    ids = [args[1] for args in queue if args[0] == "reports.tasks.bucket_step"]
    owner_of = dict(Bucket.objects.filter(pk__in=ids).values_list("pk", "connection__owner_id"))
    return [owner_of[pk] for pk in ids]


# --- F4: turns ---------------------------------------------------------------------------------


def test_people_take_turns_then_their_connections() -> None:
    due = [
        *[_Due(pk, True, 10, 1, "a") for pk in range(1, 6)],  # person 1, connection 10
        *[_Due(pk, True, 11, 1, "b") for pk in range(6, 8)],  # person 1, connection 11
        _Due(99, True, 20, 2, "c"),  # person 2: one bucket, due last
    ]
    order = [d.pk for d in fair_order(due)]
    assert order == [1, 99, 6, 2, 7, 3, 4, 5]


@pytest.mark.django_db(transaction=True)
def test_one_persons_backlog_does_not_delay_another_persons_first_bucket(
    queue: list[tuple[Any, ...]], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.OSAI_QUEUE_DEPTH = 8
    monkeypatch.setattr(dispatcher, "KICK_STEPS", 0)  # the dispatcher's order alone
    heavy, light = make_user("heavy"), make_user("light")
    backlog = [make_connection(heavy) for _ in range(3)]
    for connection in backlog:  # 3 x 12 monthly buckets, requested first
        a_year_by_month(heavy, connection)
    request_report(light, period=YEAR)
    queue.clear()
    assert dispatcher.enqueue_due_buckets() == 8
    order = queued_owners(queue)
    assert order.index(light.pk) <= 1  # within the first round
    # Queued steps are not queued again while they wait in the broker.
    assert dispatcher.enqueue_due_buckets() == 0
    figures.figure(
        "F4 another person's first bucket, position in the queue", order.index(light.pk) + 1
    )


@pytest.mark.django_db(transaction=True)
def test_a_request_queues_its_first_steps_itself_in_fair_order(
    queue: list[tuple[Any, ...]], settings: Any
) -> None:
    """The request does not wait up to a dispatcher round: it enqueues the first few due
    steps itself, through the same fair, capped function."""
    heavy, light = make_user("heavy"), make_user("light")
    for _ in range(3):
        a_year_by_month(heavy, make_connection(heavy))
    queue.clear()
    light_report = request_report(light, period=YEAR)
    steps = [args[1] for args in queue if args[0] == "reports.tasks.bucket_step"]
    assert 0 < len(steps) <= dispatcher.KICK_STEPS
    light_bucket = Bucket.objects.get(report_buckets__report=light_report)
    assert steps[0] == light_bucket.pk or steps[1] == light_bucket.pk  # in the first round
    # Queued steps count against the caps before they start (they will start a report).
    settings.OSAI_MAX_IN_FLIGHT_PER_PERSON = 1
    queue.clear()
    assert dispatcher.enqueue_due_buckets() == 0


@pytest.mark.django_db(transaction=True)
def test_caps_per_person_and_per_osai_account_keep_the_rest_out_of_the_queue(
    queue: list[tuple[Any, ...]], settings: Any
) -> None:
    """F1: two connections with one token are one OSAI account, with one cap."""
    settings.OSAI_MAX_IN_FLIGHT_PER_ACCOUNT = 3
    settings.OSAI_MAX_IN_FLIGHT_PER_PERSON = 5
    settings.OSAI_QUEUE_DEPTH = 100
    owner = make_user()
    twins = [make_connection(owner, osai_account_id="acct-1") for _ in range(2)]
    other = make_connection(owner, osai_account_id="acct-2")
    for connection in [*twins, other]:
        a_year_by_month(owner, connection)  # each request queues its first steps itself
    dispatcher.enqueue_due_buckets()  # and a dispatcher round after them
    steps = [args[1] for args in queue if args[0] == "reports.tasks.bucket_step"]
    enqueued = len(steps)
    by_account = dict.fromkeys(("acct-1", "acct-2"), 0)
    for account in Bucket.objects.filter(pk__in=steps).values_list(
        "connection__osai_account_id", flat=True
    ):
        by_account[account] += 1
    assert enqueued == 5  # the person's cap
    assert by_account["acct-1"] == 3  # the shared account's cap, across both connections
    # Those wait out of the queue, and the page says so.
    report = Report.objects.filter(connections=twins[0]).get()
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("report_detail", args=[report.pk])).content.decode()
    assert "waiting for a free slot" in page


@pytest.mark.django_db(transaction=True)
def test_reports_in_flight_are_polled_even_behind_a_backlog_waiting_for_a_slot(
    queue: list[tuple[Any, ...]], settings: Any
) -> None:
    """A connection at its cap with older new buckets waiting: the polls that free a slot
    must still be queued, or nothing ever moves again (a deadlock the demo once hit)."""
    settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION = 2
    owner = make_user()
    connection = make_connection(owner)
    a_year_by_month(owner, connection)  # 12 new buckets, due now
    now = timezone.now()
    in_flight = list(Bucket.objects.filter(connection=connection).order_by("-pk")[:2])
    Bucket.objects.filter(pk__in=[b.pk for b in in_flight]).update(
        state=Bucket.State.POLLING, osai_report_id=7, next_attempt_at=now
    )
    queue.clear()
    assert dispatcher.enqueue_due_buckets(now + timedelta(seconds=1)) == 2
    steps = {args[1] for args in queue if args[0] == "reports.tasks.bucket_step"}
    assert steps == {b.pk for b in in_flight}  # the polls, and no new report over the cap


# --- F2 and F3: request limits, double clicks ----------------------------------------------------


@pytest.mark.django_db
def test_requests_over_the_hourly_limit_get_a_message_and_create_nothing(settings: Any) -> None:
    settings.OSAI_REPORT_REQUESTS_PER_HOUR = 2
    owner = make_user()
    connection = make_connection(owner)
    now = timezone.now()
    for month in (1, 2):
        period = (datetime(2025, month, 1, tzinfo=UTC), datetime(2025, month + 1, 1, tzinfo=UTC))
        request_report(owner, [connection], period=period, granularity="month", now=now)
    with pytest.raises(report_requests.ReportRequestError, match="2 reports in the last hour"):
        a_day = (YEAR[0], YEAR[0] + timedelta(days=1))
        request_report(owner, [connection], period=a_day, granularity="month", now=now)
    client = Client()
    client.force_login(owner)
    response = client.post(
        reverse("report_new"),
        {
            "connections": [connection.pk],
            "preset": "last_month",
            "granularity": "total",
            "include_models": "on",
        },
    )
    assert response.status_code == 200 and "in the last hour" in response.content.decode()
    assert Report.objects.count() == 2
    figures.figure("F2 requests refused over the limit", 2)


@pytest.mark.django_db
def test_too_many_waiting_parts_are_refused(settings: Any) -> None:
    settings.OSAI_MAX_WAITING_BUCKETS_PER_PERSON = 20
    owner = make_user()
    connection = make_connection(owner)
    a_year_by_month(owner, connection)  # 12 waiting
    with pytest.raises(report_requests.ReportRequestError, match="at most 20 may wait"):
        year_before = (YEAR[0] - timedelta(days=365), YEAR[0])
        request_report(owner, [connection], period=year_before, granularity="month")
    assert Report.objects.count() == 1


@pytest.mark.django_db
def test_an_identical_request_within_seconds_is_the_same_report() -> None:
    owner = make_user()
    connection = make_connection(owner)
    first = a_year_by_month(owner, connection)
    assert a_year_by_month(owner, connection) == first
    later = a_year_by_month(owner, connection, now=timezone.now() + timedelta(seconds=30))
    assert later != first
    assert Report.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_double_click_makes_one_report(queue: list[tuple[Any, ...]]) -> None:
    """F3: two identical POSTs at once, from two threads (two connections to the database)."""
    owner = make_user()
    connection = make_connection(owner)
    form = {
        "connections": [connection.pk],
        "preset": "custom",
        "date_from": "2025-01-01",
        "date_to": "2025-12-31",
        "granularity": "month",
        "include_models": "on",
    }
    locations: list[str] = []
    barrier = threading.Barrier(2)

    def click() -> None:
        client = Client()
        client.force_login(owner)
        barrier.wait()
        locations.append(client.post(reverse("report_new"), form)["Location"])
        close_old_connections()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Report.objects.count() == 1
    assert locations == [reverse("report_detail", args=[Report.objects.get().pk])] * 2
    figures.figure("F3 double-submits merged", 1)
