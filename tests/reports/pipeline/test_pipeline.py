"""The report pipeline against the real sandbox over a socket, steps run in this process.

These drive `bucket_step` directly (no qcluster), so each test controls time and faults
exactly. tests/e2e/test_pipeline_worker.py runs the same pipeline in a real worker.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from reports import crypto
from reports.metrics import OSAI_FIELD_TO_COLUMN
from reports.models import Bucket, BucketFile, Connection, Report
from reports.periods import preset_period
from reports.pipeline import connections, dispatcher, progress, report_requests, steps
from tests.factories import make_connection, make_user, request_report
from tests.support import figures
from tests.support.pipeline import direct_totals, drive

POST = "POST /api/Reports"
GET = "GET /api/Reports/{id}"
FILE = "GET /s3/file"
SIGN_IN = "POST /api/Users/SignIn"
YEAR_2025 = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
JANUARY = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))
MARCH_APRIL = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 5, 1, tzinfo=UTC))

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def account(use_sandbox: Any, fast: Any) -> tuple[Any, Connection, str]:
    use_sandbox.set_latency(0.2)
    user = make_user()
    token = f"osai-sandbox-pipeline-{user.username}"
    return user, make_connection(user, "Main", token=token), token


def test_a_year_by_month_completes_with_the_sandbox_totals(account, use_sandbox, queue):
    user, conn, token = account
    report = request_report(user, [conn], period=YEAR_2025, granularity="month")
    assert report.buckets_total == 12 and report.state == Report.State.QUEUED
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE
    assert (report.buckets_done, report.buckets_failed) == (12, 0)
    # P1: one create and one download per bucket, polls within the back-off schedule.
    assert use_sandbox.calls(POST) == 12
    assert use_sandbox.calls(FILE) == 12
    assert use_sandbox.calls(GET) <= 12 * 6
    buckets = Bucket.objects.filter(report_buckets__report=report)
    assert BucketFile.objects.filter(bucket__in=buckets).count() == 12
    summed = {field: sum(b.totals()[field] for b in buckets) for field in OSAI_FIELD_TO_COLUMN}
    expected = direct_totals(use_sandbox, token, *YEAR_2025)
    for field in OSAI_FIELD_TO_COLUMN:
        if field == "totalExistingImagesNum":
            last = buckets.order_by("period_end").last()
            assert last.totals()[field] == expected[field]
        else:
            assert summed[field] == expected[field], field


def test_rerunning_last_12_months_makes_one_new_osai_report(account, use_sandbox, queue):
    user, conn, _ = account

    def last_12_months(now: datetime) -> Report:
        period = preset_period("last_12_months", now)
        return request_report(
            user, [conn], period=period, granularity="month", preset="last_12_months", now=now
        )

    last_12_months(timezone.now())
    drive()
    assert use_sandbox.calls(POST) == 12
    # A rerun a minute later, not a double click (F3).
    report = last_12_months(timezone.now() + timedelta(minutes=1))
    assert report.buckets_done == 11  # the closed months are reused at once
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE
    assert use_sandbox.calls(POST) == 13  # P2: only the open month is asked again
    figures.figure("P2 new POST /Reports on rerun of 12 months", use_sandbox.calls(POST) - 12)


def test_status_1_fails_the_bucket_with_no_further_calls(account, use_sandbox, queue):
    user, conn, _ = account
    use_sandbox.faults(report_error=True)
    report = request_report(user, [conn])
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.FAILED
    assert "status 1" in report.error_message
    calls = use_sandbox.stats()
    for _ in range(3):
        drive()
    assert use_sandbox.stats() == calls  # P12: nothing more for that bucket
    assert use_sandbox.calls(POST) == 1 and use_sandbox.calls(FILE) == 0


def test_a_report_stuck_at_minus_one_times_out_at_the_deadline(
    account, use_sandbox, queue, settings
):
    user, conn, _ = account
    settings.OSAI_BUCKET_DEADLINE_SECONDS = 2
    use_sandbox.faults(report_stuck=True)
    report = request_report(user, [conn])
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.TIMED_OUT
    bucket = Bucket.objects.get(report_buckets__report=report)
    assert "deadline" in bucket.error_message
    # Q6: polls <= deadline / first interval + 1.
    assert use_sandbox.calls(GET) <= 2 / 0.1 + 1


@pytest.mark.parametrize(
    "garbage", ["json", "html", "huge", "empty", "missing_status", "unknown_status"]
)
def test_garbage_from_osai_ends_in_a_state_a_person_understands(
    account, use_sandbox, queue, garbage
):
    user, conn, _ = account
    use_sandbox.faults(malformed_next=100, malformed=garbage)
    report = request_report(user, [conn])
    drive(30)
    report.refresh_from_db()
    assert report.state == Report.State.FAILED
    bucket = Bucket.objects.get(report_buckets__report=report)
    assert bucket.state == Bucket.State.ERROR
    assert bucket.error_message and "Traceback" not in bucket.error_message
    # Bounded: one create, and a bounded number of polls.
    assert use_sandbox.calls(POST) == 1
    assert use_sandbox.calls(GET) <= 3 * 10
    figures.fault(f"Q7 garbage {garbage}", survived=1)


def test_a_few_garbage_answers_are_retried_and_the_report_completes(account, use_sandbox, queue):
    user, conn, _ = account
    use_sandbox.faults(malformed_next=1, malformed="html")
    report = request_report(user, [conn])
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE


def test_rate_limits_and_server_errors_are_waited_out(account, use_sandbox, queue):
    user, conn, _ = account
    use_sandbox.faults(rate_limit_next=2, retry_after="1", route=GET)
    report = request_report(user, [conn])
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE
    assert use_sandbox.calls(POST) == 1
    figures.fault("H4 429 on poll", injected=2, survived=2)


def test_the_same_step_delivered_twice_at_once_creates_one_osai_report(account, use_sandbox, queue):
    user, conn, _ = account
    report = request_report(user, [conn])
    bucket = Bucket.objects.get(report_buckets__report=report)
    results: list[str] = []

    def run() -> None:
        results.append(steps.bucket_step(bucket.pk))
        db_connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[0].startswith("created") or "created" in results
    assert sum(r.startswith("not claimed") for r in results) == 1
    drive()
    assert use_sandbox.calls(POST) == 1  # Q9
    report.refresh_from_db()
    assert report.state == Report.State.DONE
    figures.fault("Q9 duplicate delivery", survived=1)


def test_an_expired_jwt_is_renewed_by_one_sign_in(account, use_sandbox, queue):
    user, conn, _ = account
    request_report(user, [conn])
    drive()
    sign_ins = use_sandbox.calls(SIGN_IN)
    # The cached JWT is still "valid" by its expiry here, but the sandbox refuses it.
    Connection.objects.filter(pk=conn.pk).update(
        jwt_encrypted=crypto.encrypt_secret("eyJhbGciOiJIUzI1NiJ9.e30.bogus"),
        jwt_expires_at=timezone.now() + timedelta(hours=1),
    )
    april = (datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 5, 1, tzinfo=UTC))
    report = request_report(user, [conn], period=april)
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE
    assert use_sandbox.calls(SIGN_IN) == sign_ins + 1  # T5: exactly one re-sign-in


def test_a_token_osai_refuses_marks_the_connection_and_stops(account, use_sandbox, queue):
    user, conn, _ = account
    revoked = "revoked-token-0000"
    Connection.objects.filter(pk=conn.pk).update(
        token_encrypted=crypto.encrypt_secret(revoked), jwt_encrypted="", jwt_expires_at=None
    )
    conn.refresh_from_db()
    report = request_report(user, [conn], period=MARCH_APRIL, granularity="month")
    drive()
    report.refresh_from_db()
    conn.refresh_from_db()
    assert report.state == Report.State.FAILED
    assert conn.status == Connection.Status.NEEDS_TOKEN
    assert "new token" in report.error_message
    assert use_sandbox.calls(POST) == 0
    # T5: the first bucket signs in once and stops; the second sees the mark and makes no call.
    assert use_sandbox.calls(SIGN_IN) == 1
    with pytest.raises(report_requests.ReportRequestError, match="need a new access token"):
        request_report(user, [conn], period=MARCH_APRIL, granularity="month")


def test_a_wrong_encryption_key_fails_closed_with_no_request(account, use_sandbox, queue, settings):
    user, conn, _ = account
    report = request_report(user, [conn])
    from cryptography.fernet import Fernet

    settings.OSAI_TOKEN_KEYS = [Fernet.generate_key().decode()]
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.FAILED
    assert "cannot be decrypted" in report.error_message
    assert sum(use_sandbox.stats().values()) == 0  # T3: OSAI received nothing
    with pytest.raises(crypto.TokenDecryptionError):
        crypto.decrypt_secret(conn.token_encrypted)


def test_cancel_stops_a_report_and_retry_finishes_it(account, use_sandbox, queue):
    user, conn, _ = account
    use_sandbox.faults(report_stuck=True)
    report = request_report(user, [conn], period=MARCH_APRIL, granularity="month")
    for pk in Bucket.objects.values_list("pk", flat=True):
        steps.bucket_step(pk)
    report = report_requests.report_cancel(report=report)
    assert report.state == Report.State.CANCELLED
    assert not Bucket.objects.active().exists()
    polls = use_sandbox.calls(GET)
    drive()
    assert use_sandbox.calls(GET) == polls
    use_sandbox.faults(report_stuck=False)
    report = report_requests.report_retry(report=report)
    assert report.state == Report.State.QUEUED
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE


def test_no_secret_reaches_the_database_the_queue_or_the_logs(
    account, use_sandbox, caplog, settings
):
    """Q11/T1: a canary token and its JWT appear nowhere but in the encrypted column."""
    import logging

    from django.core.management import call_command

    caplog.set_level(logging.DEBUG)
    user = make_user()
    canary = "osai-sandbox-CANARY-7f3a9c"
    conn = connections.connection_create(
        owner=user, label="Canary", region="sandbox", access_token=canary
    )
    report = request_report(user, [conn], period=MARCH_APRIL, granularity="month")
    drive()
    report.refresh_from_db()
    assert report.state == Report.State.DONE
    jwt = crypto.decrypt_secret(Connection.objects.get(pk=conn.pk).jwt_encrypted)
    assert jwt.count(".") == 2
    import io

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    from tests.support.worker import queued_task_payloads

    payloads = queued_task_payloads()
    assert payloads, "the pipeline enqueued tasks"
    for secret in (canary, jwt, "Signature=", "AWSAccessKeyId="):
        assert secret not in dump.getvalue(), secret
        assert secret not in caplog.text, secret
        assert not any(secret in p for p in payloads), secret
    figures.figure("canary hits", 0)


def test_osai_reports_in_flight_per_connection_are_bounded(account, use_sandbox, queue, settings):
    """Politeness: a connection never has more OSAI reports in flight than the bound."""
    user, conn, _ = account
    settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION = 2
    use_sandbox.faults(report_stuck=True)
    first_half = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC))
    request_report(user, [conn], period=first_half, granularity="month")
    for pk in Bucket.objects.values_list("pk", flat=True):
        steps.bucket_step(pk)
    assert use_sandbox.calls(POST) == 2
    waiting = Bucket.objects.filter(state=Bucket.State.NEW)
    assert waiting.count() == 4
    assert all(b.attempts == 0 for b in waiting)  # waiting for a slot is not a failed attempt
    assert all(b.next_attempt_at > timezone.now() for b in waiting)  # and it tries again later


def test_the_dispatcher_is_a_singleton_and_takes_over_a_dead_ones_lease(account, queue):
    from reports.models import WorkerLease

    user, conn, _ = account
    request_report(user, [conn], period=JANUARY)
    lease = WorkerLease.objects.filter(name=dispatcher.DISPATCHER)
    seconds = dispatcher.DISPATCHER_LEASE_SECONDS
    WorkerLease.objects.update_or_create(
        name=dispatcher.DISPATCHER,
        defaults={"holder": "alive", "expires_at": timezone.now() + timedelta(seconds=seconds)},
    )
    queue.clear()
    # The request queued its step itself; say that task was lost, so the bucket is due again.
    Bucket.objects.update(queued_at=None, next_attempt_at=timezone.now())
    # A live dispatcher renews its lease every second: the reconciler leaves it alone, and a
    # second dispatcher leaves as soon as it sees a renewal.
    assert dispatcher.reconcile() == "a dispatcher is running"
    assert queue == []
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(0.3):
            lease.update(expires_at=timezone.now() + timedelta(seconds=seconds))
        db_connection.close()

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        started = time.monotonic()
        assert dispatcher.dispatch(run_seconds=0.2) == "another dispatcher is running"
        assert time.monotonic() - started < dispatcher.LEASE_FRESH_SECONDS + 1
    finally:
        stop.set()
        renewer.join()
    assert queue == []
    # A dispatcher killed with its worker stops renewing: its successor waits it out.
    lease.update(expires_at=timezone.now() + timedelta(seconds=0.3))
    started = time.monotonic()
    assert dispatcher.dispatch(run_seconds=0.2) == "handed over"
    assert time.monotonic() - started < seconds
    assert ("reports.tasks.bucket_step", Bucket.objects.get().pk) in [q[:2] for q in queue]


def test_a_second_dispatcher_leaves_at_once_when_the_lease_was_just_renewed(account, queue):
    """A burst of wake-ups (a tracking refresh of many connections) queues many dispatcher
    tasks; each must not hold a worker process for LEASE_FRESH_SECONDS while a live
    dispatcher has just renewed its lease."""
    from reports.models import WorkerLease

    WorkerLease.objects.update_or_create(
        name=dispatcher.DISPATCHER,
        defaults={
            "holder": "alive",
            "expires_at": timezone.now() + timedelta(seconds=dispatcher.DISPATCHER_LEASE_SECONDS),
        },
    )
    started = time.monotonic()
    assert dispatcher.dispatch(run_seconds=0.2) == "another dispatcher is running"
    assert time.monotonic() - started < dispatcher.LEASE_FRESH_SECONDS / 4
    assert queue == []


def test_a_report_request_skips_the_wake_up_while_a_dispatcher_runs(account, queue):
    from reports.models import WorkerLease

    user, conn, _ = account
    WorkerLease.objects.update_or_create(
        name=dispatcher.DISPATCHER,
        defaults={"holder": "alive", "expires_at": timezone.now() + timedelta(seconds=60)},
    )
    first = request_report(user, [conn], period=JANUARY)
    # The request queues its bucket's first step itself, and the running dispatcher takes
    # care of the rest: no wake-up task.
    first_bucket = Bucket.objects.get(report_buckets__report=first).pk
    assert queue == [("reports.tasks.bucket_step", first_bucket, None)]
    WorkerLease.objects.all().delete()
    queue.clear()
    february = (datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC))
    second = request_report(user, [conn], period=february)
    second_bucket = Bucket.objects.get(report_buckets__report=second).pk
    assert queue == [
        ("reports.tasks.bucket_step", second_bucket, None),
        ("reports.tasks.pipeline_dispatch",),
    ]


# --- How long OSAI takes (reports/pipeline/eta.py) ---


def test_polling_learns_how_long_osai_takes_per_connection_and_bucket_length(
    account, use_sandbox, queue
):
    """The first report of a kind follows the back-off; later ones poll near the moment OSAI
    was ready last time, and the report carries the estimate for its badge."""
    user, conn, _ = account
    use_sandbox.set_latency(1.0)
    outcomes = []
    for day in range(1, 5):
        start = datetime(2025, 1, day, tzinfo=UTC)
        report = request_report(user, [conn], period=(start, start + timedelta(days=1)))
        bucket = Bucket.objects.get(report_buckets__report=report)
        steps.bucket_step(bucket.pk)  # the create step
        report.refresh_from_db()
        bucket.refresh_from_db()
        assert bucket.state == Bucket.State.POLLING
        outcomes.append((report.expected_done_at, bucket.expected_ready_at))
        drive()
        bucket.refresh_from_db()
        assert bucket.state == Bucket.State.DONE
        assert bucket.ready_seen_seconds >= bucket.pending_seen_seconds
        outcomes[-1] += (bucket.polls, bucket.ready_seen_seconds)
    first, *later = outcomes
    assert first[:2] == (None, None)  # nothing known yet: no estimate, the back-off
    assert first[2] >= 3
    for expected_done_at, expected_ready_at, polls, ready in later[1:]:
        assert expected_done_at == expected_ready_at is not None
        assert polls <= 2
        assert 1.0 <= ready <= 1.6
    # A month is another kind: its first report knows nothing yet.
    month = request_report(user, [conn])
    month_bucket = Bucket.objects.get(report_buckets__report=month)
    steps.bucket_step(month_bucket.pk)
    month_bucket.refresh_from_db()
    assert month_bucket.expected_ready_at is None
    figures.figure("P13 polls per one-day bucket, 1st to 4th report", [o[2] for o in outcomes])


def test_only_the_poll_aimed_at_the_expected_moment_waits_for_it(
    account, use_sandbox, queue, monkeypatch
):
    """Steps go to the broker a moment early; only a poll aimed at the moment OSAI should be
    done waits for that moment in the worker, any other step runs at once."""
    user, conn, _ = account
    slept: list[float] = []
    monkeypatch.setattr(steps.time, "sleep", slept.append)
    report = request_report(user, [conn])
    bucket = Bucket.objects.get(report_buckets__report=report)
    soon = time.time() + 0.2
    steps.bucket_step(bucket.pk, soon)  # the create: no plan, runs at once
    assert slept == []
    bucket.refresh_from_db()
    expected = timezone.now() + timedelta(seconds=0.2)
    Bucket.objects.filter(pk=bucket.pk).update(expected_ready_at=expected, eta_low_seconds=0.1)
    steps.bucket_step(bucket.pk, expected.timestamp())
    assert len(slept) == 1 and 0 < slept[0] <= dispatcher.DISPATCH_LEAD_SECONDS


def test_only_the_aimed_poll_is_enqueued_ahead_of_its_time(account, use_sandbox, queue):
    """A back-off poll due within the lead window waits in the database until it is due
    (sent early, it would find OSAI no further along and cost a poll); the poll aimed at the
    moment OSAI should be done goes to the broker early, with that moment."""
    user, conn, _ = account
    report = request_report(user, [conn])
    bucket = Bucket.objects.get(report_buckets__report=report)
    steps.bucket_step(bucket.pk)  # the create
    now = timezone.now()
    soon = now + timedelta(seconds=dispatcher.DISPATCH_LEAD_SECONDS / 2)
    Bucket.objects.filter(pk=bucket.pk).update(
        queued_at=None, next_attempt_at=soon, expected_ready_at=None
    )
    queue.clear()
    assert dispatcher.enqueue_due_buckets(now) == 0
    assert queue == []
    assert dispatcher.enqueue_due_buckets(soon) == 1  # once due, it goes
    Bucket.objects.filter(pk=bucket.pk).update(
        queued_at=None, next_attempt_at=soon, expected_ready_at=soon
    )
    queue.clear()
    assert dispatcher.enqueue_due_buckets(now) == 1
    assert queue == [("reports.tasks.bucket_step", bucket.pk, soon.timestamp())]


def test_the_dispatcher_wakes_for_a_poll_that_a_running_step_hides(account, use_sandbox, queue):
    """While a step runs, its bucket's next_attempt_at is the step's lease; the moment OSAI
    should be done still wakes the dispatcher, so the aimed poll is not up to a second late.
    A moment already past does not count (the back-off has taken over)."""
    user, conn, _ = account
    report = request_report(user, [conn])
    bucket = Bucket.objects.get(report_buckets__report=report)
    steps.bucket_step(bucket.pk)  # the create
    now = timezone.now()
    running = now + timedelta(seconds=75)
    expected = now + timedelta(seconds=0.8)
    Bucket.objects.filter(pk=bucket.pk).update(next_attempt_at=running, expected_ready_at=expected)
    Connection.objects.update(refresh_due_at=None)
    assert dispatcher._next_due() == expected
    Bucket.objects.filter(pk=bucket.pk).update(expected_ready_at=now - timedelta(seconds=1))
    assert dispatcher._next_due() == running


def test_the_worker_tells_the_report_when_it_next_polls_osai(account, use_sandbox, queue):
    """Without an estimate the badge follows the worker's polls (P5): the create and each
    pending poll publish the next poll on the report; an earlier moment still ahead is kept."""
    user, conn, _ = account
    use_sandbox.set_latency(30.0)
    report = request_report(user, [conn])
    bucket = Bucket.objects.get(report_buckets__report=report)
    steps.bucket_step(bucket.pk)  # the create
    bucket.refresh_from_db()
    report.refresh_from_db()
    assert bucket.state == Bucket.State.POLLING
    assert report.next_check_at == bucket.next_attempt_at
    now = timezone.now()  # that moment comes: the poll
    Bucket.objects.filter(pk=bucket.pk).update(next_attempt_at=now)
    Report.objects.filter(pk=report.pk).update(next_check_at=now)
    steps.bucket_step(bucket.pk)  # OSAI is still generating
    bucket.refresh_from_db()
    report.refresh_from_db()
    assert bucket.polls == 1 and bucket.state == Bucket.State.POLLING
    assert report.next_check_at == bucket.next_attempt_at
    # Another bucket's poll that comes sooner stays; a later one replaces it once it passed.
    now = timezone.now()
    sooner, later = now + timedelta(seconds=5), now + timedelta(seconds=9)
    Report.objects.filter(pk=report.pk).update(next_check_at=sooner)
    progress.note_next_poll(bucket.pk, later)
    assert Report.objects.get(pk=report.pk).next_check_at == sooner
    Report.objects.filter(pk=report.pk).update(next_check_at=now - timedelta(seconds=1))
    progress.note_next_poll(bucket.pk, later)
    assert Report.objects.get(pk=report.pk).next_check_at == later
    progress.note_next_poll(bucket.pk, sooner)
    assert Report.objects.get(pk=report.pk).next_check_at == sooner
