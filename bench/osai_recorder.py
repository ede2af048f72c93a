"""The OSAI sandbox, unchanged, behind a request recorder: `python -m bench.osai_recorder`.

The sandbox counts calls per route for the whole process. The benchmark runs several reports
at once (a 60 s report waits while others run), so it needs calls per OSAI *account* (one
connection, one access token, one account) and per report id. This WSGI wrapper writes one
JSON line per OSAI call: when it arrived, its route key, the account (the JWT's subject, or
the account in a download path), the report id, and for reports the status OSAI answered.

Control calls (/__sandbox__/...) are passed through unrecorded, so SandboxControl (faults,
latency, stats, reset) works exactly as with `manage.py osai_sandbox`.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from osai.sandbox.server import (
    ROUTE_CREATE,
    ROUTE_DOWNLOAD,
    ROUTE_SIGN_IN,
    ROUTE_STATUS,
    ROUTE_USERS,
    SandboxApp,
    SandboxConfig,
    make_sandbox_server,
    server_url,
)

_REPORT = re.compile(r"/api/reports/(\d+)/?", re.IGNORECASE)
_FILE = re.compile(r"/s3/([0-9a-f-]{36})/Reports/[0-9a-f-]{36}\.json")


def _route(method: str, path: str) -> str:
    lower = path.rstrip("/").lower()
    if lower == "/api/users/signin":
        return ROUTE_SIGN_IN
    if lower == "/api/users":
        return ROUTE_USERS
    if lower == "/api/reports" and method == "POST":
        return ROUTE_CREATE
    if _REPORT.fullmatch(path) and method == "GET":
        return ROUTE_STATUS
    if _FILE.fullmatch(path):
        return ROUTE_DOWNLOAD
    return f"{method} other"


def _jwt_subject(environ: WSGIEnvironment) -> str:
    """The account a request acts for: the unverified `sub` of its bearer JWT."""
    _, _, token = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    parts = token.strip().split(".")
    if len(parts) != 3:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return ""
    return str(claims.get("sub", "")) if isinstance(claims, dict) else ""


class Recorder:
    """WSGI middleware: pass every request to the sandbox, log each OSAI call as JSON."""

    def __init__(self, app: SandboxApp, log_path: Path) -> None:
        self.app = app
        self.log = log_path.open("a", buffering=1)  # line-buffered: readers see whole lines
        self.lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", "")) or "/"
        if path.startswith("/__sandbox__/"):
            return self.app(environ, start_response)
        started = time.time()
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        route = _route(method, path)
        account = _jwt_subject(environ)
        report = _REPORT.fullmatch(path)
        download = _FILE.fullmatch(path)
        if download:
            account = download.group(1)
        code: list[int] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            code.append(int(status.split(" ", 1)[0]))
            return start_response(status, headers, exc_info)

        body: Iterable[bytes] = self.app(environ, recording_start_response)
        entry: dict[str, Any] = {"t": started, "route": route, "account": account}
        if report:
            entry["report"] = int(report.group(1))
        if route in (ROUTE_CREATE, ROUTE_STATUS):
            # Small JSON answers: read them to learn the new id or the status.
            data = b"".join(body)
            close = getattr(body, "close", None)
            if close:
                close()
            body = [data]
            try:
                answer = json.loads(data)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                entry["report"] = answer.get("id", entry.get("report"))
                entry["status"] = answer.get("status")
        entry["http"] = code[0] if code else None
        entry["answered"] = time.time()
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")
        return body


@dataclass(frozen=True)
class Call:
    t: float
    route: str
    account: str
    report: int | None
    status: int | None
    http: int | None


def read_calls(log_path: Path) -> list[Call]:
    """Every OSAI call the recorder logged so far, in arrival order."""
    calls = []
    if not log_path.exists():
        return calls
    for line in log_path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line being written
        calls.append(
            Call(e["t"], e["route"], e["account"], e.get("report"), e.get("status"), e.get("http"))
        )
    return sorted(calls, key=lambda c: c.t)


def count_by_route(calls: Iterable[Call]) -> Counter[str]:
    return Counter(c.route for c in calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=3.0)
    parser.add_argument("--calls-log", type=Path, required=True)
    options = parser.parse_args()
    app = SandboxApp(SandboxConfig(latency=options.latency))
    server = make_sandbox_server(Recorder(app, options.calls_log), options.host, options.port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"OSAI sandbox (recording) listening on {server_url(server)}/api", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    app.reset()
    server.server_close()


if __name__ == "__main__":
    main()
