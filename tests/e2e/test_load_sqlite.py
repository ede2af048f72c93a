"""Q10: SQLite under load, every party a separate process, for a minute.

A real qcluster works through reports, gunicorn (2 workers) answers 20 concurrent badge
pollers, and this process keeps requesting reports. With WAL, a busy timeout and IMMEDIATE
transactions, nobody may see "database is locked".
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.cached_db import SessionStore
from django.db import connection

from reports.models import Report
from tests.factories import make_connection, make_user, request_report
from tests.support import figures
from tests.support.sandbox import free_port
from tests.support.worker import ARTIFACTS, ROOT, wait_until, worker_env

SECONDS = float(os.environ.get("OSAI_Q10_SECONDS", "60"))
POLLERS = 20

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
        reason="Q10 is about SQLite; this run uses another database",
    ),
]


def session_cookie(user: Any) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key or ""


def test_sqlite_under_a_minute_of_workers_pollers_and_writes(start_worker, use_sandbox, settings):
    use_sandbox.set_latency(1)
    # Two report requests a second for a minute: above the per-person hourly limit (F2), which
    # is not what this test is about.
    settings.OSAI_REPORT_REQUESTS_PER_HOUR = 10_000
    user = make_user()
    conn = make_connection(user, "Main", token="osai-sandbox-q10-load")
    flags = dict.fromkeys(("include_datasets", "include_models", "include_predictions"), True)

    def new_report(day: int) -> Report:
        start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)
        return request_report(user, [conn], period=(start, start + timedelta(days=1)), flags=flags)

    watched = new_report(0)
    cookie = session_cookie(user)
    env = worker_env(use_sandbox.api_url)
    worker = start_worker()
    port = free_port()
    log_path = ARTIFACTS / f"gunicorn-q10-{os.getpid()}.log"
    with log_path.open("wb") as log:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "osai_dashboard.wsgi",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "--access-logfile",
                "-",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/accounts/login/"), timeout=30, message="gunicorn")
        statuses: dict[int, int] = {}
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.monotonic() + SECONDS

        def poll() -> None:
            session = requests.Session()
            session.cookies.set("sessionid", cookie)
            while time.monotonic() < stop:
                try:
                    r = session.get(
                        f"{base}/reports/{watched.pk}/status/",
                        headers={"HX-Request": "true"},
                        timeout=10,
                    )
                    code = r.status_code
                except requests.RequestException as exc:
                    code = -1
                    with lock:
                        errors.append(type(exc).__name__)
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1
                time.sleep(0.05)

        pollers = [threading.Thread(target=poll) for _ in range(POLLERS)]
        for t in pollers:
            t.start()
        writes = 0
        write_errors: list[str] = []
        while time.monotonic() < stop:
            try:
                new_report(writes + 1)
                writes += 1
            except Exception as exc:  # counted, and asserted below
                write_errors.append(repr(exc))
            time.sleep(0.5)
        for t in pollers:
            t.join()
        connection.close()
    finally:
        web.terminate()
        web.wait(timeout=15)
    web_log = log_path.read_text(errors="replace")
    locked = sum(text.count("database is locked") for text in (web_log, worker.log())) + sum(
        "locked" in e for e in write_errors
    )
    polls = sum(statuses.values())
    figures.figure("Q10 SQLite lock errors", locked)
    figures.figure("Q10 badge polls answered", polls)
    figures.figure("Q10 report writes", writes)
    assert locked == 0
    assert write_errors == []
    assert errors == []
    assert set(statuses) <= {200, 286}, statuses
    assert polls > POLLERS * 10 and writes > SECONDS
    # The worker kept up: the reports it was given finish once the load stops.
    wait_until(
        lambda: not Report.objects.exclude(state__in=Report.TERMINAL_STATES).exists(),
        timeout=120,
        message="all reports to finish",
    )
    assert Report.objects.exclude(state=Report.State.DONE).count() == 0


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
