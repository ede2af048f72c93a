"""Crash injection for the reliability tests (Q1, Q2, Q5). Inert unless OSAI_FAILPOINTS is set.

OSAI_FAILPOINTS="after_create=1,after_poll=2" makes the worker process SIGKILL itself at
those points, that many times in all (counted in files under OSAI_FAILPOINT_DIR, so a
restarted worker goes on). This is how a test kills a worker at an exact moment, e.g. after
OSAI answered `POST /Reports` but before the id was committed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def failpoint(name: str) -> None:
    spec = os.environ.get("OSAI_FAILPOINTS", "")
    if not spec:
        return
    limits = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if name not in limits:
        return
    counter = Path(os.environ.get("OSAI_FAILPOINT_DIR", "var/failpoints")) / name
    counter.parent.mkdir(parents=True, exist_ok=True)
    fired = int(counter.read_text() or 0) if counter.exists() else 0
    if fired >= int(limits[name]):
        return
    counter.write_text(str(fired + 1))
    os.kill(os.getpid(), signal.SIGKILL)
