"""Budget alerts end to end: a real worker sends through a real SMTP server (aiosmtpd, its
own process on a free port) and to a local webhook receiver (A1, A3, A4), also when the
worker is killed between sending and recording."""

from __future__ import annotations

import mailbox
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from reports.metrics import USAGE_COLUMNS, all_flags
from reports.models import Bucket, Delivery
from reports.spend import budgets
from reports.spend.notify import DELIVERY_HEADER, UNFINISHED, sign
from tests.factories import ensure_example_price_book, make_connection, make_user
from tests.support import figures
from tests.support.receiver import Receiver
from tests.support.sandbox import free_port
from tests.support.worker import ROOT, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SECRET = "e2e-hook-secret"


class SmtpServer:
    """`python -m aiosmtpd` writing every message it accepts into a Maildir."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.maildir = mailbox.Maildir(directory / "mail", create=True)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{self.port}",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                str(directory / "mail"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._listening, timeout=15, message="the SMTP server to listen")

    def _listening(self) -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def messages(self) -> list[Any]:
        return list(self.maildir)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def alert_env(smtp_port: int, **extra: str) -> dict[str, str]:
    return {
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "ALERT_WEBHOOK_ALLOW_LOCAL": "True",
        "ALERT_DELIVERY_RETRY_SECONDS": "0.5",
        "ALERT_DELIVERY_MAX_ATTEMPTS": "3",
        "ALERT_DELIVERY_LEASE_SECONDS": "3",
        **extra,
    }


def a_budget_past_80_percent(hook_url: str, settings: Any) -> Any:
    """Today's spend so far is EUR 1.20 (1 h of 8 GB training); the budget is EUR 1.40.

    One moment makes the bucket (its day and its end): made of two readings of the clock,
    it could start on one day and end on the next, which no day's spend counts."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    ensure_example_price_book()
    owner = make_user()
    connection = make_connection(owner)
    now = timezone.now()
    Bucket.objects.create(
        connection=connection,
        period_start=now.replace(hour=0, minute=0, second=0, microsecond=0),
        period_end=now,
        is_closed=False,
        tracked=True,
        state=Bucket.State.DONE,
        finished_at=now,
        **all_flags(),
        **(dict.fromkeys(USAGE_COLUMNS, 0.0) | {"training_seconds_8gb": 3600.0}),
    )
    return budgets.budget_set(
        actor=owner,
        scope="person",
        amount="1.40",
        emails=["finance@example.com"],
        webhook_url=hook_url,
        webhook_secret=SECRET,
    )


def wait_for_deliveries(states: set[str], timeout: float = 40) -> list[Delivery]:
    return wait_until(
        lambda: (
            list(Delivery.objects.order_by("channel"))
            if {d.state for d in Delivery.objects.all()} <= states and Delivery.objects.exists()
            else None
        ),
        timeout=timeout,
        message=f"deliveries to be {states}",
    )


def test_a_crossed_threshold_sends_one_email_and_one_signed_webhook_once(
    start_worker: Any, smtp: SmtpServer, hook: Receiver, settings: Any
) -> None:
    started = time.monotonic()
    start_worker(**alert_env(smtp.port))
    budget = a_budget_past_80_percent(hook.url, settings)
    _, alerts = budgets.budgets_check([budget])
    assert sorted(a.threshold for a in alerts) == [50, 80]
    email, webhook = wait_for_deliveries({"sent"})
    assert [email.channel, webhook.channel] == ["email", "webhook"]
    wait_until(lambda: smtp.messages() and hook.received, timeout=10, message="both messages")
    figures.figure(
        "P19 threshold to both deliveries, worker already up (s)",
        round(time.monotonic() - started, 1),
    )
    [message] = smtp.messages()
    assert message["To"] == "finance@example.com"
    assert (
        message["Subject"]
        == "Budget alert: 80 % of All of " + budget.owner.username + "'s connections"
    )
    assert message[DELIVERY_HEADER] == email.key
    [request] = hook.received
    assert request["headers"]["X-OSAI-Usage-Signature"] == sign(SECRET, request["body"])
    assert request["headers"][DELIVERY_HEADER] == webhook.key
    assert b'"threshold": 80' in request["body"]

    # A second check finds nothing new and sends nothing.
    assert budgets.budgets_check([budget])[1] == []
    time.sleep(3)
    assert (len(smtp.messages()), len(hook.received), Delivery.objects.count()) == (1, 1, 2)
    figures.figure("A1 alerts sent per threshold per month", 1)


def test_a_worker_killed_between_sending_and_recording_sends_at_most_once_more(
    start_worker: Any, smtp: SmtpServer, hook: Receiver, settings: Any
) -> None:
    """A1: the kill leaves the row pending; its lease runs out; the message goes again with
    the same idempotency key."""
    worker = start_worker(**alert_env(smtp.port, OSAI_FAILPOINTS="after_send=1"))
    budget = a_budget_past_80_percent(hook.url, settings)
    budgets.budgets_check([budget])
    # The worker process that sent first kills itself before recording it; the cluster
    # starts another in its place.
    fired = Path(worker.env["OSAI_FAILPOINT_DIR"]) / "after_send"
    wait_until(fired.exists, timeout=40, message="the worker to kill itself after sending")
    deliveries = wait_for_deliveries({"sent"}, timeout=60)
    keys = {d.channel: d.key for d in deliveries}
    sent = [m[DELIVERY_HEADER] for m in smtp.messages()] + [
        r["headers"][DELIVERY_HEADER] for r in hook.received
    ]
    duplicates = len(sent) - len(deliveries)
    assert duplicates == 1  # the one message in flight when the worker died
    assert set(sent) == set(keys.values())  # every copy carries its delivery's key
    figures.fault("A1 worker killed mid-delivery", injected=1, survived=1, duplicated=duplicates)


def test_smtp_down_and_a_failing_webhook_are_retried_then_shown_as_failed(
    start_worker: Any, settings: Any
) -> None:
    """A4."""
    failing = Receiver(status=500)
    closed_port = free_port()
    try:
        start_worker(**alert_env(closed_port))
        budget = a_budget_past_80_percent(failing.url, settings)
        budgets.budgets_check([budget])
        email, webhook = wait_for_deliveries({"failed"}, timeout=60)
        assert (email.attempts, webhook.attempts) == (3, 3)
        assert "could not be reached" in email.last_error
        assert webhook.last_error == "127.0.0.1 answered HTTP 500. (gave up after 3 attempts)"
        assert len(failing.received) == 3
        assert email.created_at < timezone.now() - timedelta(seconds=1)
    finally:
        failing.stop()


def test_a_trickling_webhook_and_a_send_killed_every_time_end_failed_with_their_reasons(
    start_worker: Any, smtp: SmtpServer, settings: Any
) -> None:
    """A7 with a real worker: a webhook server that trickles its answer a byte at a time is cut
    off at the delivery's deadline, every time, instead of holding a worker until django-q2
    kills the task; an email whose worker is killed after every send is counted at each claim
    and given up at the cap with the reason, instead of staying "waiting to be sent"."""
    trickling = Receiver(trickle=120)
    try:
        start_worker(
            **alert_env(
                smtp.port, OSAI_FAILPOINTS="after_send=99", ALERT_DELIVERY_DEADLINE_SECONDS="2"
            )
        )
        started = time.monotonic()
        budget = a_budget_past_80_percent(trickling.url, settings)
        budgets.budgets_check([budget])
        email, webhook = wait_for_deliveries({"failed"}, timeout=90)
        took = time.monotonic() - started
        assert (email.attempts, webhook.attempts) == (4, 3)  # the 4th claim gave up
        assert email.last_error == f"{UNFINISHED} (gave up after 3 attempts)"
        assert webhook.last_error == (
            "127.0.0.1 did not finish answering within 2 s. (gave up after 3 attempts)"
        )
        assert len(smtp.messages()) == 3 and len(trickling.received) == 3
        figures.figure("A7 killed and trickling deliveries failed after (s)", round(took, 1))
    finally:
        trickling.stop()
