"""Plain factory functions for tests: users, connections, teams and finished reports.

They write rows directly (no OSAI calls), so view and cost tests run without a sandbox.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from reports import crypto
from reports.metrics import FLAG_FIELDS, OSAI_FIELD_TO_COLUMN
from reports.models import Bucket, Connection, Granularity, Membership, Report, ReportBucket, Team
from reports.periods import split_period

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


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


def make_team(name: str | None = None, *, admins: list[Any] = (), members: list[Any] = ()) -> Team:  # type: ignore[assignment]
    team = Team.objects.create(name=name or f"Team {next(_seq)}")
    for user in admins:
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    for user in members:
        Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
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


# --- Teams and exports (appended for tests/test_teams.py and tests/test_exports.py) ---------


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
