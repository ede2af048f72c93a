"""Budget webhooks (reports/spend/outbound.py, reports/spend/notify.py): A2 targets refused, no
redirects, A3 signed bodies with a delivery key, A4 retries then failure, against real local
servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from reports.models import Delivery
from reports.spend import notify
from reports.spend.outbound import WebhookFailed, WebhookRefused, check_target, post_json
from tests.support import figures
from tests.support.receiver import Receiver

SECRET = "hook-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


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
        webhook_url=receiver.url,
        budget=budget,
    )
    assert notify.delivery_send(delivery.pk) == "sent"
    [request] = receiver.received
    body = request["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert request["headers"]["X-OSAI-Usage-Signature"] == expected
    assert request["headers"]["X-OSAI-Usage-Delivery"] == delivery.key
    assert json.loads(body) == {"text": "80 % of the budget", "delivery": delivery.key}
    assert SECRET.encode() not in body


@pytest.mark.django_db
def test_a_failing_webhook_is_retried_then_failed_with_its_reason(settings: Any) -> None:
    """A4: a 500 is retried with back-off, then shown as failed."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    settings.ALERT_DELIVERY_RETRY_SECONDS = 0
    server = Receiver(status=500)
    try:
        [delivery] = notify.deliveries_create(
            subject="s", text="t", payload={"text": "x"}, emails=[], webhook_url=server.url
        )
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
