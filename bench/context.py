"""What every group of targets shares: the running processes, the browser, the sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.procs import Managed
from tests.support.sandbox import SandboxControl

T = TypeVar("T")


@dataclass
class Bench:
    sandbox: SandboxControl
    calls_log: Path
    worker: Managed
    web: Managed
    base_url: str
    browser: Any
    # Handed from one group to the next (e.g. a finished 12-month report for P8/P9).
    shared: dict[str, Any] = field(default_factory=dict)

    def osai_takes(self, seconds: float) -> None:
        """No sandbox faults, and OSAI takes `seconds` per report created from now on."""
        self.sandbox.clear_faults()
        self.sandbox.faults(latency=seconds)


class Timeout(RuntimeError):
    pass


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; raise Timeout after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
