"""An anomaly found end to end (N1-N3, A12): a spike injected into the sandbox over its socket
(`POST /__sandbox__/usage`), held by tracking through a real `qcluster` worker, flagged once
by the detector the refresh runs (reports/tasks.py `tracking_bucket_done`), and not again by
the next refresh; its alert sent once to each of the owner's channels."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django_q.models import Task

from reports.models import Anomaly, Bucket, Connection, Delivery
from reports.spend import channels, tracking
from reports.spend.notify import DELIVERY_HEADER, sign
from tests.e2e.test_alerts import SECRET, SmtpServer, alert_env
from tests.factories import ensure_example_price_book, make_connection, make_user
from tests.support import figures
from tests.support.receiver import Receiver
from tests.support.vendor_payloads import slack_problems, teams_problems
from tests.support.worker import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TOKEN = "osai-sandbox-anomaly-lab"
SPIKE_SECONDS = 360_000  # 100 GPU-hours on 16 GB workers in one day


def _refresh(connection: Connection) -> None:
    """One tracking refresh of the connection, waited for until its detector has run: every
    tracked bucket done and the task of its open day's bucket finished."""
    tracking.tracking_refresh(connection)
    held = Bucket.objects.filter(connection=connection, tracked=True)
    wait_until(
        lambda: not held.exclude(state=Bucket.State.DONE).exists(),
        timeout=120,
        message="the refresh's buckets to be done",
    )
    newest = held.filter(is_closed=False).order_by("-pk").first()
    assert newest is not None
    wait_until(
        lambda: Task.objects.filter(name=f"osai-tracked-{newest.pk}").exists(),
        timeout=30,
        message="the refresh's last task (budgets, then anomalies)",
    )


def _small_held_window(settings: Any, sandbox: Any) -> None:
    """Days held since the first of last month (a small window), a quick sandbox and the
    example price book."""
    settings.OSAI_HELD_MONTHS = 1
    settings.OSAI_HELD_DAYS_SINCE = "month"
    sandbox.set_latency(0.2)
    ensure_example_price_book()


def _spike_flagged(sandbox: Any, owner: Any) -> tuple[Connection, date, Anomaly]:
    """The owner's "Dana's lab" with a spike injected yesterday, refreshed until the detector
    has judged it: the connection, yesterday and its one anomaly."""
    connection = make_connection(owner, "Dana's lab", token=TOKEN)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    sandbox.add_usage(TOKEN, yesterday.isoformat(), totalTrainingSeconds16GB=SPIKE_SECONDS)
    # The first refresh fetches the history in the background; the detector waits for all of
    # it, so the refresh that ends after it judges every held day.
    _refresh(connection)
    if not Anomaly.objects.exists():
        _refresh(connection)
    (anomaly,) = Anomaly.objects.all()
    return connection, yesterday, anomaly


def test_an_injected_spike_is_flagged_once_naming_the_connection_and_category(
    use_sandbox: Any, start_worker: Any, settings: Any
) -> None:
    # The sandbox's own usage never costs EUR 50 a day above its usual (8 GPU-hours at most,
    # a day of device rental: EUR 21.60), so whatever days the window holds on the day this
    # runs, the injected spike (EUR 210) is the only anomaly.
    start_worker(OSAI_ANOMALY_MIN_AMOUNT="50.00")
    _small_held_window(settings, use_sandbox)
    connection, yesterday, anomaly = _spike_flagged(use_sandbox, make_user("dana"))
    assert (anomaly.connection_id, anomaly.column, anomaly.day) == (
        connection.pk,
        "training_seconds_16gb",
        yesterday,
    )
    assert anomaly.kind == Anomaly.Kind.SPIKE and anomaly.actual >= SPIKE_SECONDS
    out = io.StringIO()
    call_command("anomalies", "--user", "dana", stdout=out)
    assert f"{yesterday}  spike  training on 16 GB workers on Dana's lab: EUR " in out.getvalue()

    _refresh(connection)  # the next refresh: nothing new
    assert list(Anomaly.objects.values_list("pk", flat=True)) == [anomaly.pk]
    connection.refresh_from_db()
    assert connection.anomalies_checked_through == yesterday


@pytest.fixture
def mail_server(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def test_an_injected_spike_alerts_each_channel_once_naming_the_connection_and_category(
    use_sandbox: Any, start_worker: Any, settings: Any, mail_server: SmtpServer
) -> None:
    """A12 end to end: the refresh that flags the spike queues its alert, the worker sends one
    message to each of the owner's channels (email through a real SMTP server, a signed
    webhook, Slack and Teams at local receivers), and the next refresh sends nothing."""
    receivers = {kind: Receiver() for kind in ("webhook", "slack", "teams")}
    try:
        start_worker(**alert_env(mail_server.port, OSAI_ANOMALY_MIN_AMOUNT="50.00"))
        settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
        _small_held_window(settings, use_sandbox)
        owner = make_user("dana", email="dana@example.com")
        channels.channel_add(
            actor=owner, kind="email", name="Me", emails=["dana-alerts@example.com"]
        )
        for kind, receiver in receivers.items():
            channels.channel_add(
                actor=owner,
                kind=kind,
                name=kind,
                url=receiver.url,
                secret=SECRET if kind == "webhook" else "",
            )
        connection, yesterday, anomaly = _spike_flagged(use_sandbox, owner)
        deliveries = wait_until(
            lambda: (
                list(Delivery.objects.order_by("channel"))
                if Delivery.objects.count() == 4
                and not Delivery.objects.exclude(state=Delivery.State.SENT).exists()
                else None
            ),
            timeout=60,
            message="the anomaly's four messages to be sent",
        )
        assert {d.anomaly_id for d in deliveries} == {anomaly.pk}
        keys = {d.channel: d.key for d in deliveries}
        wait_until(
            lambda: mail_server.messages() and all(r.received for r in receivers.values()),
            timeout=10,
            message="every channel's message",
        )
        subject = f"Usage spike on Dana's lab: training on 16 GB workers on {yesterday}"
        [message] = mail_server.messages()
        assert message["To"] == "dana-alerts@example.com"
        assert message["Subject"] == subject
        assert message[DELIVERY_HEADER] == keys["email"]
        assert "Category: Training." in message.get_payload()
        for kind, receiver in receivers.items():
            [request] = receiver.received
            assert request["headers"][DELIVERY_HEADER] == keys[kind]
            body = json.loads(request["body"])
            text = request["body"].decode()
            assert keys[kind] in text and "Dana's lab" in text and "Training" in text
            if kind == "webhook":
                assert request["headers"]["X-OSAI-Usage-Signature"] == sign(SECRET, request["body"])
                assert body["anomaly"]["category"] == "training"
            elif kind == "slack":
                assert slack_problems(body) == [] and body["text"] == subject
            else:
                assert teams_problems(body) == []

        _refresh(connection)  # the next refresh: nothing new, nothing sent
        time.sleep(3)
        assert Delivery.objects.count() == 4 and len(mail_server.messages()) == 1
        assert [len(r.received) for r in receivers.values()] == [1, 1, 1]
        figures.figure("A12 anomaly alerts per channel per anomaly", 1)
    finally:
        for receiver in receivers.values():
            receiver.stop()
