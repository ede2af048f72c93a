"""P16: buckets finished per second with 1, 2 and 4 `qcluster` processes on PostgreSQL + Redis.

The production stack, not the bench's SQLite: a database of its own (bench_p16, created and
dropped here, never the test suite's) and Redis db 14 (the test suite uses db 15). Each
qcluster runs Q_WORKERS=2 worker processes with the production timings; the sandbox answers
at once (D = 0). Each run gets fresh people and connections (PEOPLE x CONNECTIONS, each
asking for DAYS days by day), so nothing is reused and the caps of settings.py do not bound
it: per connection 16 and per person 32 OSAI reports in flight, and every bucket spends at
least the first poll's 1 s in flight, so the caps would allow ~16 x 16 / 1 s = 256 buckets/s.

While a run goes, the bench samples every SAMPLE_SECONDS: buckets done, steps waiting in
the broker (the dispatcher keeps at most OSAI_QUEUE_DEPTH there), and CPU time of the
qcluster process groups, of PostgreSQL's backends on bench_p16, of the sandbox, of
redis-server (shared with the test suite) and of the whole machine. Rates and CPU per bucket
are taken between 10 % and 90 % done, so start-up and the tail do not count. Runs are
interleaved 1 2 4 / 4 2 1 / 1 2 4 and the median per cluster count is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import procs
from bench.context import Bench
from bench.env import PYTHON, child_env
from bench.idle import group_cpu_ticks
from bench.results import Results, median
from bench.tracking import helper

DB_NAME = "bench_p16"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/14"
CLUSTERS = (1, 2, 4)
ORDERS = ((1, 2, 4), (4, 2, 1), (1, 2, 4))
Q_WORKERS = 2  # per qcluster, as the bench's own worker
PEOPLE, CONNECTIONS, DAYS = 8, 2, 25  # 400 buckets per run
SAMPLE_SECONDS = 0.5
RUN_TIMEOUT = 300.0
_TICKS = os.sysconf("SC_CLK_TCK")
_NCPU = os.cpu_count() or 1
_ACTIVE = "('new', 'creating', 'polling', 'downloading')"
_IN_FLIGHT = "('creating', 'polling', 'downloading')"
_TERMINAL = "('done', 'error', 'timed_out', 'cancelled')"


def _env(**extra: str) -> dict[str, str]:
    """A process on bench_p16 and Redis db 14 (bench.settings keeps its file cache)."""
    return child_env(Path("/nonexistent"), DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL, **extra)


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def _flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # db 14 only: ours


# --- CPU from /proc ---------------------------------------------------------------------------


def _cpu_of(pids: list[int]) -> int:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks


def _pids_matching(text: str) -> list[int]:
    """Processes whose command line contains `text` (PostgreSQL names each backend
    "postgres: ... postgres bench_p16 127.0.0.1(port) ..." in its title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


@dataclass
class Sample:
    t: float
    done: int
    failed: int
    queued: int
    in_flight: int
    new: int
    workers: int  # CPU ticks of every qcluster process group
    postgres: int
    sandbox: int
    redis: int
    bench: int  # this process: the sampling itself
    busy: int
    total: int


@dataclass
class Run:
    clusters: int
    buckets: int
    samples: list[Sample] = field(default_factory=list)

    def window(self) -> tuple[Sample, Sample]:
        """The samples nearest 10 % and 90 % done."""
        low = next(s for s in self.samples if s.done >= 0.1 * self.buckets)
        high = next(s for s in self.samples if s.done >= 0.9 * self.buckets)
        return low, high

    def rate(self) -> float:
        a, b = self.window()
        return (b.done - a.done) / (b.t - a.t) if b.t > a.t else float("nan")

    def ms_per_bucket(self, name: str) -> float:
        a, b = self.window()
        return (getattr(b, name) - getattr(a, name)) / _TICKS * 1000 / max(1, b.done - a.done)

    def busy_cores(self) -> float:
        a, b = self.window()
        return (b.busy - a.busy) / max(1, b.total - a.total) * _NCPU

    def worker_cores(self) -> float:
        a, b = self.window()
        return (b.workers - a.workers) / _TICKS / (b.t - a.t)

    def other_cores(self) -> float:
        """Cores busy with processes that are not this run's (other people's tests)."""
        a, b = self.window()
        ours = sum(
            getattr(b, name) - getattr(a, name)
            for name in ("workers", "postgres", "sandbox", "redis", "bench")
        )
        return max(0.0, self.busy_cores() - ours / _TICKS / (b.t - a.t))

    def queued(self) -> float:
        a, b = self.window()
        return median([s.queued for s in self.samples if a.t <= s.t <= b.t])


# --- One run ------------------------------------------------------------------------------------


def _seed(tag: str) -> int:
    """Fresh people and connections asking for their buckets (helper process); how many."""
    env = _env(
        # The request limits are per person and hour; the bench asks far more often.
        OSAI_REPORT_REQUESTS_PER_HOUR="100000",
        OSAI_MAX_WAITING_BUCKETS_PER_PERSON="100000",
    )
    seeded = procs.json_answer(env, "bench.scaleout", "seed", "--tag", tag, timeout=300)
    return int(seeded["buckets"])


def _states(cursor: Any, first_id: int) -> tuple[int, int, int, int, int]:
    cursor.execute(
        f"""
        SELECT count(*) FILTER (WHERE state = 'done'),
               count(*) FILTER (WHERE state IN {_TERMINAL} AND state <> 'done'),
               count(*) FILTER (WHERE state IN {_ACTIVE}
                                  AND queued_at > now() - interval '75 seconds'),
               count(*) FILTER (WHERE state IN {_IN_FLIGHT}),
               count(*) FILTER (WHERE state = 'new')
        FROM reports_bucket WHERE id > %s
        """,  # noqa: S608 (constants only)
        (first_id,),
    )
    return tuple(int(v) for v in cursor.fetchone())  # type: ignore[return-value]


def _wait_settled(workers: list[procs.Managed], timeout: float = 60.0) -> None:
    """Until the clusters together use under 5 % of a core for a second (started, idle)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(sum(group_cpu_ticks(w.pid).values()) for w in workers)
        time.sleep(1.0)
        after = sum(sum(group_cpu_ticks(w.pid).values()) for w in workers)
        processes = sum(len(group_cpu_ticks(w.pid)) for w in workers)
        if after - before < 0.05 * _TICKS and processes >= len(workers) * (Q_WORKERS + 3):
            return
    raise RuntimeError(f"the P16 clusters did not settle within {timeout:.0f} s")


def _one_run(bench: Bench, clusters: int, tag: str) -> Run:
    import psycopg

    sandbox = next(m for m in procs.Managed.registry if m.name == "sandbox")
    redis_pids = [p for p in _pids_matching("redis-server") if p != os.getpid()]
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT coalesce(max(id), 0) FROM reports_bucket")
        first_id = int(cursor.fetchone()[0])  # type: ignore[index]
        workers = [
            procs.Managed(
                f"qcluster-p16-{tag}-{n}",
                [PYTHON, "manage.py", "qcluster"],
                _env(OSAI_SANDBOX_URL=bench.sandbox.api_url, Q_WORKERS=str(Q_WORKERS)),
            ).start()
            for n in range(clusters)
        ]
        try:
            # Start-up (importing Django in every process) is not the pipeline's cost: the
            # buckets are asked for once every cluster has settled.
            _wait_settled(workers)
            run = Run(clusters, _seed(tag))
            deadline = time.monotonic() + RUN_TIMEOUT
            while True:
                done, failed, queued, in_flight, new = _states(cursor, first_id)
                busy, total = _machine_ticks()
                run.samples.append(
                    Sample(
                        time.monotonic(),
                        done,
                        failed,
                        queued,
                        in_flight,
                        new,
                        sum(sum(group_cpu_ticks(w.pid).values()) for w in workers),
                        _cpu_of(_pids_matching(f" {DB_NAME} ")),
                        sum(group_cpu_ticks(sandbox.pid).values()),
                        _cpu_of(redis_pids),
                        _cpu_of([os.getpid()]),
                        busy,
                        total,
                    )
                )
                if done + failed >= run.buckets:
                    break
                if time.monotonic() > deadline or not all(w.running for w in workers):
                    raise RuntimeError(
                        f"P16 run {tag}: {done} of {run.buckets} buckets done in "
                        f"{RUN_TIMEOUT:.0f} s (workers running: {[w.running for w in workers]})"
                    )
                time.sleep(SAMPLE_SECONDS)
        finally:
            for worker in workers:
                worker.stop()
            _flush_redis()  # hand-over tasks left by the last dispatcher
    if run.samples[-1].failed:
        raise RuntimeError(f"P16 run {tag}: {run.samples[-1].failed} buckets failed")
    return run


# --- The target ---------------------------------------------------------------------------------


def run_p16(bench: Bench, results: Results) -> None:
    from django.conf import settings

    bench.osai_takes(0)
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    _flush_redis()
    try:
        procs.run_manage(
            Path("/nonexistent"),
            "migrate",
            "--noinput",
            "-v",
            "0",
            DATABASE_URL=DATABASE_URL,
            REDIS_URL=REDIS_URL,
        )
        helper(Path("/nonexistent"), "hold-schedule", DATABASE_URL=DATABASE_URL)
        runs: dict[int, list[Run]] = {n: [] for n in CLUSTERS}
        for r, order in enumerate(ORDERS):
            for n in order:
                run = _one_run(bench, n, f"r{r}n{n}")
                runs[n].append(run)
                print(
                    f"P16    run {r + 1}, {n} qcluster(s): {run.rate():.1f} buckets/s, "
                    f"{run.ms_per_bucket('workers'):.0f} worker CPU ms/bucket",
                    flush=True,
                )
    finally:
        _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        _flush_redis()
    _report(results, runs, settings)


def _report(results: Results, runs: dict[int, list[Run]], settings: Any) -> None:
    def med(n: int, value: Any) -> float:
        return median([value(r) for r in runs[n]])

    def ms(name: str) -> Any:
        return lambda r: r.ms_per_bucket(name)

    buckets = runs[CLUSTERS[0]][0].buckets
    results.add(
        "P16",
        "set-up",
        f"PostgreSQL 15 + Redis (db 14), D = 0, {buckets} buckets per run ({PEOPLE} people x "
        f"{CONNECTIONS} connections x {DAYS} days), Q_WORKERS={Q_WORKERS} per qcluster, "
        f"caps: {settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION} in flight per connection, "
        f"{settings.OSAI_MAX_IN_FLIGHT_PER_PERSON} per person, queue depth "
        f"{settings.OSAI_QUEUE_DEPTH}; {len(ORDERS)} interleaved runs per count, medians",
    )
    rates = {n: med(n, Run.rate) for n in CLUSTERS}
    for n in CLUSTERS:
        results.add(
            "P16",
            f"{n} qcluster(s) ({n * Q_WORKERS} worker processes)",
            f"{rates[n]:.1f} buckets/s (runs: "
            + ", ".join(f"{r.rate():.1f}" for r in runs[n])
            + f"); CPU ms per bucket: workers {med(n, ms('workers')):.0f}, PostgreSQL "
            f"{med(n, ms('postgres')):.0f}, sandbox {med(n, ms('sandbox')):.0f}, redis-server "
            f"{med(n, ms('redis')):.1f}; workers used {med(n, Run.worker_cores):.2f} cores; "
            f"machine {med(n, Run.busy_cores):.2f} of {_NCPU} cores busy, "
            f"{med(n, Run.other_cores):.2f} of them other processes (not this run's); steps "
            f"waiting in the broker (median) {med(n, Run.queued):.0f} of "
            f"{settings.OSAI_QUEUE_DEPTH}",
        )
    results.add(
        "P16",
        "curve: speed-up over 1 qcluster",
        ", ".join(f"{n}: {rates[n] / rates[1]:.2f}x" for n in CLUSTERS),
        goal="reported, with CPU per bucket",
        met=None,
    )
    results.add(
        "P16",
        "worker CPU per bucket (1 qcluster)",
        f"{med(1, ms('workers')):.0f} ms (create, poll and download steps, dispatcher, django-q2)",
    )
    results.note("P16", _limit_text(runs, rates, settings))


def _limit_text(runs: dict[int, list[Run]], rates: dict[int, float], s: Any) -> str:
    """What bounds the curve, from the samples: one step process, the cores, the caps."""
    top = max(CLUSTERS)

    def med(n: int, value: Any) -> float:
        return median([value(r) for r in runs[n]])

    ours = sum(
        med(top, lambda r, name=name: r.ms_per_bucket(name))
        for name in ("workers", "postgres", "sandbox", "redis")
    )
    connections = PEOPLE * CONNECTIONS
    cap_rate = connections * s.OSAI_MAX_IN_FLIGHT_PER_CONNECTION / s.OSAI_POLL_FIRST_SECONDS
    one = med(1, Run.worker_cores)
    fed = med(top, Run.queued) >= 0.25 * s.OSAI_QUEUE_DEPTH
    return "; ".join(
        [
            f"1 qcluster: its workers used {one:.2f} of a core"
            + (
                ", so it is not CPU-bound: of its 2 worker processes one runs the dispatcher's "
                "loop (a task that sleeps between rounds) and the other does every step in "
                f"turn, waiting on PostgreSQL and OSAI ({1000 / rates[1]:.0f} ms per bucket "
                "for its 2 steps)"
                if one < 0.8
                else ""
            ),
            f"{top} qclusters: the machine had {med(top, Run.busy_cores):.2f} of {_NCPU} "
            f"cores busy ({med(top, Run.other_cores):.2f} by other processes); this run's "
            f"processes need {ours:.0f} ms of CPU per bucket, so the cores left to it bound "
            f"the rate near {rates[top]:.0f} buckets/s; {med(top, Run.queued):.0f} of "
            f"{s.OSAI_QUEUE_DEPTH} steps waited in the broker"
            + (
                ", so the one dispatcher kept the workers fed"
                if fed
                else ": the workers were often waiting for the one dispatcher"
            ),
            f"worker CPU per bucket: {med(1, lambda r: r.ms_per_bucket('workers')):.0f} ms at 1 "
            f"qcluster, {med(top, lambda r: r.ms_per_bucket('workers')):.0f} ms at {top} (more "
            "processes contend for the cores; each cluster polls its broker and guards its "
            "workers on its own)",
            f"the caps are far away ({connections} connections x "
            f"{s.OSAI_MAX_IN_FLIGHT_PER_CONNECTION} in flight / {s.OSAI_POLL_FIRST_SECONDS:g} s "
            f"first poll = {cap_rate:.0f} buckets/s)",
        ]
    )


# --- Helper-process entry point -----------------------------------------------------------


def seed(tag: str) -> dict[str, Any]:
    """PEOPLE new people with CONNECTIONS new connections each, each connection asking for
    DAYS days of 2024 by day (fresh OSAI accounts: nothing to reuse)."""
    from bench.data import make_connection, make_user, request_report

    start = datetime(2024, 1, 1, tzinfo=UTC)
    total = 0
    for p in range(PEOPLE):
        owner = make_user(f"p16-{tag}-{p}")
        for c in range(CONNECTIONS):
            connection, _ = make_connection(owner, f"P16 {tag} {c}")
            report = request_report(owner, connection, start, start + timedelta(days=DAYS), "day")
            total += report.buckets_total
    return {"buckets": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed")
    seeding.add_argument("--tag", required=True)
    options = parser.parse_args()
    import django

    django.setup()
    print(json.dumps(seed(options.tag)))


if __name__ == "__main__":
    main()
