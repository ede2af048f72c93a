"""HTTP load against 127.0.0.1: wrk when installed, else a small bounded Python loop.

Both keep CONNECTIONS requests in flight for a fixed time and report latency percentiles.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from bench.env import BENCH_DIR
from bench.results import median, percentile, ratios

CONNECTIONS = 2  # as many as gunicorn has workers: measures service time, not queueing
MAX_PYTHON_REQUESTS = 20_000  # the fallback loop's hard bound per run

_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\\n", summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.duration))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def p50_p95(runs: Sequence[Load]) -> str:
    """The runs' median p50 and p95: "2.1 / 3.4 ms"."""
    return f"{median([r.p50_ms for r in runs]):.1f} / {median([r.p95_ms for r in runs]):.1f} ms"


def tally(runs: Sequence[Load], *, errors: bool = True) -> str:
    """How many requests the runs made (and how many failed): "(120 requests, 0 errors)"."""
    made = f"{sum(r.requests for r in runs)} requests"
    return f"({made}, {sum(r.errors for r in runs)} errors)" if errors else f"({made})"


def p95_ratios(runs: Sequence[Load], against: Sequence[Load]) -> list[float]:
    """Per round: the p95 of `runs` over that of `against`."""
    return ratios([r.p95_ms for r in runs], [a.p95_ms for a in against])


def tool() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def run(url: str, seconds: float, headers: dict[str, str] | None = None) -> Load:
    """Load `url` (127.0.0.1 only) for `seconds` with CONNECTIONS connections."""
    assert urlparse(url).hostname == "127.0.0.1", url
    if tool() == "wrk":
        return _wrk(url, seconds, headers or {})
    return _python(url, seconds, headers or {})


def _wrk(url: str, seconds: float, headers: dict[str, str]) -> Load:
    script = BENCH_DIR / "wrk-report.lua"
    if not script.exists():
        script.write_text(_WRK_REPORT)
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv += ["-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    match = re.search(r"BENCH (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out.stdout)
    if not match:
        raise RuntimeError(f"wrk said: {out.stdout}{out.stderr}")
    n, errors, p50, p95, p99, duration_us = (int(g) for g in match.groups())
    return Load(n, errors, p50 / 1000, p95 / 1000, p99 / 1000, duration_us / 1e6)


def _python(url: str, seconds: float, headers: dict[str, str]) -> Load:
    """CONNECTIONS threads, each one keep-alive connection, until the time or the count
    bound runs out."""
    parts = urlparse(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        while time.monotonic() < end and len(latencies) < MAX_PYTHON_REQUESTS:
            t = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status < 400
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                ok = False
            with lock:
                if ok:
                    latencies.append((time.perf_counter() - t) * 1000)
                else:
                    errors[0] += 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - started
    return Load(
        len(latencies),
        errors[0],
        percentile(latencies, 50),
        percentile(latencies, 95),
        percentile(latencies, 99),
        elapsed,
    )
