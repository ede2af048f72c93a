"""The processes the benchmark starts, each in its own session, all stopped at the end.

Every child is started with `start_new_session=True` and registered; `stop_all()` (called
from a `finally` in __main__, which SIGINT and SIGTERM both reach) sends SIGTERM to each
child's process group, then SIGKILL to whatever is left: gunicorn's workers, qcluster's
sentinel/pusher/monitor/workers, the sandbox. Only processes started here are signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.env import BIN, LOG_DIR, PYTHON, ROOT, WORKER_ENV, child_env
from tests.support.sandbox import SandboxControl, free_port

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Managed:
    """One child process tree in its own process group, with its output in a log file."""

    registry: list[Managed] = []

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = LOG_DIR / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Managed:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        Managed.registry.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM to the group, SIGKILL to what remains after `grace` seconds."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self in Managed.registry:
            Managed.registry.remove(self)

    def wait_until(self, ready: Callable[[], object], timeout: float, what: str) -> None:
        """Poll `ready` until it is truthy; raise with the log if the process exits first or
        `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running:
                raise RuntimeError(f"{self.name} exited before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def stop_all() -> None:
    """Stop every process the benchmark started, newest first."""
    for managed in reversed(list(Managed.registry)):
        managed.stop()


def _answers(url: str) -> bool:
    """Whether `url` answers at all (any HTTP status)."""
    try:
        with _OPENER.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def run_python(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """`python <args>` run to the end (a helper process); its output, or an error with it."""
    result = subprocess.run(
        [PYTHON, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def json_answer(env: dict[str, str], module: str, *args: str, timeout: float = 600) -> Any:
    """`python -m <module> <args>`: the JSON it prints on its last line."""
    out = run_python(env, "-m", module, *args, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def run_manage(db: Path, *args: str, **env: str) -> str:
    """`manage.py <args>` on a bench database; its output, or an error with the output."""
    return run_python(child_env(db, **env), "manage.py", *args, timeout=300)


def start_local(
    name: str, argv: Callable[[int], list[str]], env: dict[str, str]
) -> tuple[Managed, int]:
    """Start `argv(port)` on a free port of 127.0.0.1; (process, port)."""
    port = free_port()
    return Managed(name, argv(port), env).start(), port


def start_sandbox(latency: float) -> tuple[SandboxControl, Path]:
    """The recording OSAI sandbox (bench/osai_recorder.py); its control and call log."""
    calls_log = LOG_DIR / "osai-calls.jsonl"
    managed, port = start_local(
        "sandbox",
        lambda port: [
            PYTHON,
            "-m",
            "bench.osai_recorder",
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--calls-log",
            str(calls_log),
        ],
        child_env(Path("/nonexistent")),  # the sandbox needs no database
    )
    control = SandboxControl(f"http://127.0.0.1:{port}")
    managed.wait_until(control.health, 20, "an answer from the OSAI sandbox")
    return control, calls_log


def start_worker(
    db: Path, sandbox_api_url: str, *, name: str = "qcluster", **extra: str
) -> Managed:
    """A real `manage.py qcluster` on a bench database (production timings, 2 workers)."""
    env = child_env(db, sandbox_api_url, **WORKER_ENV, **extra)
    return Managed(name, [PYTHON, "manage.py", "qcluster"], env).start()


def _start_http(
    name: str, argv: Callable[[int], list[str]], env: dict[str, str], probe: str
) -> tuple[Managed, str]:
    """An HTTP server on a free port of 127.0.0.1, once `probe` answers; (process, base URL)."""
    managed, port = start_local(name, argv, env)
    base = f"http://127.0.0.1:{port}"
    managed.wait_until(lambda: _answers(f"{base}{probe}"), 30, f"an answer from {base}{probe}")
    return managed, base


def start_gunicorn(db: Path, name: str, sandbox_api_url: str = "") -> tuple[Managed, str]:
    """`gunicorn osai_dashboard.wsgi -w 2` on a free port of 127.0.0.1; (process, base URL)."""
    return _start_http(
        name,
        lambda port: [
            str(BIN / "gunicorn"),
            "osai_dashboard.wsgi",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "3",
        ],
        child_env(db, sandbox_api_url),
        "/accounts/login/",
    )


def start_static_server(directory: Path, name: str = "static-server") -> tuple[Managed, str]:
    """Python's http.server for the P9 comparison pages (127.0.0.1 only)."""
    return _start_http(
        name,
        lambda port: [
            PYTHON,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        child_env(Path("/nonexistent")),
        "/",
    )
