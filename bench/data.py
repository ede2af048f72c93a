"""Bench data: users, sandbox connections and finished reports, written in bulk with the ORM.

Used in the benchmark process (on var/bench/bench.sqlite3) and, for the large data sets of
P6 and P10, in helper processes on their own copies of the migrated database:

    python -m bench.data p6 --extra-reports 10000   (prints JSON: ids, session cookie)
    python -m bench.data p10 --rows 10000 --rows 100000

Users get an unusable password and a session made with Django's test client
(`force_login`), so no password hashing (PBKDF2, about a second each) slows the setup.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import django

TOKEN_PREFIX = "osai-sandbox-bench-"


def setup_django() -> None:
    """For helper processes: DJANGO_SETTINGS_MODULE and DATABASE_URL come from the caller."""
    django.setup()


def make_user(username: str) -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model()(username=username)
    user.set_unusable_password()
    user.save()
    return user


def make_connection(owner: Any, label: str) -> tuple[Any, str]:
    """A sandbox connection with a fresh token, so a fresh OSAI account; (connection, account)."""
    from osai.sandbox import account_id_for_token

    token = f"{TOKEN_PREFIX}{label.lower().replace(' ', '-')}-{secrets.token_hex(4)}"
    return token_connection(owner, label, token), account_id_for_token(token)


def token_connection(owner: Any, label: str, token: str, **fields: Any) -> Any:
    """A verified sandbox connection of `owner` with `token` (two connections of one token
    share an OSAI account); `fields`: any other column (osai_account_id …)."""
    from django.utils import timezone

    from reports import crypto
    from reports.models import Connection

    return Connection.objects.create(
        owner=owner,
        label=label,
        region="sandbox",
        token_encrypted=crypto.encrypt_secret(token),
        token_last4=token[-4:],
        account_name=f"{owner.username}@sandbox",
        last_verified_at=timezone.now(),
        **fields,
    )


def request_report(
    owner: Any, connection: Any, start: datetime, end: datetime, granularity: str, **options: Any
) -> Any:
    """A report on one connection with every flag on, through the service the form calls."""
    from reports.metrics import all_flags
    from reports.pipeline import report_requests

    return report_requests.report_request(
        owner=owner,
        connections=[connection],
        period_start=start,
        period_end=end,
        granularity=granularity,
        flags=all_flags(),
        **options,
    )


def signed_in_client(user: Any) -> Any:
    """Django's test client on 127.0.0.1, logged in as `user` (the session is saved to the
    bench database and cache)."""
    from django.test import Client

    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    return client


def session_cookie(user: Any) -> str:
    """A logged-in session for `user`: its cookie."""
    return str(signed_in_client(user).cookies["sessionid"].value)


def _totals(seed: int) -> dict[str, float]:
    """Deterministic raw OSAI totals (seconds, KB-minutes, counts) for a bucket."""
    n = seed % 97 + 1
    return {
        "existing_images": 1000.0 + n,
        "deleted_images": 10.0 + n,
        "images_kb_min": 5.0e9 * n,
        "models_kb_min": 1.0e9 * n,
        "manipulation_seconds": 1800.0 * n,
        "training_seconds_8gb": 7200.0 * n,
        "training_seconds_16gb": 3600.0 * n,
        "conversion_seconds_8gb": 600.0 * n,
        "conversion_seconds_16gb": 300.0 * n,
        "prediction_seconds_8gb": 120.0 * n,
        "prediction_seconds_16gb": 60.0 * n,
        "device_rental_seconds": 3600.0 * n,
    }


def done_bucket(connection: Any, start: datetime, end: datetime, seed: int) -> Any:
    """An unsaved finished bucket with deterministic totals, as the worker would leave it."""
    from reports.metrics import OSAI_FIELD_TO_COLUMN
    from reports.models import Bucket

    totals = _totals(seed)
    created = end + timedelta(hours=1)
    raw = {osai: totals[column] for osai, column in OSAI_FIELD_TO_COLUMN.items()}
    return Bucket(
        connection=connection,
        period_start=start,
        period_end=end,
        is_closed=True,
        state=Bucket.State.DONE,
        osai_report_id=100_000 + seed,
        osai_status=0,
        osai_created_at=created,
        osai_creation_time_raw=created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        osai_response={"id": 100_000 + seed, "status": 0, **raw},
        polls=3,
        created_at=created,
        started_at=created,
        finished_at=created,
        **totals,
    )


def bulk_done_reports(
    owner: Any,
    connection: Any,
    periods: Sequence[Sequence[tuple[datetime, datetime]]],
    granularity: str,
    *,
    requested_at: datetime | None = None,
    batch: int = 2000,
) -> list[int]:
    """Finished reports, one per list of periods, each with its own new buckets; their ids."""
    from reports.models import Bucket, Report, ReportBucket

    now = requested_at or datetime.now(UTC)
    reports = [
        Report(
            owner=owner,
            period_start=report_periods[0][0],
            period_end=report_periods[-1][1],
            granularity=granularity,
            state=Report.State.DONE,
            buckets_total=len(report_periods),
            buckets_done=len(report_periods),
            requested_at=now - timedelta(seconds=i),
            started_at=now - timedelta(seconds=i),
            finished_at=now - timedelta(seconds=i),
        )
        for i, report_periods in enumerate(periods)
    ]
    Report.objects.bulk_create(reports, batch_size=batch)
    seed = 0
    buckets: list[Bucket] = []
    for report_periods in periods:
        for start, end in report_periods:
            seed += 1
            buckets.append(done_bucket(connection, start, end, seed))
    Bucket.objects.bulk_create(buckets, batch_size=batch)
    links, through, position = [], [], 0
    for report, report_periods in zip(reports, periods, strict=True):
        for _ in report_periods:
            links.append(ReportBucket(report=report, bucket=buckets[position]))
            position += 1
        through.append(Report.connections.through(report_id=report.pk, connection_id=connection.pk))
    ReportBucket.objects.bulk_create(links, batch_size=batch)
    Report.connections.through.objects.bulk_create(through, batch_size=batch)
    return [r.pk for r in reports]


def monthly_periods(months: int, end: datetime) -> list[tuple[datetime, datetime]]:
    """`months` whole UTC months ending at the first of `end`'s month."""
    from dateutil.relativedelta import relativedelta

    last = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    starts = [last - relativedelta(months=n) for n in range(months, 0, -1)]
    return [(s, s + relativedelta(months=1)) for s in starts]


def daily_periods(days: int, end: datetime) -> list[tuple[datetime, datetime]]:
    """`days` whole UTC days ending at `end`'s midnight, oldest first."""
    midnight = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        (midnight - timedelta(days=n), midnight - timedelta(days=n - 1)) for n in range(days, 0, -1)
    ]


def tracked_buckets(
    connection: Any, now: datetime, *, with_open_day: bool = False, usage: bool = True
) -> list[Any]:
    """Unsaved finished buckets of everything tracking holds for a connection (the held
    months and every closed held day: two years, with the production settings; the open day
    if asked), as a refresh would have left them. `usage=False` makes them all zero."""
    from reports.metrics import USAGE_COLUMNS
    from reports.periods import utc_midnight
    from reports.spend.tracking import tracked_periods

    closed, open_day = tracked_periods(now)
    periods = [*closed, *([open_day] if with_open_day and open_day else [])]
    midnight = utc_midnight(now.date())
    buckets = []
    for n, (start, end) in enumerate(periods):
        bucket = done_bucket(connection, start, end, connection.pk * 100 + n)
        bucket.tracked = True
        bucket.is_closed = end <= midnight
        if not bucket.is_closed:
            bucket.osai_created_at = bucket.created_at = bucket.finished_at = now
        if not usage:
            for column in USAGE_COLUMNS:
                setattr(bucket, column, 0.0)
        buckets.append(bucket)
    return buckets


# --- Helper-process entry points ----------------------------------------------------------


def seed_p6(extra_reports: int) -> dict[str, Any]:
    """The user whose pages P6 measures: one finished 12-month report (the newest report in
    the database). With `extra_reports`, finished one-day reports (1 bucket each) as a busy
    shared server holds them: a tenth are this user's, older, on the same connection; the
    rest belong to 9 other users and are newer than this user's, so that the user's recent
    reports sit behind other people's in time."""
    now = datetime.now(UTC)
    user = make_user("p6-user")
    main, _ = make_connection(user, "Production")
    own = extra_reports // 10
    owners = [(user, main, own)]
    share = -(-(extra_reports - own) // 9) if extra_reports else 0
    for n in range(9):
        count = min(share, extra_reports - own - n * share)
        if count > 0:
            other = make_user(f"p6-other-{n}")
            owners.append((other, make_connection(other, "Production")[0], count))
    for n, (owner, connection, count) in enumerate(owners):
        if count <= 0:
            continue
        # This user's reports are the oldest; the others' follow, in blocks.
        newest = now - timedelta(days=2) if owner == user else now - timedelta(hours=n)
        bulk_done_reports(
            owner,
            connection,
            [[d] for d in daily_periods(count, now - timedelta(days=400))],
            "total",
            requested_at=newest,
        )
    report_id = bulk_done_reports(user, main, [monthly_periods(12, now)], "month")[0]
    return {
        "report": report_id,
        "session": session_cookie(user),
        "own_reports": 1 + own,
        "rows_before_fifth_own": _rows_before_fifth_own(user),
        "previous_period_buckets": _previous_period_buckets(report_id),
    }


def _rows_before_fifth_own(user: Any) -> int:
    """Reports, newest first, up to this user's 5th newest: what a scan of the requested_at
    index reads to fill the dashboard's five recent reports (for the P6 note)."""
    from reports.models import Report

    fifth = (
        Report.objects.filter(owner=user)
        .order_by("-requested_at", "-id")
        .values_list("requested_at", flat=True)[4:5]
    )
    if not fifth:
        return Report.objects.count()
    return Report.objects.filter(requested_at__gte=fifth[0]).count()


def _previous_period_buckets(report_id: int) -> int:
    """Finished buckets the report page reads for its period-over-period change (for the
    P6 note): same connections and flags, inside the period of equal length before."""
    from reports.models import Bucket, Report
    from reports.periods import previous_period

    report = Report.objects.get(pk=report_id)
    start, end = previous_period(report.period_start, report.period_end)
    return Bucket.objects.filter(
        connection__in=report.connections.all(),
        state=Bucket.State.DONE,
        period_start__gte=start,
        period_end__lte=end,
        **report.flags(),
    ).count()


def seed_p10(rows: Sequence[int]) -> dict[str, Any]:
    """Reports of exactly N finished daily buckets each (the largest N built, smaller N
    reuse its first buckets), for the CSV export."""
    from reports.models import Bucket, Report, ReportBucket

    now = datetime.now(UTC)
    user = make_user("p10-user")
    connection, _ = make_connection(user, "Export")
    biggest = max(rows)
    report_ids = bulk_done_reports(user, connection, [daily_periods(biggest, now)], "day")
    bucket_ids = list(
        Bucket.objects.filter(report_buckets__report_id=report_ids[0])
        .order_by("period_start")
        .values_list("pk", flat=True)
    )
    result = {str(biggest): report_ids[0]}
    for n in sorted(set(rows) - {biggest}):
        head = bucket_ids[:n]
        report = Report.objects.create(
            owner=user,
            period_start=now - timedelta(days=n),
            period_end=now,
            granularity="day",
            state=Report.State.DONE,
            buckets_total=n,
            buckets_done=n,
        )
        report.connections.add(connection)
        ReportBucket.objects.bulk_create(
            [ReportBucket(report=report, bucket_id=pk) for pk in head], batch_size=5000
        )
        result[str(n)] = report.pk
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p6 = sub.add_parser("p6")
    p6.add_argument("--extra-reports", type=int, default=0)
    p10 = sub.add_parser("p10")
    p10.add_argument("--rows", type=int, action="append", required=True)
    options = parser.parse_args()
    setup_django()
    if options.command == "p6":
        print(json.dumps(seed_p6(options.extra_reports)))
    else:
        print(json.dumps(seed_p10(options.rows)))


if __name__ == "__main__":
    main()
