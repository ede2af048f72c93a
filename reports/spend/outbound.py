"""Posting a webhook to a URL a person typed, safely (A2).

The URL must be https (or http to loopback when ALERT_WEBHOOK_ALLOW_LOCAL is on, for local
development). Its host is resolved once and every address checked: loopback, private,
link-local (cloud metadata included), multicast, reserved and unspecified addresses are
refused. The connection then goes to the address that was checked (no second lookup, so DNS
rebinding cannot swap it), TLS is verified against the host name, redirects are not
followed, every socket operation has a timeout, and the answer is read only up to a cap.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_ANSWER_BYTES = 64 * 1024


class WebhookRefused(Exception):
    """The target is not allowed; trying again will not help. The message is for people."""


class WebhookFailed(Exception):
    """The target could not be reached or answered with an error; worth trying again."""


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
    allow_local: bool = False,
) -> int:
    """POST the body to the checked address of the URL; return the HTTP status (2xx only).

    Raises WebhookRefused (not allowed, a redirect, a 4xx) or WebhookFailed (unreachable,
    timed out, 5xx), with messages that never include the URL's query.
    """
    target = check_target(url, allow_local=allow_local)
    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
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
            status = response.status
        finally:
            connection.close()
    except ssl.SSLError:
        raise WebhookFailed(f"The secure connection to {target.host} failed.") from None
    except TimeoutError:
        raise WebhookFailed(f"{target.host} did not answer within {timeout:g} s.") from None
    except (OSError, http.client.HTTPException):
        raise WebhookFailed(f"Could not deliver to {target.host}: the connection failed.") from None
    if 300 <= status < 400:
        raise WebhookRefused(
            f"{target.host} answered with a redirect (HTTP {status}); redirects are not followed."
        )
    if 400 <= status < 500 and status not in (408, 429):
        raise WebhookRefused(f"{target.host} refused the webhook (HTTP {status}).")
    if not 200 <= status < 300:
        raise WebhookFailed(f"{target.host} answered HTTP {status}.")
    return status
