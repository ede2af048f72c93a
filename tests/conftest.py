"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from reports.pipeline import dispatcher, steps
from tests.support.sandbox import SandboxControl
from tests.support.world import World, build_world

# The month-edge clock guard: date-sensitive tests run again on the 1st, the 2nd, the last day
# of a month and a leap day (tests/support/clock.py).
pytest_plugins = ["tests.support.clock"]

# --- OSAI sandbox ---
# One sandbox process per test session (`python -m osai.sandbox` on a free port), spoken
# to over a real socket. Tests that change faults or latency use `osai_sandbox`, which
# resets it first, so each test starts with no faults, no reports and zeroed counters.


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxControl]:
    """The session's OSAI sandbox process (reports take 0.5 s to generate)."""
    log_path = tmp_path_factory.mktemp("osai-sandbox") / "sandbox.log"
    control = SandboxControl.start(latency=0.5, log_path=log_path)
    try:
        yield control
    finally:
        control.stop()


@pytest.fixture
def osai_sandbox(sandbox: SandboxControl) -> SandboxControl:
    """The session's sandbox, reset: no faults, no reports, zeroed counters."""
    sandbox.reset()
    return sandbox


# --- The pipeline in this process ---
# `fast` shortens the pipeline's timings; `queue` records what the pipeline would enqueue,
# so tests can run steps themselves (tests/support/pipeline.py `drive`).


@pytest.fixture
def fast(settings: Any) -> Any:
    settings.OSAI_POLL_FIRST_SECONDS = 0.1
    settings.OSAI_POLL_MAX_SECONDS = 0.3
    settings.OSAI_RETRY_AFTER_CAP_SECONDS = 0.5
    settings.OSAI_HTTP_TIMEOUT_SECONDS = 3
    return settings


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record what the pipeline would enqueue instead of needing a worker."""
    calls: list[tuple[Any, ...]] = []
    for module in (dispatcher, steps):
        monkeypatch.setattr(module, "async_task", lambda *a, **k: calls.append(a))
    return calls


# --- A cache of the test's own ---


@pytest.fixture(autouse=True)
def empty_file_cache() -> None:
    """Each test starts with the shared file cache empty. Django's file cache holds at most
    300 entries and, past that, deletes a third of them at random on the next write; over a
    run the suite writes thousands, so any entry could vanish in mid-test, a signed-in
    person's cached session included (then one more query reads it from the database, and a
    query count is off by one). Only the file cache is emptied: Redis (the PostgreSQL leg)
    never culls, and emptying it would drop the broker's queue too."""
    from django.core.cache import caches
    from django.core.cache.backends.filebased import FileBasedCache

    cache = caches["default"]
    if isinstance(cache, FileBasedCache):
        cache.clear()


@pytest.fixture
def own_cache(settings: Any) -> None:
    """An empty in-memory cache for this test: the shared test cache may already hold what the
    test counts (figures, priced rows)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": uuid.uuid4().hex,
        }
    }


# --- The cast ---
# Two teams, their people, connections and finished reports (tests/support/world.py): what
# page, API and team tests act on. A test that needs more builds it with tests/factories.py.


@pytest.fixture
def world(db: None) -> World:
    return build_world()


# --- Real worker ---
# `start_worker` / `worker`: a real `manage.py qcluster` against the test database and the
# test sandbox (tests/support/worker.py); `use_sandbox` points this process's sandbox region at it.
from tests.support.worker import start_worker, use_sandbox, worker  # noqa: E402, F401

# --- Figures printed at the end of the run (docs/requirements.md) ---


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.support import figures

    lines = figures.summary_lines()
    if lines:
        terminalreporter.section("reliability and security figures")
        for line in lines:
            terminalreporter.write_line(line)
