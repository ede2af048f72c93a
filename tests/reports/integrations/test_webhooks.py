"""OSAI's worker webhooks as a service (reports/integrations/webhooks.py): deliveries stored
once, and the open-day refresh a finished task asks for, debounced: one refresh for a burst of
events, counted at the sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reports import tasks
from reports.integrations import webhooks
from reports.models import Bucket, Connection, WebhookEvent
from reports.pipeline import dispatcher
from reports.spend import tracking
from tests.factories import make_connection, make_user
from tests.support import figures
from tests.support.pipeline import drive

pytestmark = pytest.mark.django_db(transaction=True)

POST = "POST /api/Reports"
DELAY = 30
MORNING = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)


def _event(**fields: Any) -> bytes:
    return json.dumps({"taskType": "Training", "status": "Succeeded", **fields}).encode()


def _receive(connection: Connection, body: bytes) -> tuple[WebhookEvent, bool]:
    return webhooks.webhook_receive(
        connection=connection, body=body, content_type="application/json"
    )


def _seconds_after(start: datetime, moment: datetime | None) -> int:
    """Whole seconds from start (the clock ticks on while a test runs)."""
    assert moment is not None
    return int((moment - start).total_seconds())


def _refresh_calls(queue: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [call for call in queue if call[0] == "reports.tasks.webhook_refresh"]


@pytest.fixture
def tracked(use_sandbox: Any, fast: Any, queue: Any, time_machine: Any, settings: Any) -> Any:
    """A connection whose month tracking has fetched (this morning), the sandbox then reset."""
    settings.OSAI_WEBHOOK_REFRESH_DELAY_SECONDS = DELAY
    time_machine.move_to(MORNING)
    connection = make_connection(make_user())
    tracking.tracking_refresh(connection)
    drive()
    use_sandbox.reset()
    queue.clear()
    return connection


def test_a_burst_of_webhooks_makes_one_refresh_of_the_open_day(
    tracked: Connection, use_sandbox: Any, queue: Any, time_machine: Any
) -> None:
    burst_start = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    time_machine.move_to(burst_start)
    for second in range(0, 25, 5):  # five tasks finish within 25 s
        time_machine.move_to(burst_start + timedelta(seconds=second))
        _event_row, created = _receive(tracked, _event(eventId=f"e{second}"))
        assert created
    tracked.refresh_from_db()
    # The first event armed it; the later ones found it armed and left it.
    assert _seconds_after(burst_start, tracked.refresh_due_at) == DELAY
    assert dispatcher._next_due() == tracked.refresh_due_at  # a dispatcher waits for it
    assert dispatcher.enqueue_due_refreshes() == 0  # not due yet

    time_machine.move_to(burst_start + timedelta(seconds=DELAY + 1))
    assert dispatcher.enqueue_due_refreshes() == 1
    assert dispatcher.enqueue_due_refreshes() == 0  # claimed once
    assert _refresh_calls(queue) == [("reports.tasks.webhook_refresh", tracked.pk)]
    tasks.webhook_refresh(tracked.pk)
    drive()

    assert use_sandbox.calls(POST) == 1  # one OSAI report for five events: the open day
    open_day = Bucket.objects.filter(connection=tracked, is_closed=False, state="done")
    latest = open_day.order_by("-period_end").first()
    assert latest is not None
    assert _seconds_after(burst_start, latest.period_end) == DELAY + 1
    assert WebhookEvent.objects.filter(connection=tracked).count() == 5
    figures.figure("W1 webhooks in a burst -> OSAI reports", "5 -> 1")

    # The next task after the refresh asks for the next one.
    _receive(tracked, _event(eventId="later"))
    tracked.refresh_from_db()
    assert tracked.refresh_due_at is not None


def test_a_refresh_while_the_open_day_is_being_fetched_waits_instead_of_doubling_it(
    tracked: Connection, use_sandbox: Any, queue: Any, time_machine: Any
) -> None:
    time_machine.move_to(datetime(2026, 3, 3, 11, 0, tzinfo=UTC))
    tracking.tracking_refresh(tracked)  # the hourly refresh started the open day, not done yet
    in_flight = Bucket.objects.active().filter(connection=tracked)
    assert in_flight.count() == 1
    answer = tasks.webhook_refresh(tracked.pk)
    assert "being fetched" in answer
    assert in_flight.count() == 1  # no second open-day bucket
    tracked.refresh_from_db()
    assert _seconds_after(datetime(2026, 3, 3, 11, 0, tzinfo=UTC), tracked.refresh_due_at) == DELAY
    drive()
    time_machine.move_to(datetime(2026, 3, 3, 11, 1, tzinfo=UTC))
    assert dispatcher.enqueue_due_refreshes() == 1
    tasks.webhook_refresh(tracked.pk)
    drive()
    assert use_sandbox.calls(POST) == 2  # the hourly one, then the one the webhooks asked for


def test_the_open_day_is_asked_for_at_most_once_per_delay_whoever_asked_last(
    tracked: Connection, use_sandbox: Any, queue: Any, time_machine: Any
) -> None:
    """W1: OSAI_WEBHOOK_REFRESH_DELAY_SECONDS bounds a connection's open-day reports to one per
    delay, not one per burst: a refresh the webhooks asked for that comes less than the delay
    after the last one (here the hourly tracking's, in the middle of the burst) waits for the
    rest of it, then goes."""
    start = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    time_machine.move_to(start)
    _receive(tracked, _event(eventId="first"))  # armed for start + DELAY
    time_machine.move_to(start + timedelta(seconds=20))
    tracking.tracking_refresh(tracked)  # the hourly refresh asks for the open day
    drive()
    assert use_sandbox.calls(POST) == 1

    time_machine.move_to(start + timedelta(seconds=DELAY + 1))
    assert dispatcher.enqueue_due_refreshes() == 1
    answer = tasks.webhook_refresh(tracked.pk)
    drive()
    assert "less than the delay ago" in answer
    assert use_sandbox.calls(POST) == 1  # not a second open-day report 11 s after the first
    tracked.refresh_from_db()
    assert _seconds_after(start, tracked.refresh_due_at) == 20 + DELAY

    time_machine.move_to(start + timedelta(seconds=20 + DELAY + 1))
    assert dispatcher.enqueue_due_refreshes() == 1
    assert tasks.webhook_refresh(tracked.pk).startswith("refreshed")
    drive()
    assert use_sandbox.calls(POST) == 2  # one delay after the last: the events' refresh goes


def test_a_connection_that_needs_a_new_token_stores_events_but_asks_for_no_refresh(
    queue: Any,
) -> None:
    connection = make_connection(make_user(), status=Connection.Status.NEEDS_TOKEN)
    _receive(connection, _event())
    connection.refresh_from_db()
    assert connection.refresh_due_at is None
    assert WebhookEvent.objects.filter(connection=connection).count() == 1
    assert tasks.webhook_refresh(connection.pk) == "no working connection"


def test_a_repeated_delivery_is_stored_once() -> None:
    connection = make_connection(make_user())
    first, created = _receive(connection, b'{"taskType": "Prediction", "success": true}')
    # The same JSON again, keys in another order and spaced differently: the same delivery.
    again, created_again = _receive(connection, b'{ "success":true,"taskType":"Prediction" }')
    assert created and not created_again and again.pk == first.pk
    # An event id makes deliveries the same whatever else changed (a retry's new timestamp).
    _receive(connection, _event(eventId="abc", sentAt="2026-03-03T10:00:00Z"))
    _row, created_retry = _receive(connection, _event(eventId="abc", sentAt="2026-03-03T10:05:00Z"))
    assert not created_retry
    # Another connection's identical delivery is its own.
    _row, created_elsewhere = _receive(make_connection(make_user()), _event(eventId="abc"))
    assert created_elsewhere
    assert WebhookEvent.objects.count() == 3


def test_what_the_feed_needs_is_read_and_the_raw_body_kept() -> None:
    connection = make_connection(make_user())
    body = json.dumps(
        {
            "data": {"jobType": "MODEL_CONVERSION", "gpu": "NVIDIA 16GB"},
            "status": "Failed",
            "error": "see https://bucket.example/x.onnx?X-Amz-Signature=abc&Expires=1",
            "brandNew": {"nested": [1, 2, 3]},
        }
    ).encode()
    event, _ = _receive(connection, body)
    event.refresh_from_db()
    assert (event.kind, event.succeeded, event.worker_gb) == ("conversion", False, 16)
    assert "Signature" not in event.message and "?<redacted>" in event.message
    assert json.loads(event.body)["brandNew"] == {"nested": [1, 2, 3]}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"a=1&b=2", "application/x-www-form-urlencoded", 415),
        (b'{"a": 1}', "multipart/form-data; boundary=x", 415),
    ],
)
def test_what_is_not_json_is_refused_and_not_stored(
    body: bytes, content_type: str, status: int
) -> None:
    connection = make_connection(make_user())
    with pytest.raises(webhooks.WebhookRejected) as refused:
        webhooks.webhook_receive(connection=connection, body=body, content_type=content_type)
    assert refused.value.status == status
    assert not WebhookEvent.objects.exists()
    connection.refresh_from_db()
    assert connection.refresh_due_at is None


def test_rotating_the_secret_changes_the_url_and_forgets_the_old_one() -> None:
    connection = make_connection(make_user())
    old = connection.webhook_secret
    assert webhooks.connection_for_webhook(old) == connection
    webhooks.webhook_secret_rotate(connection=connection)
    assert webhooks.connection_for_webhook(old) is None
    assert webhooks.connection_for_webhook(connection.webhook_secret) == connection
    assert connection.webhook_secret not in connection.webhook_secret_encrypted  # encrypted
    assert len(connection.webhook_secret) >= 43  # 256 random bits, URL-safe base64


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "training", "gpu": NaN}',
        b'{"event": "training", "workerGb": Infinity}',
        b'{"event": "training", "workerGb": -Infinity}',
        b'{"event": "training", "workerGb": 1e999}',
        b'{"event": "training", "message": "\\ud800"}',
        b'{"event": "training", "\\udfff": 1}',
        b'{"event": "training", "taskId": "a\\u0000b"}',
        b'{"event": "training", "nested": [{"x": "\\u0000"}]}',
        b'{"event": "tr\xc3\x28ining"}',
    ],
)
def test_the_webhook_refuses_nan_infinity_invalid_unicode_and_nul_with_400_and_stores_nothing(
    body: bytes, client: Any
) -> None:
    """W1: JSON that only Python reads (NaN, Infinity, 1e999), text no database stores (a NUL,
    a lone surrogate) and bytes that are not UTF-8 are a 400, not a 500; nothing is stored and
    no refresh is armed. Run on PostgreSQL too (the NUL)."""
    from django.urls import reverse

    connection = make_connection(make_user())
    url = reverse("osai_webhook", args=[connection.webhook_secret])
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert not WebhookEvent.objects.exists()
    connection.refresh_from_db()
    assert connection.refresh_due_at is None
