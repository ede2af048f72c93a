"""Posting a webhook to a URL a person typed, safely (A2), and every send within a deadline (A7).

The URL must be https (or http to loopback when ALERT_WEBHOOK_ALLOW_LOCAL is on, for local
development). Its host is resolved once and every address checked: loopback, private,
link-local (cloud metadata included), multicast, reserved and unspecified addresses are
refused. The connection then goes to the address that was checked (no second lookup, so DNS
rebinding cannot swap it), TLS is verified against the host name, redirects are not
followed, and the answer is read only up to a cap.

A timeout per socket operation does not bound an exchange: a server that trickles a byte now
and then never trips it, and would hold a worker for as long as it likes. So the whole
exchange has a deadline (`Deadline`), as the OSAI transport's watchdog does
(osai/transport.py): a timer shuts the exchange's socket down when it passes, and the send
fails as timed out. Mail goes through the same deadline (`mail_connection`).
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import ipaddress
import os
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

from osai.transport import Cutoff

MAX_ANSWER_BYTES = 64 * 1024
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


class WebhookRefused(Exception):
    """The target is not allowed; trying again will not help. The message is for people."""


class WebhookFailed(Exception):
    """The target could not be reached or answered with an error; worth trying again."""


_current_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "outbound_deadline", default=None
)


class Deadline(Cutoff):
    """The whole of one send within `seconds`: at the deadline its sockets are shut down.

    Shutting a socket down from the timer thread makes a blocked read or write return at
    once. Each socket is watched through a duplicate of its descriptor, so a TLS layer put
    on it later (a handshake, STARTTLS) is cut off with it. Connecting is bounded by the
    time left (`time_left`).
    """

    current = _current_deadline

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._duplicates: list[socket.socket] = []

    def time_left(self) -> float:
        """Seconds left, at least a millisecond (a socket timeout of 0 would not block)."""
        return max(self._at - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._finished:
                return
            duplicate = socket.socket(fileno=os.dup(sock.fileno()))
            self._duplicates.append(duplicate)
            if self.fired:
                _shut(duplicate)

    def _cut_off(self) -> None:
        for duplicate in self._duplicates:
            _shut(duplicate)

    def _release(self) -> None:
        for duplicate in self._duplicates:
            duplicate.close()
        self._duplicates.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# --- Mail within the deadline -------------------------------------------------------------------


class _DeadlineSMTP(smtplib.SMTP):
    """smtplib.SMTP whose socket the current Deadline watches from the moment it connects."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        deadline = _current_deadline.get()
        if deadline is not None:
            timeout = min(timeout, deadline.time_left())
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        if deadline is not None:
            deadline.watch(sock)
        return sock


class _DeadlineSMTPSSL(smtplib.SMTP_SSL, _DeadlineSMTP):
    """SMTP over TLS: the plain socket is watched before the handshake (SMTP_SSL wraps it)."""


class DeadlineSmtpBackend(SmtpBackend):
    """Django's SMTP backend, its conversation within the current Deadline."""

    @property
    def connection_class(self) -> Any:
        return _DeadlineSMTPSSL if self.use_ssl else _DeadlineSMTP


def mail_connection() -> Any:
    """The configured mail backend; Django's SMTP backend becomes the one within a deadline."""
    if settings.EMAIL_BACKEND == SMTP_BACKEND:
        return get_connection(f"{__name__}.DeadlineSmtpBackend", fail_silently=False)
    return get_connection(fail_silently=False)


# --- Webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    address: str  # the checked IP address to connect to


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_local: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if allow_local and address.is_loopback:
        return True
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_link_local
    )


def check_target(url: str, *, allow_local: bool = False) -> Target:
    """Resolve and check a webhook URL; raise WebhookRefused with the reason."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise WebhookRefused("The webhook URL is not a valid URL.") from None
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("The webhook URL must not carry a user name or password.")
    if not host:
        raise WebhookRefused("The webhook URL has no host.")
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not allow_local):
        raise WebhookRefused("Webhooks are sent over https only.")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"The webhook host {host} cannot be found.") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [a for a in addresses if not _allowed(a, allow_local)]
    if not addresses or refused:
        raise WebhookRefused(
            f"The webhook host {host} resolves to an address that is not on the public "
            "internet (loopback, private, link-local or reserved), which is not allowed."
        )
    if scheme == "http" and not all(a.is_loopback for a in addresses):
        raise WebhookRefused("Webhooks are sent over https only.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, host, port, path, str(addresses[0]))


def post_json(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    deadline: float | None = None,
    allow_local: bool = False,
) -> int:
    """POST the body to the checked address of the URL; return the HTTP status (2xx only).

    `timeout` bounds each socket operation and `deadline` (default: `timeout`) the whole
    exchange, connecting, TLS, sending and the answer.

    Raises WebhookRefused (not allowed, a redirect, a 4xx) or WebhookFailed (unreachable,
    timed out, 5xx), with messages that never include the URL's query.
    """
    target = check_target(url, allow_local=allow_local)
    total = timeout if deadline is None else deadline
    with Deadline(total) as watchdog:
        try:
            status = _exchange(target, body, headers, timeout, watchdog)
        except (OSError, http.client.HTTPException):
            if watchdog.fired:
                raise WebhookFailed(
                    f"{target.host} did not finish answering within {total:g} s."
                ) from None
            raise
    if watchdog.fired:
        raise WebhookFailed(f"{target.host} did not finish answering within {total:g} s.")
    if 300 <= status < 400:
        raise WebhookRefused(
            f"{target.host} answered with a redirect (HTTP {status}); redirects are not followed."
        )
    if 400 <= status < 500 and status not in (408, 429):
        raise WebhookRefused(f"{target.host} refused the webhook (HTTP {status}).")
    if not 200 <= status < 300:
        raise WebhookFailed(f"{target.host} answered HTTP {status}.")
    return status


def _exchange(
    target: Target, body: bytes, headers: dict[str, str], timeout: float, watchdog: Deadline
) -> int:
    try:
        sock = socket.create_connection(
            (target.address, target.port), timeout=min(timeout, watchdog.time_left())
        )
        watchdog.watch(sock)
        if target.scheme == "https":
            context = ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=target.host)
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        connection.sock = sock  # already connected, to the checked address
        try:
            host_header = (
                target.host
                if target.port == (443 if target.scheme == "https" else 80)
                else f"{target.host}:{target.port}"
            )
            connection.request(
                "POST",
                target.path,
                body=body,
                headers={
                    "Host": host_header,
                    "Content-Type": "application/json",
                    "User-Agent": "osai-usage-webhooks/1",
                    **headers,
                },
            )
            response = connection.getresponse()
            response.read(MAX_ANSWER_BYTES)
            return response.status
        finally:
            connection.close()
    except ssl.SSLError:
        if watchdog.fired:
            raise
        raise WebhookFailed(f"The secure connection to {target.host} failed.") from None
    except TimeoutError:
        if watchdog.fired:
            raise
        raise WebhookFailed(f"{target.host} did not answer within {timeout:g} s.") from None
    except (OSError, http.client.HTTPException):
        if watchdog.fired:
            raise
        raise WebhookFailed(f"Could not deliver to {target.host}: the connection failed.") from None
