"""Budget webhooks (reports/spend/outbound.py, reports/spend/notify.py): A2 targets refused, no
redirects, A3 signed bodies with a delivery key, A4 retries then failure, against real local
servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from reports.models import Delivery
from reports.spend import notify
from reports.spend.outbound import WebhookFailed, WebhookRefused, check_target, post_json
from tests.support import figures
from tests.support.receiver import Receiver

SECRET = "hook-secret"


@pytest.fixture
def two_quick_attempts(settings: Any) -> None:
    """Webhooks on this machine allowed; a delivery is tried twice, the retry without delay."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    settings.ALERT_DELIVERY_RETRY_SECONDS = 0


def webhook_delivery(url: str) -> Delivery:
    """One delivery to the webhook at `url` only, as an alert makes it."""
    [delivery] = notify.deliveries_create(
        subject="s", text="t", payload={"text": "x"}, emails=[], webhook_url=url
    )
    return delivery


def fake_dns(monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("url", "addresses", "reason"),
    [
        ("http://hooks.example.com/x", ["93.184.216.34"], "https only"),
        ("https://user:pw@hooks.example.com/x", ["93.184.216.34"], "user name or password"),
        ("https://hooks.example.com/x", ["127.0.0.1"], "not on the public internet"),
        ("https://hooks.example.com/x", ["10.1.2.3"], "not on the public internet"),
        ("https://hooks.example.com/x", ["192.168.0.10"], "not on the public internet"),
        ("https://hooks.example.com/x", ["172.16.5.5"], "not on the public internet"),
        ("https://hooks.example.com/x", ["169.254.169.254"], "not on the public internet"),
        ("https://hooks.example.com/x", ["100.64.0.1"], "not on the public internet"),
        ("https://hooks.example.com/x", ["224.0.0.1"], "not on the public internet"),
        ("https://hooks.example.com/x", ["0.0.0.0"], "not on the public internet"),  # noqa: S104
        ("https://hooks.example.com/x", ["93.184.216.34", "10.0.0.1"], "not on the public"),
        ("ftp://hooks.example.com/x", ["93.184.216.34"], "https only"),
        ("https:///nohost", [], "no host"),
    ],
)
def test_webhook_targets_off_the_public_internet_are_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, addresses: list[str], reason: str
) -> None:
    """A2: every resolved address is checked; none may be local, private or reserved."""
    fake_dns(monkeypatch, addresses)
    with pytest.raises(WebhookRefused, match=reason):
        check_target(url)
    figures.figure("A2 webhook targets refused", 1)


def test_ipv6_loopback_private_and_metadata_targets_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for address in ("::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1"):

        def getaddrinfo(host: str, port: int, *a: Any, address: str = address, **k: Any) -> Any:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        with pytest.raises(WebhookRefused):
            check_target("https://hooks.example.com/x")
        figures.figure("A2 webhook targets refused", 1)


def test_a_public_https_target_is_allowed_and_pinned_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, ["93.184.216.34"])
    target = check_target("https://hooks.example.com:8443/a/b?c=1")
    assert (target.scheme, target.host, target.port, target.path, target.address) == (
        "https",
        "hooks.example.com",
        8443,
        "/a/b?c=1",
        "93.184.216.34",
    )


def test_loopback_over_http_only_with_the_development_setting(receiver: Receiver) -> None:
    with pytest.raises(WebhookRefused):
        post_json(receiver.url, b"{}", {}, timeout=2)
    assert receiver.received == []
    assert post_json(receiver.url, b"{}", {}, timeout=2, allow_local=True) == 200
    assert len(receiver.received) == 1


def test_redirects_are_not_followed() -> None:
    target = Receiver()
    redirecting = Receiver(status=302, location=target.url)
    try:
        with pytest.raises(WebhookRefused, match="redirect"):
            post_json(redirecting.url, b"{}", {}, timeout=2, allow_local=True)
        assert len(redirecting.received) == 1 and target.received == []
    finally:
        target.stop()
        redirecting.stop()


def test_server_errors_are_worth_retrying_and_client_errors_are_not() -> None:
    for status, error in ((500, WebhookFailed), (503, WebhookFailed), (404, WebhookRefused)):
        server = Receiver(status=status)
        try:
            with pytest.raises(error):
                post_json(server.url, b"{}", {}, timeout=2, allow_local=True)
        finally:
            server.stop()
    with pytest.raises(WebhookFailed, match="connection failed"):
        post_json("http://127.0.0.1:9/nothing-listens", b"{}", {}, timeout=2, allow_local=True)


@pytest.mark.django_db
def test_a_webhook_delivery_is_signed_and_carries_its_key(
    receiver: Receiver, settings: Any
) -> None:
    """A3: X-OSAI-Usage-Signature is the HMAC-SHA256 of the raw body; the key rides along."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    from reports.spend import budgets
    from tests.factories import make_user

    owner = make_user()
    budget = budgets.budget_set(
        actor=owner,
        scope="person",
        amount="10",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
    )
    [delivery] = notify.deliveries_create(
        subject="s",
        text="t",
        payload={"text": "80 % of the budget"},
        emails=[],
        channels=list(budget.channels.all()),
        budget=budget,
    )
    assert delivery.target == ""  # the URL stays in its channel, encrypted
    assert notify.delivery_send(delivery.pk) == "sent"
    [request] = receiver.received
    body = request["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert request["headers"]["X-OSAI-Usage-Signature"] == expected
    assert request["headers"]["X-OSAI-Usage-Delivery"] == delivery.key
    assert json.loads(body) == {"text": "80 % of the budget", "delivery": delivery.key}
    assert SECRET.encode() not in body


@pytest.mark.django_db
def test_a_failing_webhook_is_retried_then_failed_with_its_reason(
    two_quick_attempts: None,
) -> None:
    """A4: a 500 is retried with back-off, then shown as failed."""
    server = Receiver(status=500)
    try:
        delivery = webhook_delivery(server.url)
        assert notify.delivery_send(delivery.pk) == "will retry"
        delivery.refresh_from_db()
        assert delivery.state == Delivery.State.PENDING and "HTTP 500" in delivery.last_error
        assert notify.delivery_send(delivery.pk) == "failed"
        delivery.refresh_from_db()
        assert delivery.state == Delivery.State.FAILED
        assert delivery.last_error == "127.0.0.1 answered HTTP 500. (gave up after 2 attempts)"
        assert len(server.received) == 2
    finally:
        server.stop()


# --- A7: no send holds a worker for long, none is tried for ever ---------------------------------


def test_a_webhook_that_trickles_its_answer_fails_at_the_exchange_deadline() -> None:
    """A7: one byte every 0.2 s never trips a per-read timeout; the deadline ends it."""
    trickling = Receiver(trickle=60)
    try:
        started = time.monotonic()
        with pytest.raises(WebhookFailed, match=r"did not finish answering within 1\.5 s"):
            post_json(trickling.url, b"{}", {}, timeout=1, deadline=1.5, allow_local=True)
        took = time.monotonic() - started
    finally:
        trickling.stop()
    assert 1.4 < took < 3.5
    figures.figure("A7 trickling webhook cut off after (s)", round(took, 1))


@pytest.mark.django_db
def test_a_delivery_to_a_trickling_webhook_ends_at_its_deadline_and_says_so(
    settings: Any, two_quick_attempts: None
) -> None:
    """A7: the delivery's deadline (ALERT_DELIVERY_DEADLINE_SECONDS) bounds the whole send."""
    settings.ALERT_DELIVERY_DEADLINE_SECONDS = 1
    trickling = Receiver(trickle=60)
    try:
        delivery = webhook_delivery(trickling.url)
        started = time.monotonic()
        assert notify.delivery_send(delivery.pk) == "will retry"
        assert time.monotonic() - started < 3
        delivery.refresh_from_db()
        assert delivery.last_error == "Retrying: 127.0.0.1 did not finish answering within 1 s."
        assert notify.delivery_send(delivery.pk) == "failed"
        delivery.refresh_from_db()
        assert delivery.state == Delivery.State.FAILED
        assert delivery.last_error.endswith("(gave up after 2 attempts)")
    finally:
        trickling.stop()


def test_the_deadline_is_never_longer_than_the_lease(settings: Any) -> None:
    """A send still running when its lease ran out would be sent again beside it."""
    settings.ALERT_DELIVERY_DEADLINE_SECONDS = 30
    settings.ALERT_DELIVERY_LEASE_SECONDS = 3
    assert notify.send_deadline_seconds() == 3


class _WorkerKilled(BaseException):
    """What a killed worker looks like from inside: nothing after it runs."""


@pytest.mark.django_db
def test_a_delivery_whose_worker_dies_each_time_is_counted_and_given_up_at_the_cap(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A7: every claim counts an attempt; a lease taken over says the attempt before did not
    finish; the claim after the last attempt fails the delivery with that reason, instead of
    leaving it "waiting to be sent" and trying it every minute for ever."""
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    lease = timedelta(seconds=settings.ALERT_DELIVERY_LEASE_SECONDS)

    def killed(delivery: Delivery) -> None:
        raise _WorkerKilled

    monkeypatch.setattr(notify, "_send_email", killed)
    [delivery] = notify.deliveries_create(
        subject="s", text="t", payload={}, emails=["finance@example.com"]
    )
    now = timezone.now()
    for attempt in range(1, 4):
        with pytest.raises(_WorkerKilled):
            notify.delivery_send(delivery.pk, now=now)
        delivery.refresh_from_db()
        assert (delivery.state, delivery.attempts) == (Delivery.State.PENDING, attempt)
        if attempt > 1:
            assert delivery.last_error == notify.UNFINISHED  # the page shows why
        # Within the lease nobody else may take it.
        assert notify.delivery_send(delivery.pk, now=now).startswith("not claimed")
        now += lease + timedelta(seconds=1)
    assert notify.delivery_send(delivery.pk, now=now) == "gave up"
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED
    assert delivery.last_error == f"{notify.UNFINISHED} (gave up after 3 attempts)"
    assert delivery.next_attempt_at is None
    figures.fault("A7 worker killed in every attempt", injected=3, survived=1)


@pytest.mark.django_db
def test_an_unexpected_error_is_recorded_retried_and_given_up_at_the_cap(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A7: an error nobody expected is an attempt like any other, with a reason a person can
    read (its type only: its text may hold anything)."""
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    settings.ALERT_DELIVERY_RETRY_SECONDS = 0

    def broken(delivery: Delivery) -> None:
        raise ValueError("the secret is hunter2")

    monkeypatch.setattr(notify, "_send_email", broken)
    [delivery] = notify.deliveries_create(
        subject="s", text="t", payload={}, emails=["finance@example.com"]
    )
    assert notify.delivery_send(delivery.pk) == "will retry"
    delivery.refresh_from_db()
    assert delivery.last_error == "Retrying: It could not be sent (ValueError)."
    assert notify.delivery_send(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED
    assert delivery.last_error == "It could not be sent (ValueError). (gave up after 2 attempts)"
    assert "hunter2" not in delivery.last_error


@pytest.mark.django_db
def test_a_subject_with_a_line_break_is_sent_on_one_line(mailoutbox: list[Any]) -> None:
    """A7: a label saved before labels had to be one line no longer fails every attempt."""
    [delivery] = notify.deliveries_create(
        subject="Budget alert: 80 % of Lab\nBcc: someone@example.com",
        text="t",
        payload={},
        emails=["finance@example.com"],
    )
    assert "\n" not in delivery.subject
    Delivery.objects.filter(pk=delivery.pk).update(subject="Old\r\nlabel")  # an older row
    assert notify.delivery_send(delivery.pk) == "sent"
    [email] = mailoutbox
    assert email.subject == "Old label"
    assert email.to == ["finance@example.com"]


@pytest.mark.django_db
def test_a_mail_server_that_trickles_its_greeting_fails_at_the_delivery_deadline(
    settings: Any,
) -> None:
    """A7: the SMTP conversation has the same deadline as a webhook (Django's EMAIL_TIMEOUT
    bounds each read only)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            for byte in b"220 " + b"x" * 1000:
                if stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    settings.ALERT_DELIVERY_DEADLINE_SECONDS = 1
    try:
        [delivery] = notify.deliveries_create(
            subject="s", text="t", payload={}, emails=["finance@example.com"]
        )
        started = time.monotonic()
        assert notify.delivery_send(delivery.pk) == "will retry"
        assert time.monotonic() - started < 3
        delivery.refresh_from_db()
        assert delivery.last_error == (
            f"Retrying: The mail server at 127.0.0.1:{port} did not finish within 1 s."
        )
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)
