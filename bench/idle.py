"""P11: CPU used by the idle qcluster process tree, read from /proc (no psutil needed)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bench.context import wait_for
from bench.procs import Managed
from bench.results import Results

IDLE_SECONDS = 30.0
_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_ticks(pgid: int) -> dict[int, int]:
    """utime + stime (clock ticks) of every live process in process group `pgid`."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields[0] is field 3 (state): pgrp is field 5
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def wait_idle(timeout: float = 120.0) -> None:
    """No bucket in flight and no task waiting in the broker."""
    from django_q.models import OrmQ

    from reports.models import Bucket

    wait_for(
        lambda: not Bucket.objects.active().exists() and not OrmQ.objects.exists(),
        timeout,
        "the worker to become idle",
        interval=0.5,
    )


class IdleCpu(threading.Thread):
    """Measures the worker tree's CPU over IDLE_SECONDS in the background."""

    def __init__(self, worker: Managed) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.processes = 0
        self.percent = float("nan")
        self.seconds = 0.0

    def run(self) -> None:
        before = group_cpu_ticks(self.worker.pid)
        started = time.monotonic()
        time.sleep(IDLE_SECONDS)
        after = group_cpu_ticks(self.worker.pid)
        self.seconds = time.monotonic() - started
        used = sum(t - before.get(pid, 0) for pid, t in after.items())
        self.processes = len(after)
        self.percent = used / _TICKS / self.seconds * 100


def start_p11(worker: Managed) -> IdleCpu:
    """P11: once the pipeline is idle (no active bucket, empty broker queue, 3 s of quiet
    for the dispatcher to finish), sum utime+stime of every process in the qcluster's
    process group (guard, sentinel, pusher, monitor, 2 workers) over 30 s."""
    wait_idle()
    time.sleep(3.0)
    meter = IdleCpu(worker)
    meter.start()
    return meter


def finish_p11(meter: IdleCpu, results: Results) -> None:
    meter.join(IDLE_SECONDS + 30)
    results.add(
        "P11",
        f"idle qcluster CPU over {meter.seconds:.0f} s ({meter.processes} processes)",
        f"{meter.percent:.2f} % of a core",
        goal="≤ 2 %",
        met=meter.percent <= 2,
    )
