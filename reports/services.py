"""Services: what views, commands and tasks call to change state.

Keyword-only functions named `<entity>_<action>`. Views parse input and call these; the
report pipeline itself (what the worker does) lives in reports/pipeline.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from reports import crypto
from reports.models import (
    FLAG_FIELDS,
    Bucket,
    Connection,
    Granularity,
    PriceBook,
    Report,
    ReportBucket,
    Team,
)
from reports.osai.client import OsaiClient, jwt_expiry
from reports.osai.errors import OsaiAuthError, OsaiError
from reports.periods import EARLIEST_PERIOD_START, count_buckets, split_period, utc_midnight

MAX_TOKEN_LENGTH = 4096


class ConnectionCheckError(Exception):
    """The access token could not be checked with OSAI; the message is for the form."""


class ReportRequestError(Exception):
    """A report request that cannot be made; the message is for the form."""


# --- Connections -----------------------------------------------------------------------------


def region_choices() -> list[tuple[str, str]]:
    labels = settings.OSAI_REGION_LABELS
    return [(key, labels.get(key, key.upper())) for key in settings.OSAI_REGIONS]


def osai_client_for(connection: Connection, *, access_token: str | None = None) -> OsaiClient:
    """A client for the connection's region, signed in with its stored (cached) JWT.

    Raises crypto.TokenDecryptionError before any request if the token cannot be read.
    A fresh JWT from a (re-)sign-in is stored encrypted, with its expiry.
    """
    if connection.region not in settings.OSAI_REGIONS:
        raise OsaiError(
            f"The region {connection.region!r} is not offered by this server any more.",
            permanent=True,
        )
    token = (
        access_token
        if access_token is not None
        else crypto.decrypt_secret(connection.token_encrypted)
    )
    jwt: str | None = None
    if (
        access_token is None
        and connection.jwt_encrypted
        and connection.jwt_expires_at
        and connection.jwt_expires_at > timezone.now() + timedelta(seconds=30)
    ):
        try:
            jwt = crypto.decrypt_secret(connection.jwt_encrypted)
        except crypto.TokenDecryptionError:
            jwt = None  # sign in again; the token itself decrypted fine

    def remember_jwt(new_jwt: str) -> None:
        if connection.pk is None:
            return
        expires = jwt_expiry(new_jwt) or timezone.now() + timedelta(minutes=30)
        connection.jwt_encrypted = crypto.encrypt_secret(new_jwt)
        connection.jwt_expires_at = expires
        Connection.objects.filter(pk=connection.pk).update(
            jwt_encrypted=connection.jwt_encrypted, jwt_expires_at=expires
        )

    return OsaiClient(
        settings.OSAI_REGIONS[connection.region],
        token,
        jwt=jwt,
        on_new_jwt=remember_jwt,
        sandbox=connection.region == "sandbox",
    )


def _clean_token(access_token: str) -> str:
    token = (access_token or "").strip()
    if not token:
        raise ConnectionCheckError("Paste the access token you generated in OSAI.")
    if len(token) > MAX_TOKEN_LENGTH or any(ch.isspace() for ch in token):
        raise ConnectionCheckError("That does not look like an OSAI access token.")
    return token


def _check_token(connection: Connection, token: str) -> str:
    """Sign in with the token and read the OSAI account name; raise ConnectionCheckError."""
    client = osai_client_for(connection, access_token=token)
    try:
        client.sign_in()
        user = client.user_info()
    except OsaiAuthError:
        raise ConnectionCheckError(
            "OSAI did not accept this access token. Check that you copied all of it and "
            "that it has not been revoked."
        ) from None
    except OsaiError as exc:
        raise ConnectionCheckError(f"Could not check the token with OSAI: {exc.message}") from None
    if client.jwt:
        connection.jwt_encrypted = crypto.encrypt_secret(client.jwt)
        connection.jwt_expires_at = jwt_expiry(client.jwt) or timezone.now() + timedelta(minutes=30)
    return user.account_name


def _verify_and_store_token(connection: Connection, access_token: str) -> None:
    """Sign in with the token (ConnectionCheckError if OSAI refuses it), then set it on the
    connection, encrypted, with the OSAI account name; the caller saves."""
    token = _clean_token(access_token)
    connection.account_name = _check_token(connection, token)
    connection.token_encrypted = crypto.encrypt_secret(token)
    connection.token_last4 = token[-4:]
    connection.status = Connection.Status.OK
    connection.status_message = ""
    connection.last_verified_at = timezone.now()


def connection_create(*, owner: Any, label: str, region: str, access_token: str) -> Connection:
    """Check the token by signing in, then save the connection with the token encrypted."""
    label = (label or "").strip()
    if not label:
        raise ConnectionCheckError("Give the connection a label, such as 'Production'.")
    if region not in settings.OSAI_REGIONS:
        raise ConnectionCheckError("Choose one of the offered regions.")
    if Connection.objects.filter(owner=owner, label=label).exists():
        raise ConnectionCheckError(f"You already have a connection labelled {label!r}.")
    connection = Connection(owner=owner, label=label, region=region)
    _verify_and_store_token(connection, access_token)
    try:
        connection.save()
    except IntegrityError:
        raise ConnectionCheckError(f"You already have a connection labelled {label!r}.") from None
    return connection


def connection_replace_token(*, connection: Connection, access_token: str) -> Connection:
    """Check a new token and store it in place of the old one."""
    _verify_and_store_token(connection, access_token)
    connection.save()
    return connection


def connection_relabel(*, connection: Connection, label: str) -> Connection:
    label = (label or "").strip()
    if not label:
        raise ConnectionCheckError("The label cannot be empty.")
    if Connection.objects.filter(owner=connection.owner, label=label).exclude(pk=connection.pk):
        raise ConnectionCheckError(f"You already have a connection labelled {label!r}.")
    connection.label = label
    connection.save(update_fields=["label"])
    return connection


def connection_mark_needs_token(*, connection: Connection, message: str) -> None:
    """OSAI refused the token even after a fresh sign-in: stop using it until replaced."""
    Connection.objects.filter(pk=connection.pk).update(
        status=Connection.Status.NEEDS_TOKEN,
        status_message=message[:300],
        jwt_encrypted="",
        jwt_expires_at=None,
    )


def connection_delete(*, connection: Connection) -> int:
    """Delete a connection, its buckets and archived files. Returns how many reports went.

    Reports that covered only this connection would be empty, so they go too; reports that
    combined it with others keep the rest of their buckets and are recounted.
    """
    from reports import pipeline

    with transaction.atomic():
        report_ids = list(connection.reports.values_list("pk", flat=True))
        connection.delete()
        emptied = Report.objects.filter(pk__in=report_ids, connections__isnull=True)
        emptied.delete()
        for report_pk in Report.objects.filter(pk__in=report_ids).values_list("pk", flat=True):
            pipeline.report_refresh(report_pk)
    return len(report_ids) - Report.objects.filter(pk__in=report_ids).count()


def connections_reencrypt() -> tuple[int, int]:
    """Re-encrypt every token and cached JWT under the primary key. Returns (rows, changed).

    Idempotent: rows already under the primary key are left as they are.
    """
    rows = changed = 0
    for connection in Connection.objects.only("pk", "token_encrypted", "jwt_encrypted"):
        rows += 1
        secrets = [connection.token_encrypted, connection.jwt_encrypted]
        if all(not s or crypto.is_under_primary_key(s) for s in secrets):
            continue
        new_token, new_jwt = (crypto.rotate_secret(s) if s else "" for s in secrets)
        Connection.objects.filter(pk=connection.pk).update(
            token_encrypted=new_token, jwt_encrypted=new_jwt
        )
        changed += 1
    return rows, changed


# --- Reports ---------------------------------------------------------------------------------


def flags_from(values: Mapping[str, Any]) -> dict[str, bool]:
    return {name: bool(values.get(name, False)) for name in FLAG_FIELDS}


def report_validate_period(
    *,
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    connections: int,
    now: datetime | None = None,
) -> None:
    """Raise ReportRequestError with a message for the form if the request is unreasonable."""
    now = now or timezone.now()
    if granularity not in Granularity.values:
        raise ReportRequestError("Choose a granularity: total, daily, weekly or monthly.")
    if period_end <= period_start:
        raise ReportRequestError("The period must end after it starts.")
    if period_start < EARLIEST_PERIOD_START:
        raise ReportRequestError(
            f"The period cannot start before {EARLIEST_PERIOD_START:%Y-%m-%d}."
        )
    if period_end > now + timedelta(minutes=1):
        raise ReportRequestError("The period cannot end in the future: OSAI reports past usage.")
    if connections < 1:
        raise ReportRequestError("Choose at least one connection.")
    limit = settings.OSAI_MAX_BUCKETS_PER_REPORT
    needed = count_buckets(period_start, period_end, granularity) * connections
    if needed > limit:
        raise ReportRequestError(
            f"This would need {needed} OSAI reports; the limit is {limit}. "
            "Choose a coarser granularity or a shorter period."
        )


@transaction.atomic
def report_request(
    *,
    owner: Any,
    connections: Iterable[Connection],
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    flags: Mapping[str, bool],
    preset: str = "",
    team: Team | None = None,
    price_book: PriceBook | None = None,
    now: datetime | None = None,
) -> Report:
    """Create a report and its buckets, reusing finished buckets of closed periods.

    Closed buckets that failed before are reset so the worker tries them again; the open
    bucket (it contains now) is always requested afresh. The worker starts after commit.
    """
    now = now or timezone.now()
    connections = list(connections)
    report_validate_period(
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        connections=len(connections),
        now=now,
    )
    if any(c.status == Connection.Status.NEEDS_TOKEN for c in connections):
        names = ", ".join(c.label for c in connections if c.status == Connection.Status.NEEDS_TOKEN)
        raise ReportRequestError(f"These connections need a new access token first: {names}.")
    flags = flags_from(flags)
    if not any(flags.values()):
        raise ReportRequestError("Choose at least one category of usage.")
    if price_book is None:
        price_book = PriceBook.objects.filter(is_default=True).first()

    report = Report.objects.create(
        owner=owner,
        team=team,
        preset=preset,
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        price_book=price_book,
        requested_at=now,
        **flags,
    )
    report.connections.set(connections)
    periods = split_period(period_start, period_end, granularity)
    buckets = _buckets_for(connections, periods, flags, now)
    ReportBucket.objects.bulk_create([ReportBucket(report=report, bucket=b) for b in buckets])

    from reports import pipeline  # the pipeline imports services; import late

    pipeline.report_refresh(report.pk)
    pipeline.start_soon([b.pk for b in buckets if not b.is_terminal])
    report.refresh_from_db()
    return report


def _buckets_for(
    connections: list[Connection],
    periods: list[tuple[datetime, datetime]],
    flags: dict[str, bool],
    now: datetime,
) -> list[Bucket]:
    """Existing closed buckets where there are any, new ones for the rest."""
    deadline = now + timedelta(seconds=settings.OSAI_BUCKET_DEADLINE_SECONDS)
    starts = [start for start, _ in periods]
    existing = {
        (b.connection_id, b.period_start, b.period_end): b
        for b in Bucket.objects.filter(
            connection__in=connections, is_closed=True, period_start__in=starts, **flags
        )
    }
    result: list[Bucket] = []
    to_create: list[Bucket] = []
    to_reset: list[int] = []
    # Closed: ends by today's UTC midnight. A bucket ending later today is still open (OSAI
    # may add usage to it), so it is requested afresh each time and marked preliminary.
    closed_until = utc_midnight(now.date())
    for connection in connections:
        for start, end in periods:
            closed = end <= closed_until
            bucket = existing.get((connection.pk, start, end)) if closed else None
            if bucket is None:
                bucket = Bucket(
                    connection=connection,
                    period_start=start,
                    period_end=end,
                    is_closed=closed,
                    created_at=now,
                    next_attempt_at=now,
                    deadline_at=deadline,
                    **flags,
                )
                to_create.append(bucket)
            elif bucket.state in Bucket.FAILED_STATES:
                to_reset.append(bucket.pk)
                bucket.state = Bucket.State.NEW
            result.append(bucket)
    if to_create:
        try:
            with transaction.atomic():
                Bucket.objects.bulk_create(to_create)
        except IntegrityError:
            # Another request created one of the same closed buckets a moment ago.
            raise ReportRequestError(
                "Another report for the same period is being set up; try again in a moment."
            ) from None
    if to_reset:
        bucket_reset(Bucket.objects.filter(pk__in=to_reset), now=now)
    return result


def bucket_reset(queryset: Any, *, now: datetime) -> int:
    """Put failed buckets back to the start: a new OSAI report, fresh attempts and deadline."""
    return queryset.update(
        state=Bucket.State.NEW,
        osai_report_id=None,
        osai_status=None,
        osai_response=None,
        osai_created_at=None,
        osai_creation_time_raw="",
        attempts=0,
        polls=0,
        next_attempt_at=now,
        lease_until=None,
        error_message="",
        started_at=None,
        finished_at=None,
        deadline_at=now + timedelta(seconds=settings.OSAI_BUCKET_DEADLINE_SECONDS),
    )


def report_cancel(*, report: Report) -> Report:
    """Stop a report. Its unfinished buckets stop too, unless another live report needs them."""
    from reports import pipeline

    with transaction.atomic():
        if report.is_terminal:
            return report
        now = timezone.now()
        Report.objects.filter(pk=report.pk).update(
            state=Report.State.CANCELLED,
            finished_at=now,
            error_message="Cancelled at your request.",
        )
        needed_elsewhere = ReportBucket.objects.filter(
            ~Q(report_id=report.pk),
            ~Q(report__state__in=Report.TERMINAL_STATES),
        ).values("bucket_id")
        Bucket.objects.filter(report_buckets__report=report).exclude(
            state__in=Bucket.TERMINAL_STATES
        ).exclude(pk__in=needed_elsewhere).update(
            state=Bucket.State.CANCELLED,
            finished_at=now,
            next_attempt_at=None,
            error_message="Cancelled.",
        )
    pipeline.report_refresh(report.pk)
    report.refresh_from_db()
    return report


def report_retry(*, report: Report) -> Report:
    """Try the failed, timed-out or cancelled buckets of a report again."""
    from reports import pipeline

    now = timezone.now()
    with transaction.atomic():
        failed = Bucket.objects.filter(
            report_buckets__report=report, state__in=Bucket.FAILED_STATES
        )
        ids = list(failed.values_list("pk", flat=True))
        if not ids:
            return report
        bucket_reset(Bucket.objects.filter(pk__in=ids), now=now)
        Report.objects.filter(pk=report.pk).update(
            state=Report.State.QUEUED, finished_at=None, error_message=""
        )
        pipeline.report_refresh(report.pk)
        pipeline.start_soon(ids)
    report.refresh_from_db()
    return report
