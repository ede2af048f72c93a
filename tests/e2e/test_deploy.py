"""The production process file works: `honcho start` runs gunicorn and the worker from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from reports.models import Report
from tests.factories import make_connection, make_user, request_report
from tests.support.sandbox import free_port
from tests.support.worker import ARTIFACTS, ROOT, wait_until, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_procfile_serves_pages_and_finishes_reports(use_sandbox):
    port = free_port()
    env = worker_env(use_sandbox.api_url, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = ARTIFACTS / f"honcho-{os.getpid()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "web", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def login_page() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(login_page, timeout=60, message="gunicorn from the Procfile")
        user = make_user()
        conn = make_connection(user, "Main", token="osai-sandbox-procfile")
        first_quarter = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
        report = request_report(
            user, [conn], period=first_quarter, granularity="month", flags={"include_models": True}
        )

        def finished() -> bool:
            report.refresh_from_db()
            return report.is_terminal

        wait_until(finished, timeout=90, message="the Procfile's worker to finish the report")
        assert report.state == Report.State.DONE, log_path.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
