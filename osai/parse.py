"""Pure parsers of OSAI's answers, and the typed results the client returns.

Every function here is total over arbitrary input: it returns a value or raises an
`OsaiError` (property-tested with hypothesis, H6), and keeps numbers exactly as OSAI sent
them (I2). Nothing here touches the network.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

from osai import contract
from osai.errors import OsaiBadResponse

logger = logging.getLogger("osai.client")

# Retry-After values are clamped to a day: the pipeline turns them into timedeltas, and a
# wish beyond its own bucket deadline means "give up for now" anyway.
RETRY_AFTER_CEILING_SECONDS: Final = 86_400.0
JWT_MAX_CHARS: Final = 16 * 1024
_ACCOUNT_NAME_MAX_CHARS: Final = 200
MAX_REPORT_ID: Final = 2**63  # ids are stored in a signed 64-bit column
# RFC 6750's b64token: what may follow "Bearer " in an Authorization header.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SECRET_KEY = re.compile(r"token|secret|password|jwt|api_?key", re.IGNORECASE)


# --- Results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsaiUser:
    """Who the access token belongs to, as far as GET /Users tells."""

    account_name: str  # for display; "" when OSAI names nobody
    raw: dict[str, Any]  # the answer, with secret-looking fields redacted
    account_id: str = ""  # OSAI's id of the account ("" when it gives none)


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
        return self.status == contract.STATUS_GENERATING

    @property
    def is_done(self) -> bool:
        return self.status == contract.STATUS_DONE

    @property
    def is_error(self) -> bool:
        return self.status == contract.STATUS_ERROR


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
    """The five includeX booleans of `POST /Reports`, checked, in OSAI's order.

    All five are required: a flag silently defaulted would change what OSAI counts.
    Raises ValueError or TypeError (a programming error, not OSAI's) before any request.
    """
    known = frozenset(contract.FLAGS)
    for key, value in flags.items():
        if key not in known:
            raise ValueError(f"Unknown OSAI report flag {key!r}.")
        if not isinstance(value, bool):
            raise TypeError(f"The OSAI report flag {key!r} must be True or False.")
    missing = [name for name in contract.FLAGS if name not in flags]
    if missing:
        raise ValueError(f"OSAI report flags missing: {', '.join(missing)}.")
    return {str(name): flags[name] for name in contract.FLAGS}


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
    if len(text) > JWT_MAX_CHARS or not _BEARER_TOKEN.fullmatch(text):
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
        if is_int(value) and 0 <= value < MAX_REPORT_ID:
            account_name = f"OSAI user {value}"
            break
    try:
        raw = _redact_secrets(user)
    except RecursionError:
        raise OsaiBadResponse("OSAI's answer to GET /Users is nested too deeply") from None
    account_id = user.get("id")
    if isinstance(account_id, bool) or not isinstance(account_id, str | int):
        account_id = ""
    return OsaiUser(account_name=account_name, raw=raw, account_id=str(account_id)[:100])


def parse_report_created(data: object) -> ReportCreated:
    """POST /Reports: the new report's id, status and creation time.

    Only the id is required. Once OSAI has given it, the report exists; refusing the
    answer over a detail would make the pipeline create a second one. The status is
    informational (the next poll is authoritative), so anything odd becomes -1.
    """
    report = _require_object(data, "POST /Reports")
    report_id = _report_id(report, "POST /Reports")
    status = report.get("status")
    if not (is_int(status) and status in contract.STATUSES):
        logger.warning("OSAI POST /Reports: no usable status; assuming -1 (generating)")
        status = contract.STATUS_GENERATING
    creation_time, creation_raw = _creation_time(report)
    return ReportCreated(
        id=report_id, status=status, creation_time=creation_time, creation_time_raw=creation_raw
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
    if not is_int(status):
        raise OsaiBadResponse("OSAI's report status is not a whole number")
    if status not in contract.STATUSES:
        shown = str(status) if -1000 < status < 1000 else "out of range"
        raise OsaiBadResponse(f"OSAI answered with an unknown report status ({shown})")

    totals: dict[str, int | float] = {}
    if status == contract.STATUS_DONE:
        for name in contract.TOTAL_FIELDS:
            if name not in report:
                raise OsaiBadResponse(f"OSAI's finished report lacks {name}")
            value = _exact_number(report[name])
            if value is None:
                raise OsaiBadResponse(f"OSAI's finished report has a non-number in {name}")
            totals[name] = value

    flags = {
        str(name): value for name in contract.FLAGS if isinstance(value := report.get(name), bool)
    }
    path = report.get("path")
    path = path if isinstance(path, str) and path.strip() else None
    raw = dict(report)
    if isinstance(raw.get("path"), str):
        raw["path"] = redact_url(raw["path"])
    creation_time, creation_raw = _creation_time(report)
    read = report.get("read")
    return ReportStatus(
        id=report_id,
        status=status,
        creation_time=creation_time,
        creation_time_raw=creation_raw,
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


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_number(value: object) -> int | float | None:
    """The value itself if it is a finite JSON number that fits a double; else None."""
    if is_int(value):
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
    if not (is_int(report_id) and 0 < report_id < MAX_REPORT_ID):
        raise OsaiBadResponse(f"OSAI's answer to {what} has no usable report id")
    return report_id


def _creation_time(report: Mapping[str, Any]) -> tuple[datetime | None, str]:
    """creationTime parsed (None if it is no timestamp) and as sent ("" if it is no string)."""
    raw = report.get("creationTime")
    return parse_osai_time(raw), raw if isinstance(raw, str) else ""


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
