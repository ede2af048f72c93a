"""Plain factory functions for tests: users, connections, teams, finished and requested reports.

Most write rows directly (no OSAI calls), so view and cost tests run without a sandbox;
`request_report` and `request_team_report` go through the services the pages call, so the
pipeline takes the report from there (tests/support/pipeline.py `drive`, or a worker).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from reports import crypto
from reports.metrics import FLAG_FIELDS, OSAI_FIELD_TO_COLUMN, USAGE_COLUMNS, all_flags
from reports.models import Bucket, Connection, Granularity, Membership, Report, ReportBucket, Team
from reports.periods import split_period
from reports.pipeline import report_requests
from reports.pipeline.buckets import bucket_done
from reports.teams import team_reports

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"
# A closed month long past: its buckets are reused by every later request.
MARCH_2025 = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def make_user(username: str | None = None, **extra: Any) -> Any:
    username = username or f"user{next(_seq)}"
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


def make_connection(
    owner: Any,
    label: str | None = None,
    *,
    token: str | None = None,
    region: str = "sandbox",
    **extra: Any,
) -> Connection:
    token = token or f"osai-sandbox-{owner.username}-{next(_seq)}"
    return Connection.objects.create(
        owner=owner,
        label=label or f"Connection {next(_seq)}",
        region=region,
        token_encrypted=crypto.encrypt_secret(token),
        token_last4=token[-4:],
        account_name=f"{owner.username}@sandbox",
        last_verified_at=timezone.now(),
        **extra,
    )


def make_team(
    name: str | None = None,
    *,
    admins: list[Any] = (),  # type: ignore[assignment]
    members: list[Any] = (),  # type: ignore[assignment]
    viewers: list[Any] = (),  # type: ignore[assignment]
) -> Team:
    team = Team.objects.create(name=name or f"Team {next(_seq)}")
    for role, users in (
        (Membership.Role.ADMIN, admins),
        (Membership.Role.MEMBER, members),
        (Membership.Role.VIEWER, viewers),
    ):
        for user in users:
            Membership.objects.create(team=team, user=user, role=role)
    return team


def usage(seed: int = 1, scale: float = 1.0) -> dict[str, float]:
    """Deterministic raw OSAI totals (seconds, KB-minutes, counts) for a bucket."""
    base = {
        "existing_images": 1000 + seed,
        "deleted_images": 10 + seed,
        "images_kb_min": 5.0e9 * seed,
        "models_kb_min": 1.0e9 * seed,
        "manipulation_seconds": 1800 * seed,
        "training_seconds_8gb": 7200 * seed,
        "training_seconds_16gb": 3600 * seed,
        "conversion_seconds_8gb": 600 * seed,
        "conversion_seconds_16gb": 300 * seed,
        "prediction_seconds_8gb": 120 * seed,
        "prediction_seconds_16gb": 60 * seed,
        "device_rental_seconds": 3600 * seed,
    }
    return {k: v * scale for k, v in base.items()}


def make_done_bucket(
    connection: Connection,
    start: datetime,
    end: datetime,
    *,
    seed: int = 1,
    flags: dict[str, bool] | None = None,
    state: str = Bucket.State.DONE,
    closed: bool = True,
) -> Bucket:
    flags = flags or dict.fromkeys(FLAG_FIELDS, True)
    values = usage(seed) if state == Bucket.State.DONE else {}
    raw = {osai: values.get(col) for osai, col in OSAI_FIELD_TO_COLUMN.items()}
    return Bucket.objects.create(
        connection=connection,
        period_start=start,
        period_end=end,
        is_closed=closed,
        state=state,
        osai_report_id=16000 + next(_seq) if state == Bucket.State.DONE else None,
        osai_status=0 if state == Bucket.State.DONE else None,
        osai_creation_time_raw="2026-02-10T14:33:33.7629037Z",
        osai_created_at=datetime(2026, 2, 10, 14, 33, 33, 762903, tzinfo=UTC),
        osai_response={"status": 0, **raw} if state == Bucket.State.DONE else None,
        finished_at=timezone.now(),
        **flags,
        **values,
    )


# What tracking's finished buckets have in common, whatever their period.
HELD_AND_DONE: dict[str, Any] = {"state": Bucket.State.DONE, "tracked": True}


def held_bucket(
    connection: Connection,
    start: datetime,
    end: datetime,
    *,
    closed: bool = True,
    totals: Mapping[str, float] | None = None,
    **fields: Any,
) -> Bucket:
    """A held bucket as tracking leaves it, not saved yet: done, tracked, every category.
    `totals`: what OSAI counted, every other usage column 0 (without them the usage columns
    stay empty); `fields`: any other column (finished_at, osai_report_id …)."""
    usage_columns = {} if totals is None else dict.fromkeys(USAGE_COLUMNS, 0.0) | dict(totals)
    return Bucket(
        connection=connection,
        period_start=start,
        period_end=end,
        is_closed=closed,
        **HELD_AND_DONE,
        **all_flags(),
        **usage_columns,
        **fields,
    )


def save_as_finished(bucket: Bucket) -> Bucket:
    """Save `bucket` and send its bucket_done, as the pipeline finishes one: the spend ledger
    writes its rows (replacing those of an older bucket of the same open day)."""
    bucket.save()
    bucket_done.send(sender=Bucket, bucket_id=bucket.pk)
    return bucket


def make_daily_buckets(
    connection: Connection, start: datetime, days: int, **fields: Any
) -> list[Bucket]:
    """`days` finished, closed daily buckets from `start`, written in one query (fast for
    thousands); `fields` (usage columns, flags) go on every one of them."""
    return Bucket.objects.bulk_create(
        Bucket(
            connection=connection,
            period_start=start + timedelta(days=i),
            period_end=start + timedelta(days=i + 1),
            is_closed=True,
            state=Bucket.State.DONE,
            osai_report_id=16000 + next(_seq),
            osai_creation_time_raw="2026-02-10T14:33:33.7629037Z",
            **fields,
        )
        for i in range(days)
    )


def make_done_report(
    owner: Any,
    connections: list[Connection] | None = None,
    *,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    end: datetime = datetime(2026, 4, 1, tzinfo=UTC),
    granularity: str = Granularity.MONTH,
    team: Team | None = None,
    state: str = Report.State.DONE,
    price_book: Any = None,
) -> Report:
    """A finished report with one done bucket per period and connection (seed = position)."""
    connections = connections if connections is not None else [make_connection(owner)]
    report = Report.objects.create(
        owner=owner,
        team=team,
        period_start=start,
        period_end=end,
        granularity=granularity,
        state=state,
        price_book=price_book,
        # Requested a while ago: a request for the same report now is not a double click.
        requested_at=timezone.now() - timedelta(minutes=5),
        started_at=timezone.now(),
        finished_at=timezone.now() if state in Report.TERMINAL_STATES else None,
    )
    report.connections.set(connections)
    periods = split_period(start, end, granularity)
    n = 0
    for connection in connections:
        for i, (s, e) in enumerate(periods, start=1):
            bucket = Bucket.objects.filter(
                connection=connection, period_start=s, period_end=e, is_closed=True
            ).first()
            bucket = bucket or make_done_bucket(connection, s, e, seed=i)
            ReportBucket.objects.create(report=report, bucket=bucket)
            n += 1
    Report.objects.filter(pk=report.pk).update(buckets_total=n, buckets_done=n)
    report.refresh_from_db()
    return report


def request_report(
    owner: Any,
    connections: list[Connection] | None = None,
    *,
    period: tuple[datetime, datetime] = MARCH_2025,
    granularity: str = Granularity.TOTAL,
    flags: dict[str, bool] | None = None,
    **options: Any,
) -> Report:
    """A report requested as the report form requests it (report_requests.report_request).

    By default: over a new connection of the owner's, March 2025 as one total, every category.
    `options` go to the service as they are (preset, team, price_book, compare, now …).
    """
    return report_requests.report_request(
        owner=owner,
        connections=connections if connections is not None else [make_connection(owner)],
        period_start=period[0],
        period_end=period[1],
        granularity=granularity,
        flags=all_flags() if flags is None else flags,
        **options,
    )


def request_team_report(
    team: Team,
    admin: Any,
    *,
    period: tuple[datetime, datetime] = MARCH_2025,
    granularity: str = Granularity.TOTAL,
    flags: dict[str, bool] | None = None,
    **options: Any,
) -> Report:
    """A team report requested by one of its admins (team_reports.team_report_request), over
    what members share; the same defaults as `request_report`."""
    return team_reports.team_report_request(
        team=team,
        admin=admin,
        period_start=period[0],
        period_end=period[1],
        granularity=granularity,
        flags=all_flags() if flags is None else flags,
        **options,
    )


# --- Teams and exports ----------------------------------------------------------------------


def share_with(team: Team, *connections: Connection) -> None:
    """Share connections with a team, as their owners would on the team's sharing page."""
    for connection in connections:
        connection.shared_with_teams.add(team)


def make_bucket_file(bucket: Bucket, content: bytes = b'{"usage": []}') -> Any:
    """Archive a raw OSAI JSON file for a bucket, with its SHA-256."""
    import hashlib

    from reports.models import BucketFile

    return BucketFile.objects.create(
        bucket=bucket,
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
    )


def ensure_example_price_book() -> Any:
    """The shipped example price book, as migration 0003 makes it.

    Transactional tests flush the database, migration data included, so tests that need the
    default book call this.
    """
    import importlib

    from django.apps import apps

    from reports.models import PriceBook

    importlib.import_module("reports.migrations.0003_example_price_book").add_example(apps, None)
    return PriceBook.objects.get(is_default=True)


def make_held_buckets(
    connection: Connection, periods: list[tuple[datetime, datetime]], *, seed: int = 1
) -> list[Bucket]:
    """Held buckets, as tracking leaves them: finished, closed, tracked, every flag on; one per
    period (days or months), seeds counting up from `seed` so their usage differs."""
    buckets = [
        make_done_bucket(connection, start, end, seed=seed + i)
        for i, (start, end) in enumerate(periods)
    ]
    Bucket.objects.filter(pk__in=[b.pk for b in buckets]).update(tracked=True)
    for bucket in buckets:
        bucket.tracked = True
    return buckets


def make_anomaly(
    connection: Connection,
    day: date,
    *,
    column: str = "training_seconds_16gb",
    kind: str = "spike",
    actual: float = 100 * 3600.0,
    high: float = 3 * 3600.0,
    feedback: str = "",
) -> Any:
    """An anomaly as the detector records it (reports/spend/anomalies.py): `actual` usage on
    `day`, against a usual 0 to `high` (raw units); idle storage has the range 0-0."""
    from reports.models import Anomaly

    return Anomaly.objects.create(
        connection=connection,
        day=day,
        column=column,
        kind=kind,
        actual=actual,
        expected_low=0.0,
        expected_high=0.0 if kind == "idle_storage" else high,
        feedback=feedback,
    )
