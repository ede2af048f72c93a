"""The OSAI client: the only code in the project that speaks HTTP to OSAI.

What it guarantees (the requirement codes are explained in docs/requirements.md):

- H1: redirects are never followed; a 3xx raises `OsaiRedirectRefused`.
- H2: the report file download carries no Authorization header, cookie or token.
- H3: every public call has one total deadline (`timeout`), covering sign-ins, retries,
  back-off and reading the body; osai/transport.py's watchdog enforces it.
- H4: GETs are retried a bounded number of times on connection errors, 429 and 5xx,
  honouring Retry-After up to `retry_after_cap`; a longer wish raises `OsaiRateLimited`
  so the pipeline reschedules. `POST /Reports` is never retried on its own.
- H5: a file link that is not https on an allow-listed host (outside sandbox mode) is
  refused before any connection is made.
- H6/I2: answers are parsed by osai/parse.py, whose functions raise only `OsaiError`s and
  keep numbers exactly as OSAI sent them.
- T5: a 401 leads to exactly one new sign-in and one retry of the call.

Messages and logs never contain the access token, the JWT or a signed URL's query.
This package is plain Python: it knows nothing of Django or of the app that uses it.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from osai import contract
from osai.errors import (
    OsaiAuthError,
    OsaiBadResponse,
    OsaiError,
    OsaiLinkError,
    OsaiRateLimited,
    OsaiRedirectRefused,
    OsaiRequestError,
    OsaiUnavailable,
)
from osai.parse import (
    MAX_REPORT_ID,
    OsaiUser,
    ReportCreated,
    ReportStatus,
    format_osai_time,
    is_int,
    osai_flags,
    parse_json,
    parse_jwt_text,
    parse_report_created,
    parse_report_status,
    parse_retry_after,
    parse_user,
)
from osai.transport import (
    DeadlineAdapter,
    Reply,
    TooLarge,
    TooSlow,
    Watchdog,
    failed_before_sending,
    read_body,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS: Final = 15.0
DEFAULT_RETRY_AFTER_CAP_SECONDS: Final = 10.0
DEFAULT_MAX_DOWNLOAD_BYTES: Final = 20 * 1024 * 1024
DEFAULT_DOWNLOAD_HOSTS: Final = ("onestepai.storage.onestepcloud.pl",)  # OSAI's storage

API_MAX_BYTES: Final = 2 * 1024 * 1024  # OSAI's JSON answers are a few hundred bytes
CONNECT_TIMEOUT_MAX: Final = 5.0
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
BACKOFF_FIRST_SECONDS: Final = 0.5
_DETAIL_MAX_CHARS: Final = 200
_USER_AGENT: Final = "osai-usage/0.1 (+python-requests)"
_DOWNLOAD_ROUTE: Final = "GET <report file>"


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

        The defaults are this module's DEFAULT_* values; the app passes its settings
        (reports/pipeline/connections.py, `osai_client_for`). A `session` passed in
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
        self.timeout = float(DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout)
        if not self.timeout > 0:
            raise ValueError("The OSAI timeout must be positive.")
        self.sandbox = sandbox
        hosts = DEFAULT_DOWNLOAD_HOSTS if download_hosts is None else download_hosts
        self.download_hosts = frozenset(host.strip().lower() for host in hosts if host.strip())
        self.retry_after_cap = float(
            DEFAULT_RETRY_AFTER_CAP_SECONDS if retry_after_cap is None else retry_after_cap
        )
        self.max_download_bytes = int(
            DEFAULT_MAX_DOWNLOAD_BYTES if max_download_bytes is None else max_download_bytes
        )
        self.get_retries = max(0, get_retries)
        self._sleep = time.sleep if sleep is None else sleep
        self._session = requests.Session() if session is None else session
        adapter = DeadlineAdapter()
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
        `flags` are the five booleans under OSAI's names (`contract.FLAGS`).
        """
        body = {
            contract.PERIOD_FROM: format_osai_time(period_from),
            contract.PERIOD_TO: format_osai_time(period_to),
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
        if not (is_int(report_id) and 0 < report_id < MAX_REPORT_ID):
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
    ) -> Reply:
        """Exchange, retrying (if `retry`) connection errors, 429 and 5xx within the deadline.

        Returns the last reply, whatever its status; raises OsaiUnavailable when no answer
        came. A Retry-After beyond the cap, or beyond the deadline, ends the retries.
        """
        attempts = 1 + (self.get_retries if retry else 0)
        for attempt in range(attempts):
            reply: Reply | None = None
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
    ) -> Reply:
        """One request and its whole answer within the deadline; redirects are not followed."""
        started = time.monotonic()
        remaining = deadline - started
        url = request.url or ""
        error: OsaiError | None = None
        reply: Reply | None = None
        if remaining <= 0:
            error = self._timeout_error(download, outcome_unknown=None)
        else:
            # The adapter, not Session.send: the session would read a redirect's whole body
            # (unbounded) to prepare the next request even with allow_redirects=False.
            adapter = self._session.get_adapter(url)
            env = self._session.merge_environment_settings(url, {}, True, None, None)
            response: requests.Response | None = None
            with Watchdog(deadline) as watchdog:
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
                        body = read_body(response, deadline=deadline, max_bytes=max_bytes)
                    if watchdog.fired:
                        raise TooSlow  # a cut-off body can look complete
                    reply = Reply(response.status_code, response.headers, body)
                except TooSlow:
                    error = self._timeout_error(download, outcome_unknown=outcome_unknown)
                except TooLarge:
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
        not_sent = failed_before_sending(exc)
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

    def _api_error(self, reply: Reply) -> OsaiError:
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

    def _download_error(self, reply: Reply) -> OsaiError:
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

    def _unavailable_error(self, reply: Reply, who: str) -> OsaiUnavailable:
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

    def _error_detail(self, reply: Reply) -> str:
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
