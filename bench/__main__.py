"""`make bench`: measure the P targets of docs/requirements.md and write BENCHMARKS.md.

    python -m bench                 # everything (about 25 minutes)
    python -m bench --only p6,p7    # some groups (development)

Groups: pipeline (P1 P2 P3 P4 P5 P12), eta (P3′ P13), p7, p6 (P6 P14), p8, p9, p15, p18, p20,
p16, p17, p22, p21, p19, p10, p11.
Everything runs against processes started here: the recording OSAI sandbox, a real
`manage.py qcluster` (2 workers, production timings), gunicorn (2 workers) and headless
Chromium, on a bench database in var/bench/ (never var/db.sqlite3). P17, P19, P20 and P21
start their own qcluster on their own copies of it (P19 also an SMTP server); P16 starts 1, 2 and 4
qclusters on PostgreSQL (database bench_p16, created and dropped) and Redis db 14. All of
them are stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

from bench import procs
from bench.env import (
    MAIN_DB,
    ROOT,
    SETTINGS_MODULE,
    TEMPLATE_DB,
    WORKER_ENV,
    copy_database,
    fresh_bench_dir,
    sqlite_url,
)
from bench.results import Results, machine_facts, write_markdown

# The groups that run each on its own database and worker(s), in this order, after those on
# the bench's own worker.
_ON_THEIR_OWN = ("p15", "p18", "p20", "p16", "p17", "p22", "p21", "p19")
GROUPS = ("pipeline", "eta", "p7", "p6", "p8", "p9", *_ON_THEIR_OWN, "p10", "p11")

# The targets a group measures, where they are not just the group's name in capitals.
_TARGETS = {"pipeline": "P1 P2 P3 P4 P5 P12", "eta": "P3′ P13"}


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`, which stops the processes


def _guarded(results: Results, target: str, step: Callable[[], object]) -> None:
    """Run one group; a failure is reported as an error and the next group still runs."""
    print(f"bench: {target} ...", flush=True)
    started = time.monotonic()
    try:
        step()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        results.error(target, f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    print(f"bench: {target} took {time.monotonic() - started:.0f} s", flush=True)


def _run_groups(
    results: Results, chosen: list[str], steps: dict[str, Callable[[], object]], *order: str
) -> None:
    """The chosen ones of the groups in `order`, one after the other, each guarded."""
    for group in order:
        if group in chosen:
            _guarded(results, _TARGETS.get(group, group.upper()), steps[group])


def _ensure_twelve_month_report(bench: object) -> None:
    """P8/P9 need a finished 12-month report; the pipeline group leaves one, else make it."""
    from django.utils import timezone

    from bench.data import bulk_done_reports, make_connection, make_user, monthly_periods

    shared = bench.shared  # type: ignore[attr-defined]
    if "twelve_month_report" not in shared:
        owner = make_user("p8-owner")
        connection, _ = make_connection(owner, "P8")
        report = bulk_done_reports(
            owner, connection, [monthly_periods(12, timezone.now())], "month"
        )
        shared["twelve_month_report"] = (owner, report[0])


def _put_off_tracking() -> None:
    """Tracking's schedule would first run as the worker starts and refresh every connection
    the bench has made so far (a burst of OSAI reports beside the pipeline targets): put it
    off a day. Targets that measure tracking run it themselves."""
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from reports.schedules import TRACK

    Schedule.objects.filter(name=TRACK).update(next_run=timezone.now() + timedelta(days=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    options = parser.parse_args()
    groups = [g.strip() for g in options.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")

    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    facts = machine_facts()
    results = Results()
    fresh_bench_dir()
    os.environ.update(
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        DATABASE_URL=sqlite_url(MAIN_DB),
        # Playwright's sync API runs an event loop in this thread; the bench's own ORM calls
        # (set-up rows, reading states) are synchronous and safe here.
        DJANGO_ALLOW_ASYNC_UNSAFE="true",
        LOG_LEVEL="WARNING",  # this process only: its INFO lines would bury the figures
    )
    for name in ("REDIS_URL", "OSAI_TESTING", "DJANGO_DEBUG"):
        os.environ.pop(name, None)
    interrupted = False
    brotli_job = None
    try:
        from bench import frontend

        brotli_job = frontend.start_full_bundle_brotli()
        sandbox, calls_log = procs.start_sandbox(latency=3.0)
        os.environ["OSAI_SANDBOX_URL"] = sandbox.api_url
        procs.run_manage(MAIN_DB, "migrate", "--noinput", "-v", "0")
        copy_database(MAIN_DB, TEMPLATE_DB)

        import django

        django.setup()
        from bench import (
            alerts,
            anomalies,
            backfill,
            csv_export,
            eta,
            fairness,
            idle,
            overview,
            pages,
            pipeline,
            rollups,
            scaleout,
            tracking,
        )
        from bench.browser import chromium
        from bench.context import Bench

        _put_off_tracking()
        worker = procs.start_worker(MAIN_DB, sandbox.api_url)
        web, base_url = procs.start_gunicorn(MAIN_DB, "gunicorn-main", sandbox.api_url)
        print(f"bench: sandbox {sandbox.base_url}, web {base_url}, worker pid {worker.pid}")
        with chromium() as browser:
            bench = Bench(sandbox, calls_log, worker, web, base_url, browser)
            steps: dict[str, Callable[[], object]] = {
                "pipeline": lambda: pipeline.run(bench, results),
                "eta": lambda: eta.run(bench, results),
                "p7": lambda: pages.run_p7(bench, results),
                "p6": lambda: pages.run_p6(bench, results),
                "p8": lambda: frontend.run_p8(bench, results, brotli_job),
                "p9": lambda: frontend.run_p9(bench, results),
                "p15": lambda: fairness.run_p15(bench, results),
                "p18": lambda: overview.run_p18(bench, results),
                "p20": lambda: rollups.run_p20(bench, results),
                "p16": lambda: scaleout.run_p16(bench, results),
                "p17": lambda: tracking.run_p17(bench, results),
                "p22": lambda: anomalies.run_p22(bench, results),
                "p21": lambda: backfill.run_p21(bench, results),
                "p19": lambda: alerts.run_p19(bench, results),
                "p11": lambda: bench.shared.update(p11=idle.start_p11(worker)),
                "p10": lambda: csv_export.run_p10(bench, results),
            }
            _run_groups(results, groups, steps, "pipeline", "eta", "p7", "p6")
            if {"p8", "p9"} & set(groups):
                _ensure_twelve_month_report(bench)
            _run_groups(results, groups, steps, "p8", "p9")
        # _ON_THEIR_OWN, each on its own database and worker(s); the bench's worker idles
        # meanwhile. P11 measures the idle worker while P10 runs: one CPU-bound process at a
        # time (P11 reads only the worker's own CPU time).
        _run_groups(results, groups, steps, *_ON_THEIR_OWN, "p11", "p10")
        meter = bench.shared.get("p11")
        if meter is not None:
            idle.finish_p11(meter, results)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; stopping every process it started", file=sys.stderr)
    except Exception as exc:
        results.error("bench", f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        procs.stop_all()
        if brotli_job is not None and brotli_job.poll() is None:
            brotli_job.terminate()
    wall = time.monotonic() - started
    from bench import load

    try:
        from bench.pipeline import schedule_text

        schedule = schedule_text()
    except Exception as exc:  # Django never set up (an early failure)
        schedule = f"unknown ({type(exc).__name__})"

    setup = [
        "bench database: a fresh SQLite file var/bench/bench.sqlite3 (WAL), migrated first; "
        "P6, P10, P17 and P19 use their own copies of it (P17 and P19 each with its own "
        "qcluster, same settings as the bench's worker)",
        "P21: its own copy of the bench database and qcluster for 20 new connections' "
        "history; the person's report beside a history on the bench's worker",
        "P16: PostgreSQL 15 (database bench_p16, created and dropped by the run) and the "
        "django-q2 Redis broker (db 14), 1, 2 and 4 `manage.py qcluster` processes with "
        "Q_WORKERS=2 each, the sandbox at D = 0 (bench/scaleout.py)",
        "P22: its own copy of the bench database, 1,000 connections' refresh finishing "
        "work in a helper process, detector off and on (bench/anomalies.py)",
        "P19: mail to aiosmtpd (`python -m aiosmtpd`, a Maildir under var/bench/), webhooks "
        "to a receiver in the bench process (ALERT_WEBHOOK_ALLOW_LOCAL=True for that worker)",
        "web: `gunicorn osai_dashboard.wsgi -w 2` on 127.0.0.1 (DEBUG off, whitenoise, "
        "settings bench.settings = the project's settings with the file cache in "
        "var/bench/cache)",
        "worker: one `manage.py qcluster` per database, ORM broker (poll 0.2 s), env "
        f"{WORKER_ENV}, "
        "otherwise the production defaults of settings.py (Q_TIMEOUT, Q_RETRY, lease, "
        f"OSAI_POLL_*); its status polls after a create: {schedule}",
        "OSAI: the project's sandbox (osai/sandbox/) behind a call recorder "
        "(bench/osai_recorder.py) that attributes each call to an OSAI account",
        "pipeline targets run side by side on the one worker (timeline in "
        "bench/pipeline.py): P1 at D = 0, 10 and 60 s; P3 and P5 at D = 10 and 60 s in "
        "the browser, each beside the seed's own 2 s loop at the same D; P12 at D = 2 s; "
        "P4 and P2 at D = 10 s (the D = 60 s report finishes during the P4 rounds)",
        "P3′ and P13 (bench/eta.py): per D, one connection asks for one-month reports of "
        "different closed months; two teach the worker, then each round is a report through "
        "the browser beside the seed's loop at the same D (10 s: 5 rounds in a row; 60 s: 3 "
        "rounds side by side)",
        "tracking's schedule is put off during the run (it would refresh every connection "
        "the bench makes as the worker starts); targets that measure tracking run it",
        "browser: Debian Chromium, headless, through Playwright",
        f"load: {load.tool()}, 2 connections, 1 thread",
    ]
    if interrupted:
        results.errors.append("interrupted before the end: the figures are incomplete")
    write_markdown(ROOT / options.output, results, facts=facts, setup=setup, wall_seconds=wall)
    goals = [f for f in results.figures if f.goal]
    missed = [f"{f.target} {f.label}" for f in goals if f.met is False]
    print(f"bench: {len(goals) - len(missed)} of {len(goals)} goals met", flush=True)
    for line in missed:
        print(f"bench: missed: {line}")
    for line in results.errors:
        print(f"bench: error: {line}")
    print(f"bench: wall time {wall / 60:.1f} min ({wall:.0f} s); wrote {options.output}")
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
