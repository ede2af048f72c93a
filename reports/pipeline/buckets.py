"""Finding or making buckets: the OSAI reports a request or a tracking refresh needs.

A closed period's finished bucket is reused forever (one per connection, flags and period);
a bucket of a period that is still open is made afresh each time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from reports.access import bucket_is_wanted
from reports.models import Bucket, Connection
from reports.periods import utc_midnight
from reports.pipeline.progress import refresh_reports_of

# Sent once a bucket has finished with OSAI's answer (state DONE is written): the layers above
# keep what they derive from finished buckets (the spend ledger) by listening, so the pipeline
# imports nothing above it. `bucket_id` is the bucket's pk.
bucket_done = Signal()

UNWANTED_MESSAGE = (
    "Stopped: no report needs this part any more (its connection is no longer shared with "
    "the team, or its owner left the team)."
)


class BucketConflict(Exception):
    """Another request created one of the same closed buckets a moment ago."""


def buckets_for(
    connections: list[Connection],
    periods: list[tuple[datetime, datetime]],
    flags: dict[str, bool],
    now: datetime,
    *,
    tracked: bool = False,
) -> list[Bucket]:
    """Existing closed buckets where there are any, new ones for the rest.

    Closed buckets that failed before are reset so the worker tries them again; a period
    that is not closed yet always gets a new bucket. `tracked` marks them wanted by tracking;
    the ones tracking makes are background work, and a person's request that reuses one
    makes it a person's (the dispatcher serves people first: reports/pipeline/dispatcher.py).
    Raises BucketConflict if another request created one of the same closed buckets at once.
    """
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
                    tracked=tracked,
                    background=tracked,
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
            raise BucketConflict from None
    if to_reset:
        bucket_reset(Bucket.objects.filter(pk__in=to_reset), now=now)
    if tracked:
        existing_ids = [b.pk for b in result if b.pk and not b.tracked]
        Bucket.objects.filter(pk__in=existing_ids).update(tracked=True)
    else:
        adopted = [b.pk for b in result if b.pk and b.background and not b.is_terminal]
        if adopted:
            Bucket.objects.filter(pk__in=adopted).update(background=False)
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


def bucket_finish(pk: int, state: str, message: str = "") -> None:
    """Move a bucket to a terminal state (only from an active one) and refresh its reports.

    A finished bucket and what bucket_done's receivers write from it (the ledger's rows)
    commit together: a worker killed in between leaves neither, and the step runs again."""
    with transaction.atomic():
        changed = (
            Bucket.objects.active()
            .filter(pk=pk)
            .update(
                state=state,
                error_message=message[:500],
                finished_at=timezone.now(),
                next_attempt_at=None,
                lease_until=None,
            )
        )
        if changed and state == Bucket.State.DONE:
            bucket_done.send(sender=Bucket, bucket_id=pk)
    if changed:
        refresh_reports_of(pk)


def buckets_time_out_overdue(now: datetime) -> None:
    overdue = list(Bucket.objects.active().filter(deadline_at__lt=now).values_list("pk", flat=True))
    for pk in overdue:
        bucket_finish(
            pk,
            Bucket.State.TIMED_OUT,
            "OSAI did not finish this report before the deadline "
            f"({settings.OSAI_BUCKET_DEADLINE_SECONDS // 60} min).",
        )


def buckets_release_unwanted(bucket_ids: Iterable[int], *, message: str = "") -> int:
    """Stop, at once, the unfinished buckets that no live report wants any more (M1).

    The same rule the worker checks before every step; this makes it take effect without
    waiting for the bucket's next turn. Returns how many were stopped.
    """
    stopped = 0
    for bucket in Bucket.objects.active().filter(pk__in=list(bucket_ids)):
        if not bucket_is_wanted(bucket):
            bucket_finish(bucket.pk, Bucket.State.CANCELLED, message or UNWANTED_MESSAGE)
            stopped += 1
    return stopped
