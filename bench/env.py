"""Where the benchmark keeps its state, and the environment of every process it starts.

All state lives in var/bench/ (recreated by each run): the bench databases, the file cache,
logs, and the sandbox's request log. var/db.sqlite3 and the test databases are never opened.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "var" / "bench"
LOG_DIR = BENCH_DIR / "logs"
CACHE_DIR = ROOT / "var" / "bench-cache"  # survives runs: the slow brotli of the full bundle
MAIN_DB = BENCH_DIR / "bench.sqlite3"
TEMPLATE_DB = BENCH_DIR / "migrated.sqlite3"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
SETTINGS_MODULE = "bench.settings"

# Never passed on: the bench decides these for each process itself.
_DROPPED = (
    "DATABASE_URL",
    "REDIS_URL",
    "OSAI_TESTING",
    "OSAI_FAILPOINTS",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "DJANGO_DEBUG",
    "LOG_LEVEL",
    "Q_WORKERS",
    "Q_TIMEOUT",
    "Q_RETRY",
    "OSAI_POLL_FIRST_SECONDS",
    "OSAI_POLL_MAX_SECONDS",
    "OSAI_STEP_LEASE_SECONDS",
    "OSAI_HTTP_TIMEOUT_SECONDS",
    "OSAI_RETRY_AFTER_CAP_SECONDS",
)

# The worker: the production defaults of settings.py (poll back-off 1 s x1.5 up to 10 s,
# lease 75 s, timeout 60 s), with the two workers that P4 asks for.
WORKER_ENV = {"Q_WORKERS": "2"}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def child_env(db: Path, sandbox_api_url: str = "", **extra: str) -> dict[str, str]:
    """The environment of a web server, worker or helper process on the bench database `db`."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        DATABASE_URL=sqlite_url(db),
        DJANGO_DEBUG="False",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if sandbox_api_url:
        env["OSAI_SANDBOX_URL"] = sandbox_api_url
    env.update(extra)
    return env


def fresh_bench_dir() -> None:
    """Start from an empty var/bench/ (only ever this directory)."""
    assert BENCH_DIR.parent.name == "var" and BENCH_DIR.name == "bench"
    if BENCH_DIR.exists():
        shutil.rmtree(BENCH_DIR)
    LOG_DIR.mkdir(parents=True)
    (BENCH_DIR / "cache").mkdir()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)


def copy_database(source: Path, target: Path) -> Path:
    """A consistent copy of a SQLite database in WAL mode (sqlite3's online backup)."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return target
