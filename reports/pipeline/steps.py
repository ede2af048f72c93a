"""The steps of one bucket, what a worker does: create, poll, download. Short and idempotent.

    bucket: new → creating → polling → downloading → done
                                     ↘ error / timed_out / cancelled

Our rows are the source of truth, never django-q2's task table. Delivery is at least once
and a worker may die anywhere, so:

- A step starts by *claiming* its bucket with one conditional UPDATE (a lease). A second
  delivery of the same task finds the lease held and does nothing (Q9).
- The OSAI report id is committed right after `POST /Reports` returns, so a re-run polls
  instead of creating a second OSAI report. The one window left: a worker killed after OSAI
  answered the POST but before that commit. The re-run then creates one more OSAI report
  (at most one extra per kill, Q1).
- Each claim counts an attempt; a step that makes progress resets the count. A bucket whose
  step keeps crashing its worker, or keeps meeting transient errors, stops after
  OSAI_BUCKET_MAX_ATTEMPTS with a message (Q5). Every bucket has a deadline (Q6).

The dispatcher (reports/pipeline/dispatcher.py) decides when a step runs; a step only writes
when its bucket is next due.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, Q
from django.utils import timezone
from django_q.tasks import async_task

from osai.client import OsaiClient
from osai.errors import OsaiAuthError, OsaiError, OsaiRateLimited
from reports import crypto
from reports.access import bucket_is_wanted
from reports.metrics import OSAI_FIELD_TO_COLUMN, to_osai_flags
from reports.models import Bucket, BucketFile, Connection
from reports.pipeline import eta
from reports.pipeline.buckets import UNWANTED_MESSAGE, bucket_finish, buckets_time_out_overdue
from reports.pipeline.connections import connection_mark_needs_token, osai_client_for
from reports.pipeline.dispatcher import DISPATCH_LEAD_SECONDS
from reports.pipeline.failpoints import failpoint
from reports.pipeline.progress import note_next_poll, refresh_reports_of


def _poll_delay(polls: int) -> float:
    """Seconds until the next status poll of a bucket that has been polled `polls` times.

    The first poll comes soon (most reports of a short period are quick); then every 2 s, the
    seed playbook's own interval, while the report is young; then the gap grows by half per
    poll up to a cap, so a slow report costs OSAI a handful of polls, not one every 2 s.
    """
    first = settings.OSAI_POLL_FIRST_SECONDS
    steady = settings.OSAI_POLL_STEADY_SECONDS
    cap = settings.OSAI_POLL_MAX_SECONDS
    steady_polls = int(settings.OSAI_POLL_STEADY_PERIOD_SECONDS // steady)
    if polls <= 0:
        return float(min(first, cap))
    if polls <= steady_polls:
        return float(min(steady, cap))
    return float(min(steady * 1.5 ** (polls - steady_polls), cap))


def _backoff_on_schedule(since_created: float, polls: int) -> float:
    """Seconds to the back-off's next poll, kept on its schedule counted from the create.

    Each poll comes a little after its moment (the dispatcher's wake, the broker's hop);
    counted from the previous poll that lateness would add up, a second or two over a slow
    report. Counted from the create it does not, and no poll comes before its moment, so a
    report still makes at most the back-off's polls (P1). A poll far behind (a long queue)
    catches up at half the interval, not all at once.
    """
    planned = sum(_poll_delay(n) for n in range(polls + 1))
    return max(planned - since_created, _poll_delay(polls) / 2)


def _claim(pk: int, now: datetime) -> bool:
    lease = now + timedelta(seconds=settings.OSAI_STEP_LEASE_SECONDS)
    return bool(
        Bucket.objects.active()
        .filter(pk=pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=lease, next_attempt_at=lease, attempts=F("attempts") + 1, queued_at=None
        )
    )


def _save(bucket: Bucket, **fields: object) -> None:
    """Write fields of a bucket we hold the lease of, and release the lease."""
    fields.setdefault("lease_until", None)
    # Never overwrite a terminal state (a deadline or a cancel may have landed meanwhile).
    Bucket.objects.active().filter(pk=bucket.pk).update(**fields)
    for name, value in fields.items():
        setattr(bucket, name, value)


def bucket_step(pk: int, not_before: float | None = None) -> str:
    """Do the next step of one bucket: create, poll, or download. Safe to run twice.

    `not_before` (epoch seconds): when the step was due; it was enqueued a moment early
    (DISPATCH_LEAD_SECONDS) to hide the broker's hop. Only the poll aimed at the moment OSAI
    should be done waits for it (a precise poll that came early would find the report still
    generating); any other step runs at once rather than hold a worker process idle.
    """
    now = timezone.now()
    if not _claim(pk, now):
        return "not claimed (done, or another worker holds it)"
    bucket = Bucket.objects.select_related("connection").get(pk=pk)
    if not_before is not None and _aimed_at_expected_moment(bucket, not_before):
        time.sleep(min(max(not_before - time.time(), 0.0), DISPATCH_LEAD_SECONDS))
        now = timezone.now()
    if bucket.attempts > settings.OSAI_BUCKET_MAX_ATTEMPTS:
        bucket_finish(
            pk,
            Bucket.State.ERROR,
            f"Gave up after {bucket.attempts - 1} attempts: the worker crashed or OSAI kept "
            "failing while processing this part of the report. Retry the report later.",
        )
        return "gave up"
    if bucket.deadline_at and now > bucket.deadline_at:
        buckets_time_out_overdue(now)
        return "timed out"
    if not bucket_is_wanted(bucket):
        bucket_finish(pk, Bucket.State.CANCELLED, UNWANTED_MESSAGE)
        return "no report wants it any more"
    if bucket.connection.status == Connection.Status.NEEDS_TOKEN:
        bucket_finish(pk, Bucket.State.ERROR, _needs_token_message(bucket.connection))
        _stop_background(bucket.connection)
        return "connection needs a token"
    if bucket.started_at is None:
        Bucket.objects.filter(pk=pk).update(started_at=now)
        refresh_reports_of(pk)
    failpoint("step_start")
    try:
        client = osai_client_for(bucket.connection)
        if bucket.state in (Bucket.State.NEW, Bucket.State.CREATING):
            return _step_create(bucket, client)
        return _step_poll(bucket, client)
    except crypto.TokenDecryptionError as exc:
        bucket_finish(pk, Bucket.State.ERROR, str(exc))
        return "token unreadable"
    except OsaiAuthError as exc:
        connection_mark_needs_token(connection=bucket.connection, message=exc.message)
        bucket_finish(pk, Bucket.State.ERROR, _needs_token_message(bucket.connection))
        _stop_background(bucket.connection)
        return "auth refused"
    except OsaiError as exc:
        if exc.permanent:
            bucket_finish(pk, Bucket.State.ERROR, exc.message)
            return "failed"
        delay = _poll_delay(bucket.polls + 1)
        if isinstance(exc, OsaiRateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        # Keep the attempt counted: repeated transient errors end at the attempt limit.
        _save(
            bucket,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            error_message=f"Retrying: {exc.message}"[:500],
        )
        return "transient error, retrying"


def _aimed_at_expected_moment(bucket: Bucket, not_before: float) -> bool:
    due = datetime.fromtimestamp(not_before, tz=UTC)
    return bucket.state == Bucket.State.POLLING and eta.is_aimed(due, bucket.expected_ready_at)


def _stop_background(connection: Connection) -> int:
    """The token stopped working: end the connection's background work (history being
    filled in, a refresh) at once, rather than a step each; the overview says why. People's
    buckets still end on their own next step. A new token resumes it (tracking resets
    failed buckets). Returns how many stopped."""
    waiting = Bucket.objects.active().filter(connection=connection, background=True)
    stopped = 0
    for pk in waiting.values_list("pk", flat=True):
        bucket_finish(pk, Bucket.State.ERROR, _needs_token_message(connection))
        stopped += 1
    return stopped


def _needs_token_message(connection: Connection) -> str:
    return (
        f"OSAI no longer accepts the access token of the connection {connection.label!r} "
        "(…" + connection.token_last4 + "). Add a new token on the Connections page."
    )


def _step_create(bucket: Bucket, client: OsaiClient) -> str:
    with transaction.atomic():
        # Politeness: a bounded number of OSAI reports in flight per connection.
        Connection.objects.select_for_update().filter(pk=bucket.connection_id).first()
        in_flight = (
            Bucket.objects.filter(
                connection_id=bucket.connection_id, state__in=Bucket.IN_FLIGHT_STATES
            )
            .exclude(pk=bucket.pk)
            .count()
        )
        if in_flight >= settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION:
            _save(
                bucket,
                attempts=F("attempts") - 1,
                next_attempt_at=timezone.now() + timedelta(seconds=2),
            )
            return "waiting for a free slot"
        _save(bucket, state=Bucket.State.CREATING, lease_until=bucket.lease_until)
    plan = eta.estimate(_finished_samples(bucket))
    created = client.create_report(
        bucket.period_start, bucket.period_end, to_osai_flags(bucket.flags())
    )
    failpoint("after_create")
    seen_at = timezone.now()
    first_poll = seen_at + timedelta(seconds=eta.seconds_to_next_poll(plan, 0.0, 0, _poll_delay))
    # Commit the id at once: from here on a re-run polls instead of creating again.
    _save(
        bucket,
        state=Bucket.State.POLLING,
        osai_report_id=created.id,
        osai_status=created.status,
        osai_created_at=created.creation_time,
        osai_creation_time_raw=created.creation_time_raw[:40],
        created_seen_at=seen_at,
        eta_low_seconds=plan.low if plan else None,
        expected_ready_at=seen_at + timedelta(seconds=plan.high) if plan else None,
        attempts=0,
        next_attempt_at=first_poll,
        error_message="",
    )
    note_next_poll(bucket.pk, first_poll)  # the badge looks just after it
    if plan is not None:
        refresh_reports_of(bucket.pk)  # the badge shows the estimate
    return "created"


def _finished_samples(bucket: Bucket) -> list[eta.Sample]:
    """How long OSAI took for the connection's last buckets of the same length, newest first."""
    shortest, longest = eta.length_class(bucket.period_end - bucket.period_start)
    length = ExpressionWrapper(F("period_end") - F("period_start"), output_field=DurationField())
    rows = (
        Bucket.objects.filter(
            connection_id=bucket.connection_id,
            ready_seen_seconds__isnull=False,
            pending_seen_seconds__isnull=False,
        )
        .annotate(length=length)
        .filter(length__gt=shortest, length__lte=longest)
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
        .values_list("pending_seen_seconds", "ready_seen_seconds", "polls")[: eta.WINDOW]
    )
    return [
        eta.Sample(pending, ready, polls)
        for pending, ready, polls in rows
        if pending is not None and ready is not None
    ]


def _plan_of(bucket: Bucket) -> eta.Estimate | None:
    """The polling plan made when the bucket was created at OSAI (None: the back-off)."""
    if bucket.eta_low_seconds is None or not bucket.expected_ready_at or not bucket.created_seen_at:
        return None
    high = (bucket.expected_ready_at - bucket.created_seen_at).total_seconds()
    return eta.Estimate(low=bucket.eta_low_seconds, high=high, samples=0)


def _step_poll(bucket: Bucket, client: OsaiClient) -> str:
    assert bucket.osai_report_id is not None
    asked_at = timezone.now()
    status = client.get_report(bucket.osai_report_id)
    failpoint("after_poll")
    polls = bucket.polls + 1
    plan = _plan_of(bucket)
    # Seconds since OSAI answered our POST when we asked (None for buckets created before
    # that was recorded): what OSAI's answer tells us about how long it takes.
    elapsed = (
        (asked_at - bucket.created_seen_at).total_seconds() if bucket.created_seen_at else None
    )
    if status.is_pending:
        now = timezone.now()
        if bucket.created_seen_at is None:
            delay = _poll_delay(polls)
        else:
            since_created = (now - bucket.created_seen_at).total_seconds()
            delay = (
                _backoff_on_schedule(since_created, polls)
                if plan is None
                else eta.seconds_to_next_poll(plan, since_created, polls, _poll_delay)
            )
        _save(
            bucket,
            polls=polls,
            osai_status=status.status,
            pending_seen_seconds=elapsed,
            attempts=0,
            error_message="",
            next_attempt_at=now + timedelta(seconds=delay),
        )
        note_next_poll(bucket.pk, now + timedelta(seconds=delay))  # the badge looks just after
        return "still generating"
    learned: dict[str, object] = {}
    if elapsed is not None:
        low, high = eta.sample_of(bucket.pending_seen_seconds, elapsed, plan)
        learned = {"pending_seen_seconds": low, "ready_seen_seconds": high}
    if status.is_error:
        _save(
            bucket,
            polls=polls,
            osai_status=status.status,
            lease_until=bucket.lease_until,
            **learned,
        )
        bucket_finish(
            bucket.pk,
            Bucket.State.ERROR,
            "OSAI reported an error while generating this report (status 1).",
        )
        return "osai error"
    # Done: keep the totals exactly as received, then archive the file at `path` at once,
    # because the signed link expires.
    totals = {column: status.totals[osai] for osai, column in OSAI_FIELD_TO_COLUMN.items()}
    _save(
        bucket,
        polls=polls,
        osai_status=status.status,
        osai_response=status.raw,
        state=Bucket.State.DOWNLOADING,
        lease_until=bucket.lease_until,
        **learned,
        **totals,
    )
    note = ""
    if status.path:
        try:
            content = client.download_report_file(status.path)
            failpoint("after_download")
        except OsaiError as exc:
            if not exc.permanent:
                raise  # transient: try the step again; it polls once more for a fresh link
            note = f"The report file could not be archived: {exc.message}"
        else:
            BucketFile.objects.update_or_create(
                bucket=bucket,
                defaults={
                    "content": content,
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "size_bytes": len(content),
                    "downloaded_at": timezone.now(),
                },
            )
    else:
        note = "OSAI gave no report file to archive."
    _save(bucket, attempts=0, lease_until=bucket.lease_until)
    bucket_finish(bucket.pk, Bucket.State.DONE, note)
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if bucket.tracked and bucket.period_end > month_start:
        # A tracking refresh of this month may be complete: its budgets are evaluated then
        # (by name, so the pipeline imports nothing above it). History says nothing to them.
        async_task(
            "reports.tasks.tracking_bucket_done",
            bucket.connection_id,
            task_name=f"osai-tracked-{bucket.pk}",
        )
    return "done"
