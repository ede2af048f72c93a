"""Transport: one exchange with OSAI within a total deadline, nothing followed, nothing added.

requests' timeouts bound each socket read, not an exchange; `Watchdog` shuts the socket
down when the call's deadline passes (H3). The adapter retries nothing (the client's own
loop does, inside the deadline) and its pools let the watchdog see each socket. urllib3's
DEBUG request lines are filtered so a signed link's query never reaches a log.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

_CHUNK_BYTES: Final = 64 * 1024


class Cutoff:
    """A timer that cuts an exchange off when its time is up, unless the exchange finished
    first: `Watchdog` here, `Deadline` for outbound sends (reports/spend/outbound.py).

    Entered, it is its context's current one (`current`, for the code that opens sockets deep
    inside a library) and its timer runs. At the deadline `_cut_off` runs on the timer's
    thread; on exit `_release`; both under the lock, so neither runs after the other.
    """

    current: ClassVar[contextvars.ContextVar[Any]]

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._finished = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._token: contextvars.Token[Any] | None = None

    def __enter__(self) -> Self:
        self._token = self.current.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._finished = True
            self._release()
        self._timer.cancel()
        if self._token is not None:
            self.current.reset(self._token)

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            self._cut_off()

    def _cut_off(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """What the exchange no longer needs once it is over (nothing, unless overridden)."""


_current_watchdog: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar(
    "osai_watchdog", default=None
)


class Watchdog(Cutoff):
    """Shuts the exchange's socket down when the call's deadline passes.

    requests' timeouts bound each socket read, not an exchange: a server that trickles a
    byte now and then, even within the status line, never trips them, and urllib3 reads
    a body chunk until it is full. Shutting the socket down from a timer thread makes the
    blocked read return at once; the exchange then reports a timeout. (Connecting, before
    the socket is watched, is bounded by the connect timeout.)
    """

    current = _current_watchdog

    def __init__(self, deadline: float) -> None:
        super().__init__(deadline - time.monotonic())
        self._sock: socket.socket | None = None

    def watch(self, sock: object) -> None:
        """Called by the connection just before it reads the response."""
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sock = sock
                if self.fired:
                    self._cut_off()

    def _cut_off(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown: SSLSocket.shutdown() would also drop its SSL
                # object from under the reading thread.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's
        if (watchdog := _current_watchdog.get()) is not None:
            watchdog.watch(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's
        if (watchdog := _current_watchdog.get()) is not None:
            watchdog.watch(self.sock)
        return super().getresponse()


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: Final = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections let the watchdog cut them off; urllib3 retries nothing.

    Retries live in OsaiClient, inside the call's deadline: urllib3's Retry would sleep
    and reconnect outside it.
    """

    def __init__(self) -> None:
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS needs its own pool classes
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _RedactUrlQueries(logging.Filter):
    """urllib3 logs each request line at DEBUG, query included: a signed link's secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] + "?<redacted>" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


def install_log_filters() -> None:
    # Installed on import because this module is the only one that fetches signed links;
    # settings.LOGGING may still quieten urllib3 altogether.
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        third_party = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrlQueries) for f in third_party.filters):
            third_party.addFilter(_RedactUrlQueries())


install_log_filters()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def looks_like_html(self) -> bool:
        content_type = self.headers.get("Content-Type", "").lower()
        return "html" in content_type or self.body.lstrip()[:1] == b"<"


class TooLarge(Exception):
    pass


class TooSlow(Exception):
    pass


def read_body(response: requests.Response, *, deadline: float, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length", "").strip()
    if re.fullmatch(r"[0-9]{1,20}", declared) and int(declared) > max_bytes:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge
        if time.monotonic() > deadline:
            raise TooSlow
        chunks.append(chunk)
    return b"".join(chunks)


def failed_before_sending(exc: BaseException) -> bool:
    """True when the request certainly never reached the server (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if isinstance(exc, requests.ConnectionError) and exc.args else None
    return isinstance(reason, urllib3.exceptions.MaxRetryError) and isinstance(
        reason.reason, urllib3.exceptions.NewConnectionError
    )
