"""Retention (reports/retention.py, R1-R3): issue 23, "nothing grows for ever".

A year of synthetic history is pruned; exactly what is past its retention goes, and nothing a
page, a budget, an export or the spend ledger reads."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from dateutil.relativedelta import relativedelta
from django.core.management import call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from reports import retention, tasks
from reports.integrations import webhooks
from reports.models import (
    Alert,
    Bucket,
    BucketFile,
    Budget,
    Channel,
    Connection,
    Delivery,
    LedgerEntry,
    Report,
    ReportBucket,
    WebhookEvent,
)
from reports.spend import budgets, ledger, notify, tracking
from reports.spend.monthly import month_spend, price_book_of
from reports.spend.period_spend import period_spend
from tests import factories
from tests.support.figures import figure

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
TODAY = datetime(2026, 6, 15, tzinfo=UTC)


def _month(months_back: int) -> date:
    return (NOW - relativedelta(months=months_back)).date().replace(day=1)


@dataclass
class History:
    owner: Any
    connection: Connection  # tracked: its held buckets, budget, webhooks
    lab: Connection  # reports only
    budget: Budget
    held: list[Bucket]
    open_latest: Bucket
    open_replaced: Bucket
    open_stale: Bucket
    open_orphan: Bucket
    open_in_report: Bucket
    kept_report_buckets: list[Bucket]
    orphans_old: list[Bucket]
    orphans_recent: list[Bucket]
    pending_old: Delivery
    alert_named_by_pending: Alert


def _report_with_raw_files(
    owner: Any, connection: Connection, start: date, end: date
) -> tuple[Report, list[Bucket]]:
    """A finished report on one connection over [start, end) (UTC days), and its buckets, each
    with its raw JSON file."""
    report = factories.make_done_report(
        owner,
        [connection],
        start=datetime.combine(start, time(), tzinfo=UTC),
        end=datetime.combine(end, time(), tzinfo=UTC),
    )
    buckets = list(Bucket.objects.filter(report_buckets__report=report))
    for bucket in buckets:
        factories.make_bucket_file(bucket)
    return report, buckets


def _year_of_history(settings: Any, time_machine: Any) -> History:
    """A year of one person's data, moving the clock as it was made."""
    settings.OSAI_HELD_MONTHS = 12  # a year held, as production holds 25 months
    time_machine.move_to(NOW - relativedelta(months=15))
    factories.ensure_example_price_book()
    owner = factories.make_user(email="owner@example.com")
    connection = factories.make_connection(owner, "Tracked")
    lab = factories.make_connection(owner, "Lab")

    # Reports whose buckets outlive them: one deleted 3.5 months ago, one 10 days ago.
    time_machine.move_to(datetime(2026, 3, 1, tzinfo=UTC))
    gone, orphans_old = _report_with_raw_files(owner, lab, date(2024, 1, 1), date(2024, 4, 1))
    gone.delete()
    time_machine.move_to(NOW - timedelta(days=10))
    gone, orphans_recent = _report_with_raw_files(owner, lab, date(2024, 6, 1), date(2024, 8, 1))
    gone.delete()

    # A report that still exists, made months ago: its buckets and raw JSON stay.
    time_machine.move_to(datetime(2026, 1, 10, tzinfo=UTC))
    kept, kept_report_buckets = _report_with_raw_files(
        owner, lab, date(2025, 1, 1), date(2025, 4, 1)
    )

    # OSAI's webhooks, one a week for a year.
    for week in range(52, -1, -1):
        body = {"taskType": "Training", "success": True, "taskId": f"t{week}"}
        webhooks.webhook_receive(
            connection=connection,
            body=json.dumps(body).encode(),
            content_type="application/json",
            now=NOW - timedelta(days=7 * week),
        )

    # Alerts and their messages for the past months (older than last month: as budget_check
    # left them); the most recent failed one, an old one still waiting.
    time_machine.move_to(NOW - relativedelta(months=15))
    budget = budgets.budget_set(
        actor=owner,
        scope="connection",
        amount="0.01",
        connection=connection,
        emails=["owner@example.com"],
    )
    alert_named_by_pending = None
    pending_old = None
    for back in range(14, 1, -1):
        time_machine.move_to(NOW - relativedelta(months=back))
        alert = Alert.objects.create(
            budget=budget,
            month=_month(back),
            kind=Alert.Kind.ACTUAL,
            threshold=100,
            percent=Decimal(150),
            value=Decimal("0.02"),
        )
        [delivery] = notify.deliveries_create(
            subject="Budget",
            text="t",
            payload={},
            emails=["owner@example.com"],
            budget=budget,
            alert=alert,
        )
        state = Delivery.State.FAILED if back == 10 else Delivery.State.SENT
        if back == 14:
            state = Delivery.State.PENDING
            alert_named_by_pending, pending_old = alert, delivery
        Delivery.objects.filter(pk=delivery.pk).update(state=state)
    assert alert_named_by_pending is not None and pending_old is not None

    # Tracking's held data: 12 months and every day since last month, and the open days.
    time_machine.move_to(NOW)
    closed, _ = tracking.tracked_periods(NOW)
    held = factories.make_held_buckets(connection, closed)

    def open_bucket(conn: Connection, start: datetime, end: datetime, tracked: bool) -> Bucket:
        bucket = factories.make_done_bucket(conn, start, end, closed=False)
        Bucket.objects.filter(pk=bucket.pk).update(tracked=tracked)
        return bucket

    open_stale = open_bucket(
        connection, TODAY - timedelta(days=1), TODAY - timedelta(hours=4), True
    )
    open_replaced = open_bucket(connection, TODAY, TODAY + timedelta(hours=10), True)
    open_latest = open_bucket(connection, TODAY, TODAY + timedelta(hours=11), True)
    open_orphan = open_bucket(lab, TODAY, TODAY + timedelta(hours=9), False)
    open_in_report = open_bucket(lab, TODAY, TODAY + timedelta(hours=8), False)
    ReportBucket.objects.create(report=kept, bucket=open_in_report)
    ledger.ledger_fill([connection.pk], now=NOW)

    # This month's and last month's alerts, as the budget check makes them.
    time_machine.move_to(datetime(2026, 5, 31, 23, 0, tzinfo=UTC))
    assert budgets.budget_check(budget, now=datetime(2026, 5, 31, 23, 0, tzinfo=UTC))
    time_machine.move_to(NOW)
    assert budgets.budget_check(budget, now=NOW)
    return History(
        owner=owner,
        connection=connection,
        lab=lab,
        budget=budget,
        held=held,
        open_latest=open_latest,
        open_replaced=open_replaced,
        open_stale=open_stale,
        open_orphan=open_orphan,
        open_in_report=open_in_report,
        kept_report_buckets=kept_report_buckets,
        orphans_old=orphans_old,
        orphans_recent=orphans_recent,
        pending_old=pending_old,
        alert_named_by_pending=alert_named_by_pending,
    )


def _rows() -> dict[str, int]:
    return {
        "webhook events": WebhookEvent.objects.count(),
        "deliveries": Delivery.objects.count(),
        "alerts": Alert.objects.count(),
        "buckets": Bucket.objects.count(),
        "raw OSAI JSON": Bucket.objects.filter(osai_response__isnull=False).count(),
        "bucket files": BucketFile.objects.count(),
        "ledger rows": LedgerEntry.objects.count(),
    }


def _spend(history: History) -> tuple[Any, ...]:
    """What the overview (this month) and the team page (any period) add up."""
    book = price_book_of(None)
    assert book is not None
    month = month_spend([history.connection], book, now=NOW)
    year = period_spend(
        [history.connection.pk], book, NOW - relativedelta(months=12), TODAY, now=NOW
    )
    return (
        month.month_to_date,
        month.previous_same_days,
        month.by_connection,
        year.total,
        sorted(year.bucket_ids()),
    )


def test_nothing_grows_for_ever_a_year_of_history_keeps_exactly_what_is_still_read(
    settings: Any, time_machine: Any, queue: Any
) -> None:
    history = _year_of_history(settings, time_machine)
    time_machine.move_to(NOW, tick=False)
    before, spend_before = _rows(), _spend(history)
    alerts_recent = set(Alert.objects.filter(month__gte=_month(1)).values_list("pk", flat=True))

    counts = retention.prune()

    after = _rows()
    figure("R1-R3 rows before prune (a year of history)", before)
    figure("R1-R3 rows after prune", after)
    assert counts == {
        "webhook events": 40,  # weeks 13 to 52 back: older than 90 days
        "deliveries": 8,  # sent or failed, older than 180 days (months 6 to 13 back)
        "alerts": 1,  # 13 months back, its message gone; 14 back is named by a waiting one
        "anomalies": 0,
        "superseded buckets": 3,  # yesterday's open day, today's replaced one, an orphan
        "raw OSAI JSON": 3,  # the report deleted 3.5 months ago; not the one 10 days ago
    }
    assert after["webhook events"] == before["webhook events"] - 40
    assert after["buckets"] == before["buckets"] - 3
    assert after["ledger rows"] == before["ledger rows"]
    assert after["bucket files"] == before["bucket files"] - 3

    # Held buckets, their ledger rows and the pages' totals are as they were.
    assert Bucket.objects.filter(pk__in=[b.pk for b in history.held]).count() == len(history.held)
    assert _spend(history) == spend_before
    assert spend_before[0] > 0 and spend_before[3] > 0
    # Open buckets: the latest open day and the one a report links stay.
    assert set(Bucket.objects.filter(is_closed=False).values_list("pk", flat=True)) == {
        history.open_latest.pk,
        history.open_in_report.pk,
    }
    # A report's buckets keep their raw JSON; a deleted report's keep their totals.
    for bucket in history.kept_report_buckets:
        bucket.refresh_from_db()
        assert bucket.osai_response is not None and BucketFile.objects.filter(bucket=bucket)
    for bucket in history.orphans_old:
        totals = bucket.totals()
        bucket.refresh_from_db()
        assert bucket.osai_response is None and not BucketFile.objects.filter(bucket=bucket)
        assert bucket.totals() == totals  # still reused by a later request, without OSAI
    for bucket in history.orphans_recent:
        bucket.refresh_from_db()
        assert bucket.osai_response is not None and BucketFile.objects.filter(bucket=bucket)

    # Messages: a waiting one stays whatever its age, and so does the alert it names.
    assert Delivery.objects.filter(pk=history.pending_old.pk).exists()
    assert Alert.objects.filter(pk=history.alert_named_by_pending.pk).exists()
    assert not Delivery.objects.filter(
        state__in=(Delivery.State.SENT, Delivery.State.FAILED),
        created_at__lt=NOW - timedelta(days=180),
    ).exists()
    # A1: this month's and last month's alerts stay; checking again alerts no one twice.
    assert alerts_recent <= set(Alert.objects.values_list("pk", flat=True))
    assert budgets.budget_check(history.budget, now=NOW) == []
    assert budgets.budget_check(history.budget, now=datetime(2026, 5, 31, 23, 0, tzinfo=UTC)) == []

    # A second prune finds nothing left to do.
    assert set(retention.prune().values()) == {0}


def test_nothing_grows_for_ever_a_dry_run_deletes_nothing_and_prints_counts(
    settings: Any, time_machine: Any, queue: Any
) -> None:
    _year_of_history(settings, time_machine)
    time_machine.move_to(NOW, tick=False)
    before = _rows()
    out = io.StringIO()
    call_command("prune", "--dry-run", stdout=out)
    assert _rows() == before
    assert out.getvalue().splitlines() == [
        "webhook events: would delete 40",
        "deliveries: would delete 8",
        "alerts: would delete 1",
        "anomalies: would delete 0",
        "superseded buckets: would delete 3",
        "raw OSAI JSON: would delete 3",
    ]
    out = io.StringIO()
    call_command("prune", stdout=out)
    assert out.getvalue().splitlines()[0] == "webhook events: deleted 40"
    assert _rows() != before


def test_nothing_grows_for_ever_this_and_last_months_alerts_stay_whatever_the_setting(
    settings: Any, time_machine: Any, queue: Any
) -> None:
    """A1: the Alert row is what keeps a threshold from alerting twice in its month."""
    settings.OSAI_RETAIN_ALERTS_MONTHS = 0
    settings.OSAI_RETAIN_DELIVERIES_DAYS = 0
    history = _year_of_history(settings, time_machine)
    time_machine.move_to(NOW, tick=False)
    retention.prune()
    kept_months = set(Alert.objects.values_list("month", flat=True))
    assert {_month(0), _month(1)} <= kept_months
    assert not Alert.objects.filter(month__lt=_month(1)).exclude(deliveries__isnull=False)
    assert budgets.budget_check(history.budget, now=NOW) == []
    assert budgets.budget_check(history.budget, now=datetime(2026, 5, 31, 23, 0, tzinfo=UTC)) == []


def _bulk_history(owner: Any, connection: Connection, n: int) -> None:
    """n of each kind past its retention, written in a few queries."""
    old = NOW - timedelta(days=400)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(connection=connection, dedupe_key=f"k{i}", body="{}", received_at=old)
        for i in range(10 * n)
    )
    budget = Budget.objects.filter(owner=owner).first() or budgets.budget_set(
        actor=owner, scope="connection", amount="5", connection=connection
    )
    alerts = Alert.objects.bulk_create(
        Alert(
            budget=budget,
            month=(old - relativedelta(months=i)).date().replace(day=1),
            kind=Alert.Kind.ACTUAL,
            threshold=50,
            percent=Decimal(60),
            value=Decimal(3),
        )
        for i in range(Alert.objects.count(), Alert.objects.count() + 5 * n)
    )
    Delivery.objects.bulk_create(
        Delivery(
            key=f"{connection.pk}-{i}",
            channel=Channel.Kind.EMAIL,
            target="a@example.com",
            subject="s",
            text="t",
            state=Delivery.State.SENT,
            created_at=old,
            alert=alerts[i % len(alerts)],
        )
        for i in range(10 * n)
    )
    orphans = Bucket.objects.bulk_create(
        Bucket(
            connection=connection,
            period_start=datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=i),
            period_end=datetime(2020, 1, 2, tzinfo=UTC) + timedelta(days=i),
            is_closed=True,
            state=Bucket.State.DONE,
            osai_response={"status": 0},
            finished_at=old,
        )
        for i in range(5 * n)
    )
    BucketFile.objects.bulk_create(
        BucketFile(bucket=b, content=b"{}", sha256="0" * 64, size_bytes=2) for b in orphans
    )
    Bucket.objects.bulk_create(
        Bucket(
            connection=connection,
            period_start=TODAY - timedelta(days=i + 1),
            period_end=TODAY - timedelta(days=i, hours=1),
            is_closed=False,
            tracked=True,
            state=Bucket.State.DONE,
            finished_at=old,
        )
        for i in range(5 * n)
    )


def test_nothing_grows_for_ever_prune_runs_in_a_bounded_number_of_queries(
    time_machine: Any,
) -> None:
    time_machine.move_to(NOW, tick=False)
    queries = []
    for n in (1, 10):
        owner = factories.make_user()
        connection = factories.make_connection(owner)
        _bulk_history(owner, connection, n)
        with CaptureQueriesContext(db_connection) as captured:
            counts = retention.prune()
        assert counts == {
            "webhook events": 10 * n,
            "deliveries": 10 * n,
            "alerts": 5 * n,
            "anomalies": 0,
            "superseded buckets": 5 * n,
            "raw OSAI JSON": 5 * n,
        }
        queries.append(len(captured))
    figure("R1-R3 queries per prune (35 and 350 rows pruned)", queries)
    assert queries[0] == queries[1]
    assert queries[0] <= 30
    # Nothing pruned: a few counting queries.
    with CaptureQueriesContext(db_connection) as captured:
        assert set(retention.prune().values()) == {0}
    assert len(captured) <= 6


def test_nothing_grows_for_ever_the_daily_prune_schedule_exists() -> None:
    """Made by migration 0013; a worker start (ensure_schedules) makes it again."""
    from django.utils import timezone
    from django_q.models import Schedule

    from reports.schedules import PRUNE, ensure_schedules, next_prune_at

    schedule = Schedule.objects.get(name=PRUNE)
    assert (schedule.func, schedule.schedule_type) == ("reports.tasks.retention_prune", "D")
    Schedule.objects.filter(name=PRUNE).delete()
    ensure_schedules()
    schedule = Schedule.objects.get(name=PRUNE)
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        "reports.tasks.retention_prune",
        Schedule.DAILY,
        -1,
    )
    # First at the next 03:00 UTC, not at the worker's start; a later start keeps its time.
    assert schedule.next_run.astimezone(UTC).hour == 3
    assert timezone.now() < schedule.next_run <= timezone.now() + timedelta(days=1)
    ensure_schedules()
    assert Schedule.objects.get(name=PRUNE).next_run == schedule.next_run
    assert next_prune_at(datetime(2026, 6, 15, 2, 59, tzinfo=UTC)) == datetime(
        2026, 6, 15, 3, tzinfo=UTC
    )
    assert next_prune_at(datetime(2026, 6, 15, 3, 0, tzinfo=UTC)) == datetime(
        2026, 6, 16, 3, tzinfo=UTC
    )
    assert tasks.retention_prune().startswith("webhook events: deleted 0; ")
