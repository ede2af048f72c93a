"""Start, stop and steer an OSAI sandbox process (`python -m osai.sandbox`) from tests.

The sandbox runs as its own process, as OSAI would, so tests talk to it over a real
socket. Control calls use urllib only, through no proxy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Never send sandbox traffic through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the sandbox binds it itself, so retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SandboxError(RuntimeError):
    """The sandbox did not start, or a control call failed."""


class SandboxControl:
    """A running sandbox: its URLs, its counters, its faults, and its process if we own it."""

    def __init__(
        self,
        base_url: str,
        *,
        process: subprocess.Popen[bytes] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_url = f"{self.base_url}/api"
        self.process = process
        self.log_path = log_path

    @classmethod
    def start(
        cls,
        *,
        latency: float = 0.5,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        via_manage: bool = False,
        log_path: Path | None = None,
        startup_timeout: float = 15.0,
    ) -> SandboxControl:
        """Start `python -m osai.sandbox` (or `manage.py osai_sandbox` with `via_manage`) on a
        free port; return once it answers /health."""
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="osai-sandbox-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "osai_dashboard.settings"}
        env["PYTHONUNBUFFERED"] = "1"
        last_error = ""
        for _ in range(3):  # another process may take the free port before the sandbox does
            port = free_port(host)
            starter = ["manage.py", "osai_sandbox"] if via_manage else ["-m", "osai.sandbox"]
            command = [
                sys.executable,
                *starter,
                "--host",
                host,
                "--port",
                str(port),
                "--latency",
                str(latency),
                *extra_args,
            ]
            # Output goes to a file, not a pipe: a pipe nobody reads would block the server.
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            control = cls(f"http://{host}:{port}", process=process, log_path=log_path)
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and process.poll() is None:
                if control.health():
                    return control
                time.sleep(0.05)
            control.stop()
            last_error = control.log_tail()
        raise SandboxError(f"The OSAI sandbox did not start. Its output:\n{last_error}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the process we started (SIGTERM, then SIGKILL); its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's output (stdout and stderr)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    # Control endpoints. --------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise SandboxError(f"{method} {path}: {exc.code} {exc.read().decode()}") from exc
        return json.loads(text) if text.startswith(("{", "[")) else text

    def health(self) -> bool:
        """True if the sandbox answers its health check."""
        try:
            return self._call("GET", "/__sandbox__/health", timeout=0.5) == "ok"
        except (OSError, SandboxError):
            return False

    def full_stats(self) -> dict[str, Any]:
        """Everything /__sandbox__/stats says: calls, reports, faults, settings, injected,
        auth_headers_on_downloads."""
        stats: dict[str, Any] = self._call("GET", "/__sandbox__/stats")
        return stats

    def stats(self) -> dict[str, int]:
        """Calls per route key, e.g. {"POST /api/Reports": 1, ...}."""
        calls: dict[str, int] = self.full_stats()["calls"]
        return calls

    def calls(self, route: str) -> int:
        """How many requests a route key received, e.g. calls("GET /api/Reports/{id}")."""
        return self.stats().get(route, 0)

    def calls_with_token(self, token: str) -> dict[str, int]:
        """Calls per route that reached the OSAI account of an access token."""
        from osai.sandbox.server import account_id_for_token

        by_account: dict[str, dict[str, int]] = self.full_stats()["calls_by_account"]
        return by_account.get(account_id_for_token(token), {})

    def reset(self) -> None:
        """Forget reports, counters, faults and setting overrides."""
        self._call("POST", "/__sandbox__/reset", {})

    def faults(self, **changes: Any) -> dict[str, Any]:
        """Merge faults (see osai.sandbox.FAULT_KEYS); no arguments clears them."""
        answer: dict[str, Any] = self._call("POST", "/__sandbox__/faults", changes)
        return answer["faults"]

    def clear_faults(self) -> None:
        """Clear every fault and setting override."""
        self._call("DELETE", "/__sandbox__/faults")

    def add_usage(self, token: str, day: str, **add: float) -> dict[str, Any]:
        """Add usage (OSAI's additive totals) to one UTC day ("YYYY-MM-DD") of the token's
        account: reports computed from now on that cover the day count it."""
        answer: dict[str, Any] = self._call(
            "POST", "/__sandbox__/usage", {"token": token, "day": day, "add": add}
        )
        return answer

    def set_latency(self, seconds: float) -> None:
        """How long reports created from now on take to generate."""
        self.faults(latency=seconds)

    def set_jwt_ttl(self, seconds: int) -> None:
        """How long JWTs signed from now on live."""
        self.faults(jwt_ttl=seconds)

    # Worker webhooks (osai/sandbox/webhooks.py): none are sent unless a test registers a URL.

    def register_webhook(
        self, url: str, *, token: str | None = None, interval: float | None = None
    ) -> dict[str, Any]:
        """Post task-finished events for the token's account to `url` every `interval` s."""
        body: dict[str, Any] = {"url": url}
        if token is not None:
            body["token"] = token
        if interval is not None:
            body["interval"] = interval
        answer: dict[str, Any] = self._call("POST", "/__sandbox__/webhooks", body)
        return answer["registered"]

    def webhook_registrations(self) -> list[dict[str, Any]]:
        """Each registered URL with its counts (sent, failed, statuses)."""
        registrations: list[dict[str, Any]] = self._call("GET", "/__sandbox__/webhooks")[
            "registrations"
        ]
        return registrations

    def clear_webhooks(self) -> None:
        self._call("DELETE", "/__sandbox__/webhooks")

    def fire_webhooks(
        self,
        url: str | None = None,
        *,
        count: int = 1,
        repeat: bool = False,
        body: Any = None,
        timeout: float = 30.0,
    ) -> list[int]:
        """Post events now to a registered URL (or each); the HTTP statuses they got."""
        request: dict[str, Any] = {"count": count, "repeat": repeat}
        if url is not None:
            request["url"] = url
        if body is not None:
            request["body"] = body
        statuses: list[int] = self._call(
            "POST", "/__sandbox__/webhooks/fire", request, timeout=timeout
        )["statuses"]
        return statuses
