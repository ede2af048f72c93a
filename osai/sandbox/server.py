"""The OSAI sandbox: a local emulator of ONESTEP AI's report API, faithful to its contract.

It speaks the calls of OSAI's report playbook (osai/contract.py) over real HTTP:

    POST /api/Users/SignIn      JSON string body (an access token) -> the JWT as text
    GET  /api/Users             -> who the JWT belongs to
    POST /api/Reports           -> {"id", "creationTime", "status": -1}
    GET  /api/Reports/{id}      -> -1 while generating, then 0 with the totals and a
                                   pre-signed `path`, or 1 on error
    GET  /s3/<account>/Reports/<file>.json?AWSAccessKeyId=&Expires=&Signature=
                                -> the report's JSON file (no auth; S3-style signature)

Any access token that starts with `osai-sandbox-` is an account of its own, with a
deterministic usage history (osai/sandbox/usage.py). Tests switch faults on and
off while it runs (`POST /__sandbox__/faults`), add usage to an account's day
(`POST /__sandbox__/usage`), read call counters (`GET /__sandbox__/stats`) and clear
everything (`POST /__sandbox__/reset`).

Only the standard library is used, so it also runs without Django:
`python -m osai.sandbox --port 8765`, or `manage.py osai_sandbox`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import signal
import socketserver
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from types import FrameType
from typing import Any, Final
from urllib.parse import parse_qs, quote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from osai import contract
from osai.sandbox.usage import (
    FLAG_FIELDS,
    TOTAL_FIELDS,
    Added,
    account_totals,
    daily_breakdown,
    parse_added,
)
from osai.sandbox.webhooks import WebhookSender

TOKEN_PREFIX: Final = "osai-sandbox-"  # noqa: S105 (a prefix, not a secret)
FIRST_REPORT_ID: Final = 16718  # the seed's example id
# Totals that are a state at the period's end (images existing), not sums over it.
_STATE_FIELDS: Final = frozenset(t.field for t in contract.TOTALS if not t.additive)

# Route keys: how calls are counted in the stats and how faults name the calls they hit.
ROUTE_SIGN_IN: Final = "POST /api/Users/SignIn"
ROUTE_USERS: Final = "GET /api/Users"
ROUTE_CREATE: Final = "POST /api/Reports"
ROUTE_STATUS: Final = "GET /api/Reports/{id}"
ROUTE_DOWNLOAD: Final = "GET /s3/file"
ROUTE_OTHER: Final = "other"  # unknown paths and wrong methods (answered 404 / 405)
ROUTES: Final = (ROUTE_SIGN_IN, ROUTE_USERS, ROUTE_CREATE, ROUTE_STATUS, ROUTE_DOWNLOAD)

MALFORMED_KINDS: Final = ("json", "html", "huge", "empty", "missing_status", "unknown_status")
REDIRECT_STATUSES: Final = (301, 302, 303, 307, 308)
_MAX_BODY_BYTES: Final = 1024 * 1024
_FUTURE_TOLERANCE: Final = timedelta(days=1)
_ACCESS_KEY_ID: Final = "YXBw"  # what OSAI's links carry (base64 of "app")

_JSON: Final = "application/json; charset=utf-8"
_TEXT: Final = "text/plain; charset=utf-8"
_XML: Final = "application/xml"


@dataclass
class SandboxConfig:
    """The sandbox's settings at start-up; `POST /__sandbox__/faults` may override them."""

    latency: float = 3.0  # seconds a report takes to generate
    jwt_ttl: int = 3600  # seconds a JWT from SignIn stays valid
    link_ttl: int = 600  # seconds a pre-signed `path` stays valid
    quote_jwt: bool = False  # SignIn answers `"<jwt>"` as JSON instead of bare text
    webhook_interval: float = 10.0  # seconds between events to a registered webhook URL


# --- Accounts and JWTs --------------------------------------------------------------------


def account_slug(token: str) -> str:
    """The user name of a sandbox token: what follows the prefix, made URL- and mail-safe."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", token.removeprefix(TOKEN_PREFIX).lower())
    return slug.strip("-._")[:40] or "user"


def account_id_for_token(token: str) -> str:
    """The stable account id (a UUID) of a sandbox access token: one account per token."""
    digest = hashlib.sha256(f"osai-sandbox-account\x1f{token}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwt_encode(secret: bytes, claims: Mapping[str, Any]) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _jwt_decode(secret: bytes, token: str, now: float) -> dict[str, Any] | None:
    """The claims of a JWT signed by this sandbox and not expired; None otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload, signature = parts
    expected = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_b64url_decode(signature), expected):
            return None
        claims = json.loads(_b64url_decode(payload))
    except ValueError:  # bad base64, bad UTF-8 or bad JSON
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        return None
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or now >= expires:
        return None
    return claims


# --- Formats ------------------------------------------------------------------------------

_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
    r"(?:[Zz]|[+-]\d{2}:?\d{2})?"
)


def parse_period(value: object) -> datetime | None:
    """An ISO 8601 instant as OSAI accepts it, in UTC; naive means UTC. None if invalid."""
    if not isinstance(value, str) or not _ISO_8601.fullmatch(value.strip()):
        return None
    text = value.strip().replace(",", ".")
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # e.g. month 13
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_period(moment: datetime) -> str:
    """OSAI's echo of a period bound: `2022-01-01T00:00:00Z`, fractions only when present."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _ticks_now() -> int:
    """Now in 100 ns ticks since the Unix epoch: .NET's resolution, hence 7 digits."""
    return time.time_ns() // 100


def _ticks_to_datetime(ticks: int) -> datetime:
    seconds, rest = divmod(ticks, 10_000_000)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 10)


def _creation_time(ticks: int, digits: int) -> str:
    """`2023-02-10T14:33:33.7629037Z` (7 digits, on create) or 6 digits (finished report)."""
    seconds, rest = divmod(ticks, 10_000_000)
    whole = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{rest:07d}"[:digits]
    return f"{whole}.{fraction}Z"


def _dotnet_number(value: int | float) -> int | float:
    """A double as OSAI's .NET serializer writes it: integral values without `.0`."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# --- Responses ------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str | None = _JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int | None = None  # for streamed bodies


def _json_bytes(data: object) -> bytes:
    # Compact, like ASP.NET Core.
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def _json(status: int, data: object, headers: Sequence[tuple[str, str]] = ()) -> _Response:
    return _Response(status, _json_bytes(data), _JSON, list(headers))


def _message(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> _Response:
    return _json(status, {"message": message}, headers)


def _unauthorized(reason: str) -> _Response:
    # ASP.NET's JwtBearer handler names the scheme and the problem in this header.
    challenge = f'Bearer error="invalid_token", error_description="{reason}"'
    return _message(401, f"Unauthorized: {reason}", [("WWW-Authenticate", challenge)])


def _s3_error(status: int, code: str, message: str) -> _Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return _Response(status, body.encode(), _XML)


# --- Reports --------------------------------------------------------------------------------


@dataclass
class _StoredReport:
    id: int
    account_id: str
    created_ticks: int
    ready_at: float  # time.time() at which generation finishes
    outcome: str  # "done", "error" or "stuck", fixed by the faults in force at creation
    period_from: datetime
    period_to: datetime
    flags: dict[str, bool]
    file_id: str
    read: bool = False
    totals: dict[str, int | float] | None = None  # computed once, when first needed
    skew: float = 0.0  # the `month_skew` in force at creation, for a one-month report

    @property
    def created(self) -> datetime:
        return _ticks_to_datetime(self.created_ticks)

    def status(self, now: float) -> int:
        if self.outcome == "stuck" or now < self.ready_at:
            return contract.STATUS_GENERATING
        return contract.STATUS_ERROR if self.outcome == "error" else contract.STATUS_DONE

    def usage(self, added: Added | None = None) -> dict[str, int | float]:
        """Its totals, computed once, with the usage injected into its account's days so far."""
        # Usage after the report was made has not happened yet: as_of = creation time.
        if self.totals is None:
            totals = account_totals(
                self.account_id,
                self.period_from,
                self.period_to,
                self.flags,
                as_of=self.created,
                added=added,
            )
            self.totals = _skewed(totals, self.skew) if self.skew else totals
        return self.totals


def _is_calendar_month(start: datetime, end: datetime) -> bool:
    """True for exactly one calendar month, [the 1st 00:00, the next month's 1st 00:00)."""
    if (start.day, start.hour, start.minute, start.second, start.microsecond) != (1, 0, 0, 0, 0):
        return False
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return end == start.replace(year=year, month=month)


def _skewed(totals: dict[str, int | float], skew: float) -> dict[str, int | float]:
    """The `month_skew` fault: sums over the period off by `skew` (0.1 = 10 % more than the
    sum of its days); a state at the period's end (images existing) stays as it is. Whole
    numbers stay whole, as OSAI sends them."""
    result: dict[str, int | float] = {}
    for name, value in totals.items():
        if name in _STATE_FIELDS:
            result[name] = value
        elif isinstance(value, int):
            result[name] = round(value * (1 + skew))
        else:
            result[name] = value * (1 + skew)
    return result


# --- Faults ---------------------------------------------------------------------------------


def _check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _check_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number >= 0")
    return value


def _check_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValueError("must be a number of seconds >= 0")
    return float(value)


def _check_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError("must be a number from 0 to 1")
    return float(value)


def _check_header_value(value: object) -> str:
    # Whatever garbage a test wants, as long as it can travel as an HTTP header value.
    if not isinstance(value, str) or any(c in value for c in "\r\n\0") or not value.isascii():
        raise ValueError("must be an ASCII string without line breaks")
    return value


def _check_malformed(value: object) -> str:
    if value not in MALFORMED_KINDS:
        raise ValueError(f"must be one of {', '.join(MALFORMED_KINDS)}")
    return str(value)


def _check_redirect_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in REDIRECT_STATUSES:
        raise ValueError(f"must be one of {REDIRECT_STATUSES}")
    return value


def _check_skew(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 < value <= 10:
        raise ValueError("must be a number above -1 and at most 10")
    return float(value)


def _check_routes(value: object) -> list[str]:
    routes = [value] if isinstance(value, str) else value
    if not isinstance(routes, list) or not routes or any(r not in ROUTES for r in routes):
        raise ValueError(f"must be one or a list of {', '.join(ROUTES)}")
    return list(routes)


# Every key POST /__sandbox__/faults accepts, and how it is checked.
FAULT_KEYS: Final[Mapping[str, Callable[[object], object]]] = {
    "report_error": _check_bool,  # new reports end in status 1
    "report_stuck": _check_bool,  # new reports stay at -1 forever
    "error_rate": _check_fraction,  # that share of requests answers 500 or 503, at random
    "error_every": _check_count,  # every Nth request answers 500
    "fail_next": _check_count,  # the next N requests answer 503
    "rate_limit_next": _check_count,  # the next N requests answer 429 ...
    "retry_after": _check_header_value,  # ... with this Retry-After (default "1")
    "hang_next": _check_count,  # the next N requests wait hang_seconds before answering
    "hang_seconds": _check_seconds,  # default 60
    "trickle_next": _check_count,  # the next N answers come one byte per trickle_interval
    "trickle_interval": _check_seconds,  # default 1
    "malformed_next": _check_count,  # the next N GET /api/Reports/{id} answer garbage ...
    "malformed": _check_malformed,  # ... of this kind (default "json")
    "huge_bytes": _check_count,  # size of the "huge" body (default 30 MB)
    "redirect_next": _check_count,  # the next N requests redirect ...
    "redirect_to": _check_header_value,  # ... to this URL ...
    "redirect_status": _check_redirect_status,  # ... with this status (default 302)
    "expire_links": _check_bool,  # `path` links are issued already expired
    # New reports of exactly one calendar month come back off from the sum of their days by
    # this share (0.1: 10 % more), as real OSAI might; other periods stay exact.
    "month_skew": _check_skew,
    "route": _check_routes,  # request faults hit only these route keys
    # Settings, overridable at runtime too.
    "latency": _check_seconds,
    "jwt_ttl": _check_count,
    "link_ttl": _check_count,
    "quote_jwt": _check_bool,
}
_COUNTDOWNS: Final = (
    "hang_next",
    "trickle_next",
    "redirect_next",
    "rate_limit_next",
    "fail_next",
    "malformed_next",
)


@dataclass
class _Plan:
    """What the faults do to one request."""

    wake: threading.Event  # set by a reset: stops waiting
    hang_seconds: float = 0.0
    trickle_interval: float = 0.0
    response: _Response | None = None  # answers instead of OSAI


def _trickle(
    body: bytes | Iterable[bytes], interval: float, wake: threading.Event
) -> Iterator[bytes]:
    yield b""  # wsgiref sends the headers with the first (even empty) chunk
    chunks = [body] if isinstance(body, bytes) else body
    first = True
    for chunk in chunks:
        for i in range(len(chunk)):
            if not first:
                wake.wait(interval)  # a reset releases the rest at once
            first = False
            yield chunk[i : i + 1]


def _huge_body(report_id: int, size: int) -> tuple[Iterator[bytes], int]:
    """A valid JSON document of about `size` bytes, streamed, so the sandbox never holds it."""
    head = f'{{"id":{report_id},"status":-1,"padding":"'.encode()
    tail = b'"}'
    padding = max(0, size - len(head) - len(tail))

    def chunks() -> Iterator[bytes]:
        yield head
        block = b"x" * 65536
        left = padding
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)
        yield tail

    return chunks(), len(head) + padding + len(tail)


# --- The WSGI application -------------------------------------------------------------------

_REPORT_PATH = re.compile(r"/api/reports/(\d{1,18})", re.IGNORECASE)
_FILE_PATH = re.compile(r"/s3/([0-9a-f-]{36})/Reports/([0-9a-f-]{36})\.json")
# ASP.NET routes ignore case and a trailing slash.
_API_ROUTES: Final[Mapping[str, str]] = {
    "/api/users/signin": ROUTE_SIGN_IN,
    "/api/users": ROUTE_USERS,
    "/api/reports": ROUTE_CREATE,
}


def _match_route(method: str, path: str) -> tuple[str, str | None]:
    """The route key of a request (ROUTE_OTHER if none) and the path's id or file part."""
    normal = path.rstrip("/").lower() if path != "/" else path
    wanted = _API_ROUTES.get(normal)
    report = _REPORT_PATH.fullmatch(path.rstrip("/"))
    if wanted is None and report:
        wanted = ROUTE_STATUS
    download = _FILE_PATH.fullmatch(path)
    if wanted is None and download:
        wanted = ROUTE_DOWNLOAD
    if wanted is None or wanted.split(" ", 1)[0] != method:
        return ROUTE_OTHER, None
    if report:
        return wanted, report.group(1)
    return wanted, path if download else None


class SandboxApp:
    """The sandbox as a WSGI application. Thread-safe: one lock guards all its state."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        # Per process: a JWT or link from another sandbox process does not verify here.
        self._jwt_secret = secrets.token_bytes(32)
        self._link_secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._rng = random.Random()
        # Report ids keep growing across resets, so an id from an earlier test never
        # names a newer report.
        self._next_id = FIRST_REPORT_ID
        # Worker webhooks to registered URLs (osai/sandbox/webhooks.py): none until one is.
        self.webhooks = WebhookSender(self.config.webhook_interval)
        self._clear()

    def _clear(self) -> None:
        self._reports: dict[int, _StoredReport] = {}
        self._files: dict[str, int] = {}  # file id -> report id
        self._faults: dict[str, Any] = {}
        self._calls: Counter[str] = Counter({route: 0 for route in ROUTES})
        # Calls that reached an account (a valid token, JWT or signed link): per account id.
        self._account_calls: dict[str, Counter[str]] = {}
        self._injected: Counter[str] = Counter()
        # Usage added to accounts' days (POST /__sandbox__/usage): account id -> day -> totals.
        self._added: dict[str, dict[date, Counter[str]]] = {}
        self._auth_headers_on_downloads = 0
        self._error_every_seen = 0
        self._wake = threading.Event()

    # Control, also callable in-process. ------------------------------------------------------

    def reset(self) -> None:
        """Forget reports, counters, faults and webhook URLs; release requests held by hang or
        trickle."""
        with self._lock:
            self._wake.set()
            self._clear()
        self.webhooks.clear()

    def close(self) -> None:
        """Stop posting webhooks (the server is stopping)."""
        self.webhooks.stop()

    def set_faults(self, changes: Mapping[str, object]) -> dict[str, Any]:
        """Merge `changes` into the faults; an empty mapping clears them all.

        Raises ValueError (with every problem) for unknown keys or bad values.
        """
        problems = [f"unknown key {key!r}" for key in changes if key not in FAULT_KEYS]
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            if key in FAULT_KEYS:
                try:
                    checked[key] = FAULT_KEYS[key](value)
                except ValueError as exc:
                    problems.append(f"{key} {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        with self._lock:
            if not checked:
                self._faults.clear()
            self._faults.update(checked)
            if "error_every" in checked:
                self._error_every_seen = 0
            return dict(self._faults)

    def add_usage(self, token: object, day: object, add: object) -> dict[str, Any]:
        """Add usage to one UTC day of a sandbox token's account: every report computed from
        now on that covers (part of) the day counts it, pro rata like the model's own usage.
        Repeated additions add up. Raises ValueError (with every problem) for bad input."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise ValueError(f"token must be a sandbox access token ({TOKEN_PREFIX}…)")
        parsed, amounts = parse_added(day, add)
        account = account_id_for_token(token)
        with self._lock:
            totals = self._added.setdefault(account, {}).setdefault(parsed, Counter())
            totals.update(amounts)
            return {"account_id": account, "day": parsed.isoformat(), "added": dict(totals)}

    def _added_for(self, account_id: str) -> Added:
        """A copy of the usage added to the account's days. Under the lock."""
        return {day: dict(totals) for day, totals in self._added.get(account_id, {}).items()}

    def faults(self) -> dict[str, Any]:
        """The faults and setting overrides in force."""
        with self._lock:
            return dict(self._faults)

    def settings(self) -> dict[str, Any]:
        """The effective settings: start-up values, overridden by the faults endpoint."""
        with self._lock:
            return self._settings()

    def _settings(self) -> dict[str, Any]:
        return {
            name: self._faults.get(name, getattr(self.config, name))
            for name in ("latency", "jwt_ttl", "link_ttl", "quote_jwt")
        }

    def stats(self) -> dict[str, Any]:
        """Calls per route, reports per status, faults, and downloads that carried auth."""
        now = time.time()
        with self._lock:
            statuses = Counter(str(r.status(now)) for r in self._reports.values())
            return {
                "calls": dict(self._calls),
                "calls_by_account": {a: dict(c) for a, c in self._account_calls.items()},
                "reports": {key: statuses.get(key, 0) for key in ("-1", "0", "1")},
                "faults": dict(self._faults),
                "settings": self._settings(),
                "injected": dict(self._injected),
                "auth_headers_on_downloads": self._auth_headers_on_downloads,
                "webhooks": self.webhooks.totals(),
            }

    # WSGI. -----------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "")) or "/"
        if path.startswith("/__sandbox__/"):
            response = self._control(method, path, environ)
        else:
            response = self._serve(method, path, environ)
        headers = list(response.headers)
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        length = len(response.body) if isinstance(response.body, bytes) else response.length
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [response.body] if isinstance(response.body, bytes) else response.body

    def _serve(self, method: str, path: str, environ: WSGIEnvironment) -> _Response:
        route, param = _match_route(method, path)
        plan = self._plan(route, is_api=path.lower().startswith("/api"))
        if plan.hang_seconds:
            plan.wake.wait(plan.hang_seconds)
        response = plan.response or self._dispatch(route, param, environ)
        if plan.trickle_interval:
            if isinstance(response.body, bytes):
                response.length = len(response.body)
            response.body = _trickle(response.body, plan.trickle_interval, plan.wake)
        return response

    def _plan(self, route: str, *, is_api: bool) -> _Plan:
        """Count the call and decide, under the lock, which faults hit it."""
        with self._lock:
            plan = _Plan(self._wake)
            self._calls[route] += 1
            f = self._faults
            routes = f.get("route")
            applies = route in routes if routes else is_api
            if not applies:
                return plan
            if self._take("hang_next"):
                plan.hang_seconds = f.get("hang_seconds", 60.0)
            if self._take("trickle_next"):
                plan.trickle_interval = f.get("trickle_interval", 1.0)
            if self._take("redirect_next"):
                target = f.get("redirect_to", "http://127.0.0.1:9/elsewhere")
                status = f.get("redirect_status", 302)
                plan.response = _Response(status, b"", None, [("Location", target)])
            elif self._take("rate_limit_next"):
                retry_after = f.get("retry_after", "1")
                plan.response = _message(429, "Too many requests", [("Retry-After", retry_after)])
            elif self._take("fail_next"):
                plan.response = _message(503, "Service unavailable (sandbox fault)")
            elif f.get("error_every") and self._error_every_due(f["error_every"]):
                plan.response = _message(500, "Internal server error (sandbox fault)")
                self._injected["error_every"] += 1
            elif f.get("error_rate") and self._rng.random() < f["error_rate"]:
                status = self._rng.choice((500, 503))
                plan.response = _message(status, "Server error (sandbox fault)")
                self._injected["error_rate"] += 1
        return plan

    def _take(self, countdown: str) -> bool:
        """Use up one of a `*_next` fault's remaining requests, if any. Under the lock."""
        left = self._faults.get(countdown, 0)
        if left <= 0:
            return False
        self._faults[countdown] = left - 1
        self._injected[countdown.removesuffix("_next")] += 1
        return True

    def _count_account_call(self, account_id: str, route: str) -> None:
        with self._lock:
            self._account_calls.setdefault(account_id, Counter())[route] += 1

    def _error_every_due(self, every: int) -> bool:
        self._error_every_seen += 1
        return self._error_every_seen % every == 0

    def _dispatch(self, route: str, param: str | None, environ: WSGIEnvironment) -> _Response:
        if route == ROUTE_SIGN_IN:
            return self._sign_in(environ)
        if route == ROUTE_DOWNLOAD and param:
            return self._download(param, environ)
        if route == ROUTE_OTHER:
            path = str(environ.get("PATH_INFO", ""))
            known = _match_route("GET", path)[0] != ROUTE_OTHER
            known = known or _match_route("POST", path)[0] != ROUTE_OTHER
            return _message(405, "Method not allowed") if known else _message(404, "Not found")
        claims = self._authenticate(environ)
        if isinstance(claims, _Response):
            return claims
        self._count_account_call(claims["sub"], route)
        if route == ROUTE_USERS:
            return self._user(claims)
        if route == ROUTE_CREATE:
            return self._create_report(claims["sub"], environ)
        return self._report_status(claims["sub"], int(param or 0), environ)

    # OSAI's routes. --------------------------------------------------------------------------

    def _sign_in(self, environ: WSGIEnvironment) -> _Response:
        body = _read_json(environ)
        if not isinstance(body, str) or not body.startswith(TOKEN_PREFIX) or body == TOKEN_PREFIX:
            return _message(401, "Invalid access token")
        now = int(time.time())
        self._count_account_call(account_id_for_token(body), ROUTE_SIGN_IN)
        with self._lock:
            settings = self._settings()
        claims = {
            "sub": account_id_for_token(body),
            "unique_name": account_slug(body),
            "iat": now,
            "exp": now + int(settings["jwt_ttl"]),
            "iss": "osai-sandbox",
        }
        jwt = _jwt_encode(self._jwt_secret, claims)
        if settings["quote_jwt"]:
            return _Response(200, _json_bytes(jwt), _JSON)
        return _Response(200, jwt.encode(), _TEXT)

    def _authenticate(self, environ: WSGIEnvironment) -> dict[str, Any] | _Response:
        scheme, _, token = str(environ.get("HTTP_AUTHORIZATION", "")).strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("no bearer token")
        claims = _jwt_decode(self._jwt_secret, token.strip(), time.time())
        if claims is None:
            return _unauthorized("the token is invalid or has expired")
        return claims

    def _user(self, claims: Mapping[str, Any]) -> _Response:
        slug = str(claims.get("unique_name", "user"))
        return _json(
            200,
            {
                "id": claims["sub"],
                "email": f"{slug}@sandbox.onestepai.local",
                "userName": slug,
                "firstName": "Sandbox",
                "lastName": slug.capitalize(),
            },
        )

    def _create_report(self, account_id: str, environ: WSGIEnvironment) -> _Response:
        body = _read_json(environ)
        if not isinstance(body, dict):
            return _message(400, "The request body must be a JSON object.")
        period_from = parse_period(body.get(contract.PERIOD_FROM))
        period_to = parse_period(body.get(contract.PERIOD_TO))
        if period_from is None or period_to is None:
            return _message(400, "periodFrom and periodTo must be ISO 8601 date-times.")
        if period_from >= period_to:
            return _message(400, "periodFrom must be before periodTo.")
        if period_to > datetime.now(UTC) + _FUTURE_TOLERANCE:
            return _message(400, "periodTo must not be in the future.")
        flags: dict[str, bool] = {}
        for name in FLAG_FIELDS:
            value = body.get(name, False)  # a missing flag is off
            if not isinstance(value, bool):
                return _message(400, f"{name} must be true or false.")
            flags[name] = value
        ticks = _ticks_now()
        with self._lock:
            settings = self._settings()
            outcome = "done"
            if self._faults.get("report_stuck"):
                outcome = "stuck"
            elif self._faults.get("report_error"):
                outcome = "error"
            report = _StoredReport(
                id=self._next_id,
                account_id=account_id,
                created_ticks=ticks,
                ready_at=ticks / 10_000_000 + float(settings["latency"]),
                outcome=outcome,
                period_from=period_from,
                period_to=period_to,
                flags=flags,
                file_id=str(uuid.uuid4()),
                skew=(
                    float(self._faults.get("month_skew", 0.0))
                    if _is_calendar_month(period_from, period_to)
                    else 0.0
                ),
            )
            self._next_id += 1
            self._reports[report.id] = report
            self._files[report.file_id] = report.id
        return _json(
            200,
            {
                contract.ID: report.id,
                contract.CREATION_TIME: _creation_time(ticks, 7),
                contract.STATUS: contract.STATUS_GENERATING,
            },
        )

    def _report_status(
        self, account_id: str, report_id: int, environ: WSGIEnvironment
    ) -> _Response:
        now = time.time()
        with self._lock:
            report = self._reports.get(report_id)
            if report is None or report.account_id != account_id:
                # Another account's report is as invisible as a missing one.
                return _message(404, f"Report {report_id} not found.")
            if self._take("malformed_next"):
                kind = self._faults.get("malformed", "json")
                return _malformed(kind, report, self._faults.get("huge_bytes", 30_000_000))
            status = report.status(now)
            was_read = report.read
            if status == contract.STATUS_DONE:
                report.read = True
            link_ttl = int(self._settings()["link_ttl"])
            expire_links = bool(self._faults.get("expire_links"))
            added = self._added_for(report.account_id)
        if status != contract.STATUS_DONE:
            return _json(
                200,
                {
                    contract.ID: report.id,
                    contract.CREATION_TIME: _creation_time(report.created_ticks, 7),
                    contract.STATUS: status,
                },
            )
        expires = int(now) + (-1 if expire_links else link_ttl)
        usage = report.usage(added)
        path = self._signed_path(report, environ, expires)
        data: dict[str, Any] = {contract.ID: report.id, contract.PATH: path}
        data.update({name: _dotnet_number(usage[name]) for name in TOTAL_FIELDS})
        data.update(report.flags)
        data.update(
            {
                contract.CREATION_TIME: _creation_time(report.created_ticks, 6),
                contract.PERIOD_FROM: format_period(report.period_from),
                contract.PERIOD_TO: format_period(report.period_to),
                contract.READ: was_read,
                contract.STATUS: contract.STATUS_DONE,
            }
        )
        return _json(200, data)

    # The pre-signed storage link. --------------------------------------------------------------

    def _sign(self, resource: str, expires: int) -> str:
        # AWS signature version 2 for query-string authentication, as OSAI's links carry.
        to_sign = f"GET\n\n\n{expires}\n{resource}".encode()
        mac = hmac.new(self._link_secret, to_sign, hashlib.sha1).digest()
        return base64.b64encode(mac).decode("ascii")

    def _signed_path(self, report: _StoredReport, environ: WSGIEnvironment, expires: int) -> str:
        resource = f"/s3/{report.account_id}/Reports/{report.file_id}.json"
        signature = quote(self._sign(resource, expires), safe="")
        query = f"AWSAccessKeyId={_ACCESS_KEY_ID}&Expires={expires}&Signature={signature}"
        return f"{_base_url(environ)}{resource}?{query}"

    def _download(self, resource: str, environ: WSGIEnvironment) -> _Response:
        if environ.get("HTTP_AUTHORIZATION"):
            with self._lock:
                self._auth_headers_on_downloads += 1
            # S3 refuses a second authentication mechanism next to the query string.
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        expires = query.get("Expires", [""])[0]
        signature = query.get("Signature", [""])[0]
        if not (expires and signature and query.get("AWSAccessKeyId")):
            return _s3_error(
                403,
                "AccessDenied",
                "Query-string authentication requires the Signature, Expires and "
                "AWSAccessKeyId parameters",
            )
        if not expires.isdigit() or not hmac.compare_digest(
            signature.encode(), self._sign(resource, int(expires)).encode()
        ):
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if time.time() > int(expires):
            return _s3_error(403, "AccessDenied", "Request has expired")
        match = _FILE_PATH.fullmatch(resource)
        with self._lock:
            report_id = self._files.get(match.group(2)) if match else None
            report = self._reports.get(report_id) if report_id is not None else None
            added = self._added_for(report.account_id) if report is not None else {}
        if report is None or report.status(time.time()) != 0:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        self._count_account_call(report.account_id, ROUTE_DOWNLOAD)
        return _json(200, _report_file(report, added))

    # The sandbox's own endpoints. ------------------------------------------------------------

    def _control(self, method: str, path: str, environ: WSGIEnvironment) -> _Response:
        action = path.removeprefix("/__sandbox__/").rstrip("/")
        if action == "health" and method == "GET":
            return _Response(200, b"ok", _TEXT)
        if action == "stats" and method == "GET":
            return _json(200, self.stats())
        if action == "reset" and method == "POST":
            self.reset()
            return _json(200, {"reset": True})
        if action == "faults" and method == "GET":
            return _json(200, {"faults": self.faults(), "settings": self.settings()})
        if action == "faults" and method == "DELETE":
            return _json(200, {"faults": self.set_faults({}), "settings": self.settings()})
        if action == "faults" and method == "POST":
            changes = _read_json(environ)
            if not isinstance(changes, dict):
                return _message(400, "Send a JSON object of faults.")
            try:
                faults = self.set_faults(changes)
            except ValueError as exc:
                return _message(400, str(exc))
            return _json(200, {"faults": faults, "settings": self.settings()})
        if action == "usage" and method == "POST":
            request = _read_json(environ)
            if not isinstance(request, dict):
                return _message(400, 'Send a JSON object: {"token", "day", "add"}.')
            try:
                added = self.add_usage(request.get("token"), request.get("day"), request.get("add"))
            except ValueError as exc:
                return _message(400, str(exc))
            return _json(200, added)
        if action.startswith("webhooks"):
            return self._control_webhooks(method, action, environ)
        return _message(404, "Unknown sandbox control endpoint.")

    def _control_webhooks(self, method: str, action: str, environ: WSGIEnvironment) -> _Response:
        """GET, POST (register {"url", "token", "interval"}) and DELETE /__sandbox__/webhooks;
        POST /__sandbox__/webhooks/fire ({"url", "count", "repeat", "body"}: post now)."""
        if action == "webhooks" and method == "GET":
            return _json(200, {"registrations": self.webhooks.registrations()})
        if action == "webhooks" and method == "DELETE":
            self.webhooks.clear()
            return _json(200, {"registrations": []})
        if method != "POST" or action not in ("webhooks", "webhooks/fire"):
            return _message(404, "Unknown sandbox control endpoint.")
        request = _read_json(environ)
        if not isinstance(request, dict):
            return _message(400, "Send a JSON object.")
        if action == "webhooks/fire":
            count = request.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 100:
                return _message(400, "count must be a whole number from 1 to 100.")
            statuses = self.webhooks.fire(
                request.get("url"),
                count=count,
                repeat=bool(request.get("repeat")),
                body=request.get("body"),
            )
            return _json(200, {"statuses": statuses})
        token, interval = request.get("token"), request.get("interval")
        if isinstance(token, str) and token.startswith(TOKEN_PREFIX):
            account = account_id_for_token(token)
        elif isinstance(request.get("account_id"), str):
            account = str(request["account_id"])
        else:
            account = account_id_for_token(str(request.get("url")))
        try:
            seconds = None if interval is None else _check_seconds(interval)
            registration = self.webhooks.register(request.get("url"), account, seconds)  # type: ignore[arg-type]
        except ValueError as exc:
            return _message(400, str(exc))
        return _json(200, {"registered": registration.public()})


_UNSET: Final = object()


def _read_json(environ: WSGIEnvironment) -> object:
    """The request body as JSON, or _UNSET if it is missing, too big or not JSON."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _UNSET
    if not 0 < length <= _MAX_BODY_BYTES:
        return _UNSET
    try:
        return json.loads(environ["wsgi.input"].read(length))
    except ValueError:
        return _UNSET


def _base_url(environ: WSGIEnvironment) -> str:
    """The scheme and host the client used, so links work through any address it chose."""
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


def _report_file(report: _StoredReport, added: Added) -> dict[str, Any]:
    """The JSON file behind `path`: totals, flags, period and a per-day breakdown."""
    return {
        "reportId": report.id,
        "accountId": report.account_id,
        contract.CREATION_TIME: _creation_time(report.created_ticks, 7),
        contract.PERIOD_FROM: format_period(report.period_from),
        contract.PERIOD_TO: format_period(report.period_to),
        **report.flags,
        "totals": {name: _dotnet_number(value) for name, value in report.usage(added).items()},
        "days": daily_breakdown(
            report.account_id,
            report.period_from,
            report.period_to,
            report.flags,
            as_of=report.created,
            added=added,
        ),
    }


def _malformed(kind: str, report: _StoredReport, huge_bytes: int) -> _Response:
    """One of the garbage answers of the `malformed_next` fault."""
    creation_time = _creation_time(report.created_ticks, 7)
    if kind == "html":
        page = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>"
        page += b"<h1>OSAI is down for maintenance</h1></body></html>"
        return _Response(200, page, "text/html; charset=utf-8")
    if kind == "huge":
        body, length = _huge_body(report.id, huge_bytes)
        return _Response(200, body, _JSON, length=length)
    if kind == "empty":
        return _Response(200, b"", _JSON)
    if kind == "missing_status":
        return _json(200, {"id": report.id, "creationTime": creation_time})
    if kind == "unknown_status":
        return _json(200, {"id": report.id, "creationTime": creation_time, "status": 2})
    return _Response(200, f'{{"id":{report.id},"status":0,"path":'.encode(), _JSON)  # cut JSON


# --- The server -----------------------------------------------------------------------------


class SandboxServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per request, so a hanging answer blocks no other."""

    daemon_threads = True  # hung requests never keep the process alive
    block_on_close = False
    allow_reuse_address = True
    verbose = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can stall for
        # seconds without DNS; the sandbox only needs the address it bound.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _RequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def make_sandbox_server(
    app: SandboxApp, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
) -> SandboxServer:
    """Bind a threaded server for `app` (port 0: any free port); it is not serving yet."""
    server = make_server(host, port, app, SandboxServer, _RequestHandler)
    server.verbose = verbose
    return server


def server_url(server: SandboxServer) -> str:
    """`http://host:port` of a bound server."""
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@dataclass
class RunningSandbox:
    """A sandbox serving from a background thread of this process (see `start_in_thread`)."""

    app: SandboxApp
    server: SandboxServer
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return server_url(self.server)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    def stop(self) -> None:
        """Stop serving, release hung requests and close the socket."""
        self.server.shutdown()
        self.app.close()
        self.app.reset()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_in_thread(
    config: SandboxConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    verbose: bool = False,
) -> RunningSandbox:
    """Serve a new sandbox from a daemon thread; use as a context manager or call stop()."""
    app = SandboxApp(config)
    server = make_sandbox_server(app, host, port, verbose=verbose)
    # A short poll interval makes shutdown (and so SIGTERM) take a tenth of a second.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="osai-sandbox", daemon=True
    )
    thread.start()
    return RunningSandbox(app, server, thread)


def serve(
    config: SandboxConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    verbose: bool = False,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly. Announces the URL in one line."""
    running = start_in_thread(config, host=host, port=port, verbose=verbose)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        (announce or _print_line)(f"OSAI sandbox listening on {running.api_url}")
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_line(line: str) -> None:
    print(line, flush=True)


# The numeric command-line options: (option, type, default, what it sets).
_NUMBER_OPTIONS: Final[tuple[tuple[str, Callable[[str], float], float, str], ...]] = (
    ("--port", int, 8765, "port to bind; 0: any"),
    ("--latency", float, 3.0, "seconds a report takes to generate"),
    ("--jwt-ttl", int, 3600, "seconds a JWT from SignIn lives"),
    ("--link-ttl", int, 600, "seconds a report's signed path lives"),
    ("--webhook-interval", float, 10.0, "seconds between worker webhooks to each registered URL"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options, shared by `manage.py osai_sandbox` and `-m` runs."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    for option, kind, default, what in _NUMBER_OPTIONS:
        parser.add_argument(option, type=kind, default=default, help=f"{what} ({default:g})")
    parser.add_argument(
        "--quote-jwt", action="store_true", help='answer SignIn with "<jwt>" as JSON'
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def config_from_options(options: Mapping[str, Any]) -> SandboxConfig:
    """A SandboxConfig from parsed options (argparse's names, e.g. `jwt_ttl`)."""
    if options["latency"] < 0 or options["jwt_ttl"] < 0 or options["link_ttl"] < 0:
        raise ValueError("--latency, --jwt-ttl and --link-ttl must not be negative")
    return SandboxConfig(
        latency=options["latency"],
        jwt_ttl=options["jwt_ttl"],
        link_ttl=options["link_ttl"],
        quote_jwt=options["quote_jwt"],
        webhook_interval=max(0.2, float(options.get("webhook_interval") or 10.0)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m osai.sandbox [options]`: serve without Django."""
    parser = argparse.ArgumentParser(description="Serve the local OSAI sandbox.")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        config = config_from_options(options)
    except ValueError as exc:
        parser.error(str(exc))
    serve(config, host=options["host"], port=options["port"], verbose=options["verbose"])
    return 0
