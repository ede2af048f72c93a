"""A real django-q2 cluster (`manage.py qcluster`) as a separate process, for end-to-end tests.

The worker uses the test database (a file for SQLite), the test's OSAI sandbox, and short
pipeline timings so crash-recovery tests finish in seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts"

# Timings for tests: every value keeps the production ordering (timeout < retry, lease < retry).
FAST_PIPELINE_ENV = {
    "Q_TIMEOUT": "12",
    "Q_RETRY": "18",
    "Q_WORKERS": "4",
    "OSAI_STEP_LEASE_SECONDS": "6",
    "OSAI_POLL_FIRST_SECONDS": "0.3",
    "OSAI_POLL_MAX_SECONDS": "1",
    "OSAI_HTTP_TIMEOUT_SECONDS": "4",
    "OSAI_RETRY_AFTER_CAP_SECONDS": "1",
}


def database_url() -> str:
    """The test database, as a DATABASE_URL the worker process can open."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    auth = f"{user}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    """One qcluster process tree, started in its own session so it can be killed whole."""

    def __init__(self, env: dict[str, str], name: str = "worker") -> None:
        self.env = env
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole cluster (sentinel, pusher, workers, monitor) at once."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=15)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, and SIGKILL whatever is left after a short grace (tests need no drain)."""
        if not self.running or self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the process group
        if self.proc.poll() is None:
            self.proc.wait(timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_env(sandbox_api_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "osai_dashboard.settings",
        "DATABASE_URL": database_url(),
        "OSAI_SANDBOX_URL": sandbox_api_url,
        "OSAI_TESTING": "1",
        "OSAI_FAILPOINT_DIR": str(ARTIFACTS / f"failpoints-{time.monotonic_ns()}"),
        **FAST_PIPELINE_ENV,
        **extra,
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    return env


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout:.0f} s waiting for {message}.")


def seconds_to_done(report: Any) -> float:
    """Wait for the worker to finish `report`; how long that took, from now. It must be done
    (a failure says why)."""
    from reports.models import Report

    started = time.monotonic()

    def finished() -> bool:
        report.refresh_from_db()
        return bool(report.is_terminal)

    wait_until(finished, timeout=120, interval=0.05, message=f"report {report.pk} to finish")
    assert report.state == Report.State.DONE, report.error_message
    return time.monotonic() - started


@pytest.fixture
def use_sandbox(settings: Any, sandbox: Any) -> Any:
    """Point this process's "sandbox" region at the test sandbox, and clear it."""
    settings.OSAI_REGIONS = {**settings.OSAI_REGIONS, "sandbox": sandbox.api_url}
    sandbox.reset()
    return sandbox


@pytest.fixture
def start_worker(
    transactional_db: None, use_sandbox: Any
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real qcluster workers against the test database; all stopped at teardown.

    `start_worker(OSAI_FAILPOINTS="after_create=1")` passes extra environment.
    """
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from reports.schedules import TRACK, ensure_schedules

    # The schedules as a worker start makes them, with tracking put off: a refresh of every
    # connection would add OSAI reports to what a test counts. Tests of tracking run it.
    ensure_schedules()
    Schedule.objects.filter(name=TRACK).update(next_run=timezone.now() + timedelta(days=1))
    workers: list[WorkerProcess] = []

    def start(**extra: str) -> WorkerProcess:
        worker = WorkerProcess(worker_env(use_sandbox.api_url, **extra)).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        # Killed, not stopped: a test needs no drain, and a graceful qcluster stop waited out
        # its 5 s grace at every teardown (about 30 tests, two and a half minutes a leg).
        worker.kill()
    # Drop the queue so the next test's worker does not run this test's leftovers.
    from django_q.models import OrmQ

    OrmQ.objects.all().delete()
    if settings.REDIS_URL:
        import redis

        redis.from_url(settings.REDIS_URL).delete(f"django_q:{settings.Q_CLUSTER['name']}:q")


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One running cluster with default test timings."""
    return start_worker()


def queued_task_payloads() -> list[str]:
    """Every task waiting in the broker, decoded (ORM or Redis), as text to search."""
    from django_q.brokers import get_broker
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    if settings.REDIS_URL:
        broker = get_broker()
        raw = broker.connection.lrange(broker.list_key, 0, -1)
        return [repr(SignedPackage.loads(item)) for item in raw]
    return [repr(SignedPackage.loads(q.payload)) for q in OrmQ.objects.all()]
