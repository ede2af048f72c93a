"""The OSAI client: the only code in the project that speaks HTTP to OSAI.

What it guarantees (docs/reliability.md):

- H1: redirects are never followed; a 3xx raises `OsaiRedirectRefused`.
- H2: the report file download carries no Authorization header, cookie or token.
- H3: every public call has one total deadline (`timeout`), covering sign-ins, retries,
  back-off and reading the body. requests' own timeouts only bound each socket read, so
  a watchdog shuts the socket down when the deadline passes (see `_Watchdog`).
- H4: GETs are retried a bounded number of times on connection errors, 429 and 5xx,
  honouring Retry-After up to `retry_after_cap`; a longer wish raises `OsaiRateLimited`
  so the pipeline reschedules. `POST /Reports` is never retried on its own.
- H5: a file link that is not https on an allow-listed host (outside sandbox mode) is
  refused before any connection is made.
- H6/I2: responses are parsed by pure functions that raise only `OsaiError`s and keep
  numbers exactly as OSAI sent them.
- T5: a 401 leads to exactly one new sign-in and one retry of the call.

Messages and logs never contain the access token, the JWT or a signed URL's query.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import email.utils
import http.client
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

from reports.models import FLAG_TO_OSAI, OSAI_TOTAL_FIELDS
from reports.osai.errors import (
    OsaiAuthError,
    OsaiBadResponse,
    OsaiError,
    OsaiLinkError,
    OsaiRateLimited,
    OsaiRedirectRefused,
    OsaiRequestError,
    OsaiUnavailable,
)

logger = logging.getLogger(__name__)

STATUS_GENERATING: Final = -1
STATUS_DONE: Final = 0
STATUS_ERROR: Final = 1
_KNOWN_STATUSES: Final = frozenset({STATUS_GENERATING, STATUS_DONE, STATUS_ERROR})

API_MAX_BYTES: Final = 2 * 1024 * 1024  # OSAI's JSON answers are a few hundred bytes
CONNECT_TIMEOUT_MAX: Final = 5.0
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
BACKOFF_FIRST_SECONDS: Final = 0.5
# Retry-After values are clamped to a day: the pipeline turns them into timedeltas, and a
# wish beyond its own bucket deadline means "give up for now" anyway.
RETRY_AFTER_CEILING_SECONDS: Final = 86_400.0
_CHUNK_BYTES: Final = 64 * 1024
_JWT_MAX_CHARS: Final = 16 * 1024
_ACCOUNT_NAME_MAX_CHARS: Final = 200
_DETAIL_MAX_CHARS: Final = 200
_MAX_ID: Final = 2**63  # Bucket.osai_report_id is a BigIntegerField
# RFC 6750's b64token: what may follow "Bearer " in an Authorization header.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SECRET_KEY = re.compile(r"token|secret|password|jwt|api_?key", re.IGNORECASE)
_USER_AGENT: Final = "osai-usage/0.1 (+python-requests)"
_DOWNLOAD_ROUTE: Final = "GET <report file>"


# --- Results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsaiUser:
    """Who the access token belongs to, as far as GET /Users tells."""

    account_name: str  # for display; "" when OSAI names nobody
    raw: dict[str, Any]  # the answer, with secret-looking fields redacted


@dataclass(frozen=True)
class ReportCreated:
    """OSAI's answer to POST /Reports."""

    id: int
    status: int
    creation_time: datetime | None
    creation_time_raw: str


@dataclass(frozen=True)
class ReportStatus:
    """OSAI's answer to GET /Reports/{id}. `path` is a secret and stays out of repr()."""

    id: int
    status: int
    creation_time: datetime | None
    creation_time_raw: str
    totals: dict[str, int | float]  # OSAI names -> values exactly as parsed; only when done
    flags: dict[str, bool]
    period_from: str | None
    period_to: str | None
    read: bool | None
    path: str | None = field(repr=False)
    raw: dict[str, Any]  # as parsed, with `path` passed through redact_url()

    @property
    def is_pending(self) -> bool:
        return self.status == STATUS_GENERATING

    @property
    def is_done(self) -> bool:
        return self.status == STATUS_DONE

    @property
    def is_error(self) -> bool:
        return self.status == STATUS_ERROR


# --- Pure helpers and parsers (property-tested: only OsaiError may escape) ---------------------


def redact_url(url: str) -> str:
    """The URL as scheme://host[:port]/path, its query replaced by "?<redacted>".

    Credentials in the authority and the fragment are dropped too. Never raises.
    """
    if not isinstance(url, str):
        return "<redacted>"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = host if port is None else f"{host}:{port}"
    prefix = f"{parts.scheme}://{netloc}" if parts.scheme or netloc else ""
    return prefix + parts.path + ("?<redacted>" if parts.query else "")


def jwt_expiry(jwt: str) -> datetime | None:
    """The unverified `exp` claim of a JWT as an aware UTC datetime; None if absent. Never raises.

    Only used to decide when to sign in again ahead of time: OSAI verifies the JWT.
    """
    if not isinstance(jwt, str):
        return None
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return None
        return datetime.fromtimestamp(exp, tz=UTC)
    except (IndexError, ValueError, TypeError, OverflowError, OSError, RecursionError):
        return None


def parse_osai_time(value: object) -> datetime | None:
    """An OSAI timestamp as an aware UTC datetime, or None if it is not one.

    OSAI (.NET) sends 7 fractional digits ("2023-02-10T14:33:33.7629037Z"); they are
    truncated to microseconds. A timestamp without an offset is UTC, like everything OSAI
    sends.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def format_osai_time(moment: datetime) -> str:
    """A period boundary as OSAI expects it: ISO 8601 UTC with milliseconds and "Z"."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("OSAI periods must be timezone-aware datetimes (UTC).")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def osai_flags(flags: Mapping[str, bool]) -> dict[str, bool]:
    """The five includeX booleans under OSAI's names, given OSAI's or our (models) names.

    All five are required: a flag silently defaulted would change what OSAI counts.
    Raises ValueError or TypeError (a programming error, not OSAI's) before any request.
    """
    osai_names = frozenset(FLAG_TO_OSAI.values())
    chosen: dict[str, bool] = {}
    for key, value in flags.items():
        name = FLAG_TO_OSAI.get(key, key if key in osai_names else None)
        if name is None:
            raise ValueError(f"Unknown OSAI report flag {key!r}.")
        if not isinstance(value, bool):
            raise TypeError(f"The OSAI report flag {key!r} must be True or False.")
        if chosen.setdefault(name, value) != value:
            raise ValueError(f"The OSAI report flag {name} is given twice, differently.")
    missing = [name for name in FLAG_TO_OSAI.values() if name not in chosen]
    if missing:
        raise ValueError(f"OSAI report flags missing: {', '.join(missing)}.")
    return {name: chosen[name] for name in FLAG_TO_OSAI.values()}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After (delay-seconds or HTTP-date) in seconds, clamped to [0, one day].

    None when absent or malformed: the caller falls back to its own back-off. (urllib3's
    Retry raises InvalidHeader on a malformed value instead.)
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        seconds = float(int(text)) if len(text) <= 15 else RETRY_AFTER_CEILING_SECONDS
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # "-0000": UTC with unknown local time
        try:
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        except OverflowError:
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CEILING_SECONDS)


def parse_json(body: bytes) -> object:
    """An OSAI body decoded as strict JSON (no NaN or Infinity); OsaiBadResponse otherwise.

    The stdlib parser keeps numbers exact (I2): floats round-trip through repr and ints
    stay ints.
    """
    if not body.strip():
        raise OsaiBadResponse("OSAI answered with an empty body")
    try:
        return json.loads(
            body.decode("utf-8-sig"),
            parse_constant=_reject_json_constant,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError):  # also UnicodeDecodeError and over-long ints
        pass
    # Raised outside the handler: the decoder's error holds the whole body.
    raise OsaiBadResponse("OSAI answered with something that is not JSON")


def parse_jwt_text(body: str) -> str:
    """The JWT from a sign-in answer: plain text, or a JSON string ("\\"eyJ...\\"")."""
    text = body.strip()
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError):
            decoded = None
        if not isinstance(decoded, str):
            raise OsaiBadResponse("OSAI answered the sign-in with malformed JSON")
        text = decoded.strip()
    if not text:
        raise OsaiBadResponse("OSAI answered the sign-in with an empty body instead of a token")
    # The body itself stays out of the message: it could be a token in a wrong wrapping.
    if len(text) > _JWT_MAX_CHARS or not _BEARER_TOKEN.fullmatch(text):
        raise OsaiBadResponse("OSAI answered the sign-in with something that is not a token")
    return text


def parse_user(data: object) -> OsaiUser:
    """GET /Users: the account name for display (userName, email, name or id)."""
    user = _require_object(data, "GET /Users")
    account_name = ""
    for key in ("userName", "email", "name", "id"):
        value = user.get(key)
        if isinstance(value, str) and value.strip():
            account_name = value.strip()[:_ACCOUNT_NAME_MAX_CHARS]
            break
        if _is_int(value) and 0 <= value < _MAX_ID:
            account_name = f"OSAI user {value}"
            break
    try:
        raw = _redact_secrets(user)
    except RecursionError:
        raise OsaiBadResponse("OSAI's answer to GET /Users is nested too deeply") from None
    return OsaiUser(account_name=account_name, raw=raw)


def parse_report_created(data: object) -> ReportCreated:
    """POST /Reports: the new report's id, status and creation time.

    Only the id is required. Once OSAI has given it, the report exists; refusing the
    answer over a detail would make the pipeline create a second one. The status is
    informational (the next poll is authoritative), so anything odd becomes -1.
    """
    report = _require_object(data, "POST /Reports")
    report_id = _report_id(report, "POST /Reports")
    status = report.get("status")
    if not (_is_int(status) and status in _KNOWN_STATUSES):
        logger.warning("OSAI POST /Reports: no usable status; assuming -1 (generating)")
        status = STATUS_GENERATING
    creation_raw = report.get("creationTime")
    return ReportCreated(
        id=report_id,
        status=status,
        creation_time=parse_osai_time(creation_raw),
        creation_time_raw=creation_raw if isinstance(creation_raw, str) else "",
    )


def parse_report_status(data: object) -> ReportStatus:
    """GET /Reports/{id}: the status and, once done, the twelve totals exactly as sent.

    Strict where the pipeline relies on a field (id, status, the totals of a finished
    report); lenient on echoes (flags, period, read, creationTime, path), which are kept
    when well-typed and dropped otherwise.
    """
    what = "GET /Reports/{id}"
    report = _require_object(data, what)
    report_id = _report_id(report, what)
    status = report.get("status")
    if "status" not in report or status is None:
        raise OsaiBadResponse("OSAI's report answer has no status")
    if not _is_int(status):
        raise OsaiBadResponse("OSAI's report status is not a whole number")
    if status not in _KNOWN_STATUSES:
        shown = str(status) if -1000 < status < 1000 else "out of range"
        raise OsaiBadResponse(f"OSAI answered with an unknown report status ({shown})")

    totals: dict[str, int | float] = {}
    if status == STATUS_DONE:
        for name in OSAI_TOTAL_FIELDS:
            if name not in report:
                raise OsaiBadResponse(f"OSAI's finished report lacks {name}")
            value = _exact_number(report[name])
            if value is None:
                raise OsaiBadResponse(f"OSAI's finished report has a non-number in {name}")
            totals[name] = value

    flags = {
        name: value for name in FLAG_TO_OSAI.values() if isinstance(value := report.get(name), bool)
    }
    path = report.get("path")
    path = path if isinstance(path, str) and path.strip() else None
    raw = dict(report)
    if isinstance(raw.get("path"), str):
        raw["path"] = redact_url(raw["path"])
    creation_raw = report.get("creationTime")
    read = report.get("read")
    return ReportStatus(
        id=report_id,
        status=status,
        creation_time=parse_osai_time(creation_raw),
        creation_time_raw=creation_raw if isinstance(creation_raw, str) else "",
        totals=totals,
        flags=flags,
        period_from=_str_or_none(report.get("periodFrom")),
        period_to=_str_or_none(report.get("periodTo")),
        read=read if isinstance(read, bool) else None,
        path=path,
        raw=raw,
    )


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)  # exactly what json would do
    if not math.isfinite(value):  # "1e400" parses to inf
        raise ValueError("number out of range")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_number(value: object) -> int | float | None:
    """The value itself if it is a finite JSON number that fits a double; else None."""
    if _is_int(value):
        try:
            float(value)  # the totals' columns are doubles
        except OverflowError:
            return None
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _require_object(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise OsaiBadResponse(f"OSAI's answer to {what} is not a JSON object")
    return data


def _report_id(report: Mapping[str, Any], what: str) -> int:
    report_id = report.get("id")
    if not (_is_int(report_id) and 0 < report_id < _MAX_ID):
        raise OsaiBadResponse(f"OSAI's answer to {what} has no usable report id")
    return report_id


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _redact_secrets(value: Any) -> Any:
    """A copy with every field whose name looks secret (token, password...) redacted."""
    if isinstance(value, dict):
        return {
            key: "<redacted>"
            if isinstance(key, str) and _SECRET_KEY.search(key)
            else _redact_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_secrets(item) for item in value]
    return value


# --- Transport: a total deadline per call ------------------------------------------------------


class _Watchdog:
    """Shuts the exchange's socket down when the call's deadline passes.

    requests' timeouts bound each socket read, not an exchange: a server that trickles a
    byte now and then, even within the status line, never trips them, and urllib3 reads
    a body chunk until it is full. Shutting the socket down from a timer thread makes the
    blocked read return at once; the exchange then reports a timeout. (Connecting, before
    the socket is watched, is bounded by the connect timeout.)
    """

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._finished = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._token: contextvars.Token[_Watchdog | None] | None = None

    def __enter__(self) -> _Watchdog:
        self._token = _current_watchdog.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()
        if self._token is not None:
            _current_watchdog.reset(self._token)

    def watch(self, sock: object) -> None:
        """Called by the connection just before it reads the response."""
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sock = sock
                if self.fired:
                    self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown: SSLSocket.shutdown() would also drop its SSL
                # object from under the reading thread.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


_current_watchdog: contextvars.ContextVar[_Watchdog | None] = contextvars.ContextVar(
    "osai_watchdog", default=None
)


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


class _DeadlineAdapter(HTTPAdapter):
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


def _install_log_filters() -> None:
    # Installed on import because this module is the only one that fetches signed links;
    # settings.LOGGING may still quieten urllib3 altogether.
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        third_party = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrlQueries) for f in third_party.filters):
            third_party.addFilter(_RedactUrlQueries())


_install_log_filters()


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def looks_like_html(self) -> bool:
        content_type = self.headers.get("Content-Type", "").lower()
        return "html" in content_type or self.body.lstrip()[:1] == b"<"


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def _read_body(response: requests.Response, *, deadline: float, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length", "").strip()
    if re.fullmatch(r"[0-9]{1,20}", declared) and int(declared) > max_bytes:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge
        if time.monotonic() > deadline:
            raise _TooSlow
        chunks.append(chunk)
    return b"".join(chunks)


def _failed_before_sending(exc: BaseException) -> bool:
    """True when the request certainly never reached the server (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if isinstance(exc, requests.ConnectionError) and exc.args else None
    return isinstance(reason, urllib3.exceptions.MaxRetryError) and isinstance(
        reason.reason, urllib3.exceptions.NewConnectionError
    )


# --- The client --------------------------------------------------------------------------------


class OsaiClient:
    """One OSAI account in one region: sign in, who am I, create, poll, download.

    Not thread-safe (one per task). `jwt` holds the current JWT; `on_new_jwt` is called
    with every new one so the caller can store it (encrypted).
    """

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        jwt: str | None = None,
        on_new_jwt: Callable[[str], None] | None = None,
        timeout: float | None = None,
        sandbox: bool = False,
        download_hosts: Sequence[str] | None = None,
        retry_after_cap: float | None = None,
        max_download_bytes: int | None = None,
        get_retries: int = 2,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """Configure the client; nothing is sent until the first call.

        Defaults come from settings (OSAI_HTTP_TIMEOUT_SECONDS, OSAI_DOWNLOAD_HOSTS,
        OSAI_RETRY_AFTER_CAP_SECONDS, OSAI_DOWNLOAD_MAX_BYTES). A `session` passed in
        provides the connection pool, proxies and TLS settings; the client mounts its own
        adapters on it and builds every request itself (no session headers, auth or
        cookies). `sleep` waits between retries (tests pass a fake).
        """
        self.base_url = base_url.rstrip("/")
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError("The OSAI base URL must be an http(s) URL with a host.")
        self._base_host = (base.hostname.lower(), base.port or _default_port(base.scheme))
        self._access_token = access_token
        self.jwt = jwt
        self._on_new_jwt = on_new_jwt
        self.timeout = float(settings.OSAI_HTTP_TIMEOUT_SECONDS if timeout is None else timeout)
        if not self.timeout > 0:
            raise ValueError("The OSAI timeout must be positive.")
        self.sandbox = sandbox
        hosts = settings.OSAI_DOWNLOAD_HOSTS if download_hosts is None else download_hosts
        self.download_hosts = frozenset(host.strip().lower() for host in hosts if host.strip())
        self.retry_after_cap = float(
            settings.OSAI_RETRY_AFTER_CAP_SECONDS if retry_after_cap is None else retry_after_cap
        )
        self.max_download_bytes = int(
            settings.OSAI_DOWNLOAD_MAX_BYTES if max_download_bytes is None else max_download_bytes
        )
        self.get_retries = max(0, get_retries)
        self._sleep = time.sleep if sleep is None else sleep
        self._session = requests.Session() if session is None else session
        adapter = _DeadlineAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"<OsaiClient {self.base_url}>"

    # --- Public calls --------------------------------------------------------------------------

    def sign_in(self) -> str:
        """POST /Users/SignIn with the access token; store and return the new JWT.

        Raises OsaiAuthError when OSAI refuses the token, OsaiBadResponse when the answer
        is not a token. `on_new_jwt` is called with the JWT before returning.
        """
        return self._sign_in(self._deadline())

    def user_info(self) -> OsaiUser:
        """GET /Users: who the access token belongs to."""
        return parse_user(self._call_json("GET", "/Users", route="GET /Users"))

    def create_report(
        self, period_from: datetime, period_to: datetime, flags: Mapping[str, bool]
    ) -> ReportCreated:
        """POST /Reports for [period_from, period_to) with the five includeX flags.

        Never retried on its own (each POST may create a report): a connection error, 5xx
        or 429 raises, and the message says when the outcome is unknown. Only a 401 is
        retried, once, after signing in again: OSAI did not accept that request.
        `flags` may use OSAI's names (includeDatasets) or ours (include_datasets).
        """
        body = {
            "periodFrom": format_osai_time(period_from),
            "periodTo": format_osai_time(period_to),
            **osai_flags(flags),
        }
        data = self._call_json(
            "POST",
            "/Reports",
            route="POST /Reports",
            json_body=body,
            retry=False,
            outcome_unknown="whether OSAI created the report is unknown",
        )
        return parse_report_created(data)

    def get_report(self, report_id: int) -> ReportStatus:
        """GET /Reports/{id}: the report's status and, once done, its totals and file link."""
        if not (_is_int(report_id) and 0 < report_id < _MAX_ID):
            raise ValueError("An OSAI report id is a positive integer.")
        data = self._call_json("GET", f"/Reports/{report_id}", route="GET /Reports/{id}")
        status = parse_report_status(data)
        if status.id != report_id:
            raise OsaiBadResponse(
                f"OSAI answered with report {status.id} when asked for report {report_id}"
            )
        return status

    def download_report_file(self, path: str) -> bytes:
        """Download the report's JSON file from its pre-signed URL, as received.

        The link itself is the credential: no Authorization header, no cookies. Refused
        without connecting unless it is https on an allow-listed host (or, in sandbox
        mode, http(s) on the base URL's host and port). Retried like a GET, never on 403.
        """
        refusal = self._link_refusal(path)
        if refusal is not None:
            raise OsaiLinkError(f"The report file link was refused: {refusal}.")
        try:
            request = requests.Request(
                "GET", path, headers={"Accept": "application/json, */*", "User-Agent": _USER_AGENT}
            ).prepare()
        except (requests.RequestException, ValueError):
            request = None  # its message would quote the link
        if request is None:
            raise OsaiLinkError("The report file link was refused: it is not a valid URL.")
        reply = self._send(
            request, route=_DOWNLOAD_ROUTE, deadline=self._deadline(), retry=True, download=True
        )
        if 200 <= reply.status < 300:
            return reply.body
        raise self._download_error(reply)

    # --- Calls ---------------------------------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _sign_in(self, deadline: float) -> str:
        reply = self._send(
            self._api_request("POST", "/Users/SignIn", json_body=self._access_token, jwt=None),
            route="POST /Users/SignIn",
            deadline=deadline,
            retry=False,
        )
        if reply.status in (400, 401, 403):
            raise OsaiAuthError(
                f"OSAI refused the access token (HTTP {reply.status}); check that it is a "
                "current OSAI access token.",
                status_code=reply.status,
            )
        if not 200 <= reply.status < 300:
            raise self._api_error(reply)
        if reply.looks_like_html:
            raise OsaiBadResponse(
                f"OSAI answered the sign-in with an HTML page instead of a token "
                f"(HTTP {reply.status})",
                status_code=reply.status,
            )
        # Undecodable bytes become U+FFFD, which no token contains: parse_jwt_text refuses.
        jwt = parse_jwt_text(reply.body.decode("utf-8-sig", errors="replace"))
        self.jwt = jwt
        logger.info("Signed in to OSAI")
        if self._on_new_jwt is not None:
            self._on_new_jwt(jwt)
        return jwt

    def _call_json(
        self,
        method: str,
        path: str,
        *,
        route: str,
        json_body: object = None,
        retry: bool = True,
        outcome_unknown: str | None = None,
    ) -> object:
        """An authenticated call, with the one re-sign-in of T5, answered with JSON."""
        deadline = self._deadline()
        if self.jwt is None:
            self._sign_in(deadline)
        for signed_in_again in (False, True):
            reply = self._send(
                self._api_request(method, path, json_body=json_body, jwt=self.jwt),
                route=route,
                deadline=deadline,
                retry=retry,
                outcome_unknown=outcome_unknown,
            )
            if reply.status != 401:
                break
            if signed_in_again:
                raise OsaiAuthError(
                    "OSAI no longer accepts this connection's access token: it answered "
                    "HTTP 401 even right after signing in again.",
                    status_code=401,
                )
            logger.info("OSAI %s answered 401: signing in again", route)
            self._sign_in(deadline)
        if not 200 <= reply.status < 300:
            raise self._api_error(reply)
        if reply.looks_like_html:
            raise OsaiBadResponse(
                f"OSAI answered with an HTML page instead of JSON (HTTP {reply.status})",
                status_code=reply.status,
            )
        try:
            return parse_json(reply.body)
        except OsaiBadResponse as exc:
            message = f"{exc.message} (HTTP {reply.status})"
        raise OsaiBadResponse(message, status_code=reply.status)

    def _api_request(
        self, method: str, path: str, *, json_body: object, jwt: str | None
    ) -> requests.PreparedRequest:
        # Built by hand, not by the session, so that nothing is added behind our back
        # (session headers, cookies, .netrc credentials).
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if jwt:
            headers["Authorization"] = f"Bearer {jwt}"
        return requests.Request(
            method, self.base_url + path, headers=headers, json=json_body
        ).prepare()

    def _send(
        self,
        request: requests.PreparedRequest,
        *,
        route: str,
        deadline: float,
        retry: bool,
        download: bool = False,
        outcome_unknown: str | None = None,
    ) -> _Reply:
        """Exchange, retrying (if `retry`) connection errors, 429 and 5xx within the deadline.

        Returns the last reply, whatever its status; raises OsaiUnavailable when no answer
        came. A Retry-After beyond the cap, or beyond the deadline, ends the retries.
        """
        attempts = 1 + (self.get_retries if retry else 0)
        for attempt in range(attempts):
            reply: _Reply | None = None
            failure: OsaiUnavailable | None = None
            try:
                reply = self._exchange(
                    request,
                    route=route,
                    deadline=deadline,
                    download=download,
                    outcome_unknown=outcome_unknown,
                )
            except OsaiUnavailable as exc:
                failure = exc
            if attempt == attempts - 1:
                break
            if reply is None:
                wait = self._backoff(attempt)
            elif reply.status in RETRY_STATUSES:
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.retry_after_cap:
                    break  # the caller raises OsaiRateLimited and the pipeline reschedules
                wait = self._backoff(attempt) if retry_after is None else retry_after
            else:
                break
            if time.monotonic() + wait >= deadline:
                break
            logger.info(
                "OSAI %s: %s; retrying in %.1f s",
                route,
                "no answer" if reply is None else f"HTTP {reply.status}",
                wait,
            )
            self._sleep(wait)
        if failure is not None:
            raise failure
        assert reply is not None
        return reply

    def _backoff(self, attempt: int) -> float:
        return min(BACKOFF_FIRST_SECONDS * 2.0**attempt, self.retry_after_cap)

    def _exchange(
        self,
        request: requests.PreparedRequest,
        *,
        route: str,
        deadline: float,
        download: bool,
        outcome_unknown: str | None,
    ) -> _Reply:
        """One request and its whole answer within the deadline; redirects are not followed."""
        started = time.monotonic()
        remaining = deadline - started
        url = request.url or ""
        error: OsaiError | None = None
        reply: _Reply | None = None
        if remaining <= 0:
            error = self._timeout_error(download, outcome_unknown=None)
        else:
            # The adapter, not Session.send: the session would read a redirect's whole body
            # (unbounded) to prepare the next request even with allow_redirects=False.
            adapter = self._session.get_adapter(url)
            env = self._session.merge_environment_settings(url, {}, True, None, None)
            response: requests.Response | None = None
            with _Watchdog(deadline) as watchdog:
                try:
                    response = adapter.send(
                        request,
                        stream=True,
                        timeout=(min(CONNECT_TIMEOUT_MAX, remaining), remaining),
                        verify=True if env["verify"] is None else env["verify"],
                        cert=env["cert"],
                        proxies=env["proxies"],
                    )
                    body = b""
                    if not 300 <= response.status_code < 400:
                        max_bytes = self.max_download_bytes if download else API_MAX_BYTES
                        body = _read_body(response, deadline=deadline, max_bytes=max_bytes)
                    if watchdog.fired:
                        raise _TooSlow  # a cut-off body can look complete
                    reply = _Reply(response.status_code, response.headers, body)
                except _TooSlow:
                    error = self._timeout_error(download, outcome_unknown=outcome_unknown)
                except _TooLarge:
                    error = self._too_large_error(download)
                except requests.exceptions.ContentDecodingError:
                    error = OsaiBadResponse(f"{_who(download)} sent a body that cannot be decoded")
                except (
                    requests.RequestException,
                    urllib3.exceptions.HTTPError,
                    http.client.HTTPException,
                    OSError,
                ) as exc:
                    # Never chained or formatted: requests' messages contain the full URL.
                    error = self._transport_error(
                        exc,
                        timed_out=watchdog.fired or time.monotonic() >= deadline,
                        download=download,
                        outcome_unknown=outcome_unknown,
                    )
                finally:
                    if response is not None:
                        response.close()
        elapsed_ms = (time.monotonic() - started) * 1000
        if error is not None:
            # Raised here, outside any except block, so it carries no __context__ either.
            logger.warning("OSAI %s failed after %.0f ms: %s", route, elapsed_ms, error.message)
            raise error
        assert reply is not None
        level = logging.DEBUG if reply.status < 400 else logging.WARNING
        logger.log(level, "OSAI %s -> HTTP %s in %.0f ms", route, reply.status, elapsed_ms)
        return reply

    # --- Errors --------------------------------------------------------------------------------

    def _timeout_error(self, download: bool, *, outcome_unknown: str | None) -> OsaiUnavailable:
        message = f"{_who(download)} did not answer within {self.timeout:g} s"
        return OsaiUnavailable(message + (f"; {outcome_unknown}" if outcome_unknown else ""))

    def _too_large_error(self, download: bool) -> OsaiError:
        if download:
            return OsaiLinkError(
                f"The report file is larger than {_megabytes(self.max_download_bytes)} "
                "(OSAI_DOWNLOAD_MAX_BYTES)"
            )
        return OsaiBadResponse(f"OSAI's answer is larger than {_megabytes(API_MAX_BYTES)}")

    def _transport_error(
        self,
        exc: BaseException,
        *,
        timed_out: bool,
        download: bool,
        outcome_unknown: str | None,
    ) -> OsaiUnavailable:
        who = _who(download)
        not_sent = _failed_before_sending(exc)
        if isinstance(exc, requests.ConnectTimeout):
            connect_timeout = min(CONNECT_TIMEOUT_MAX, self.timeout)
            message = f"{who} could not be reached within {connect_timeout:g} s"
        elif timed_out or isinstance(exc, requests.Timeout):
            message = f"{who} did not answer within {self.timeout:g} s"
        elif not_sent:
            message = f"Could not connect to {who} (connection refused or host not found)"
        elif isinstance(exc, requests.exceptions.SSLError):
            message = f"The secure (TLS) connection to {who} failed"
        else:
            message = f"The connection to {who} broke before the answer was complete"
        if outcome_unknown and not not_sent:
            message += f"; {outcome_unknown}"
        return OsaiUnavailable(message)

    def _api_error(self, reply: _Reply) -> OsaiError:
        """The error for a non-2xx API answer (401 is handled by the callers)."""
        status = reply.status
        if 300 <= status < 400:
            return OsaiRedirectRefused(
                f"OSAI answered with a redirect (HTTP {status}); redirects are never followed",
                status_code=status,
            )
        if status in RETRY_STATUSES or status == 408:
            return self._unavailable_error(reply, "OSAI")
        if status == 401:
            return OsaiAuthError("OSAI did not accept the sign-in (HTTP 401)", status_code=401)
        if status == 404:
            return OsaiRequestError("OSAI has no such resource (HTTP 404)", status_code=404)
        if 400 <= status < 500:
            return OsaiRequestError(
                f"OSAI refused the request (HTTP {status}){self._error_detail(reply)}",
                status_code=status,
            )
        return OsaiBadResponse(f"OSAI answered with HTTP status {status}", status_code=status)

    def _download_error(self, reply: _Reply) -> OsaiError:
        status = reply.status
        if 300 <= status < 400:
            return OsaiRedirectRefused(
                f"The report file storage answered with a redirect (HTTP {status}); "
                "redirects are never followed",
                status_code=status,
            )
        if status == 403:
            return OsaiLinkError(
                "The report file link has expired or was refused by the storage (HTTP 403)",
                status_code=403,
            )
        if status in RETRY_STATUSES or status == 408:
            return self._unavailable_error(reply, "The report file storage")
        if 400 <= status < 500:
            return OsaiLinkError(
                f"The report file storage refused the link (HTTP {status})", status_code=status
            )
        return OsaiBadResponse(
            f"The report file storage answered with HTTP status {status}", status_code=status
        )

    def _unavailable_error(self, reply: _Reply, who: str) -> OsaiUnavailable:
        status = reply.status
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        if status == 429 or (status == 503 and retry_after is not None):
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            return OsaiRateLimited(
                f"{who} is rate limiting requests (HTTP {status}){wait}",
                retry_after=retry_after,
                status_code=status,
            )
        if reply.looks_like_html:
            return OsaiUnavailable(
                f"{who} answered with an HTML page instead of JSON (HTTP {status})",
                status_code=status,
            )
        return OsaiUnavailable(f"{who} is unavailable (HTTP {status})", status_code=status)

    def _error_detail(self, reply: _Reply) -> str:
        """A short reason from an error body (ProblemDetails' title/detail), secrets removed."""
        try:
            data = parse_json(reply.body)
        except OsaiBadResponse:
            return ""
        if not isinstance(data, dict):
            return ""
        for key in ("detail", "title", "message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                text = " ".join(value.split())[:_DETAIL_MAX_CHARS]
                for secret in (self._access_token, self.jwt):
                    if secret and len(secret) >= 4:
                        text = text.replace(secret, "<redacted>")
                return f": {text}"
        return ""

    # --- Download links ------------------------------------------------------------------------

    def _link_refusal(self, path: str) -> str | None:
        """Why the file link may not be fetched, or None if it may."""
        if not isinstance(path, str) or not path.strip():
            return "it is empty"
        try:
            parts = urlsplit(path.strip())
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            return "it is not a valid URL"
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host:
            return "it is not an http(s) URL with a host"
        if parts.username is not None or parts.password is not None:
            return "it carries credentials"
        if scheme == "https" and host in self.download_hosts:
            return None
        if self.sandbox and (host, port or _default_port(scheme)) == self._base_host:
            return None
        if scheme != "https":
            return "it is not https"
        return f"{host} is not an allowed download host (OSAI_DOWNLOAD_HOSTS)"


def _default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


def _who(download: bool) -> str:
    return "The report file storage" if download else "OSAI"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"
