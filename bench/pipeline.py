"""P1, P2, P3, P4, P5, P12: the report pipeline with a real worker, the sandbox and a browser.

Reports run side by side to save wall time: the 60 s report waits while the others run. Each
report uses its own connection, so its own OSAI account, and the recording sandbox
(osai_recorder.py) attributes every OSAI call to an account. The sandbox's latency (D) and
faults apply to reports created while they are set, so they are changed only once every
bucket already requested has been created at OSAI (`_settle_creates`).

Timeline: R60 (browser) and the seed's loop at D=60 -> R0 -> R10 (browser) and the seed's
loop at D=10 -> R-error (browser, status 1) -> wait for R10 -> P4 rounds at D=10 (R60
finishes meanwhile) -> P2.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from django.conf import settings
from django.utils import timezone

from bench.browser import generate_report, open_report_form, read_probe
from bench.context import Bench, Timeout, wait_for
from bench.data import make_connection, make_user, request_report, session_cookie
from bench.osai_recorder import Call, read_calls
from bench.results import Results, fmt_ratios, median, percentile, ratios
from osai.sandbox import account_id_for_token
from tests.support.sandbox import SandboxControl

P4_D = 10.0  # seconds OSAI takes per report in P4 and P2
P4_ROUNDS = 5
P12_D = 2.0
WATCH_INTERVALS = 3  # badge intervals watched after a terminal state (P5, P12)
BROKER_POLL = float(settings.Q_CLUSTER["poll"])
CREATE = "POST /api/Reports"
STATUS = "GET /api/Reports/{id}"
DOWNLOAD = "GET /s3/file"


# --- The back-off schedule -----------------------------------------------------------------


def backoff(d: float) -> tuple[int, float, float]:
    """For a report OSAI finishes D s after creating it: (k, W, t).

    k = how many status polls the worker's schedule makes until one falls at or after D
    (so the most GET /Reports/{id} P1 allows), W = the gap before that last poll (the poll
    interval in force when OSAI finished), t = when it falls, counted from the create.
    The worker polls _poll_delay(0) after the create, then _poll_delay(n) after its n-th
    poll (reports/pipeline/steps.py), so the schedule follows whatever the settings make it.
    """
    from reports.pipeline.steps import _poll_delay

    k, t = 1, _poll_delay(0)
    gap = t
    while t < d:
        gap = _poll_delay(k)
        t += gap
        k += 1
    return k, gap, t


def backoff_goal(d: float) -> tuple[int, str]:
    """k for D (see `backoff`), and the goal it sets for status polls, in words."""
    k, _, _ = backoff(d)
    return k, f"≤ {k} (back-off schedule for D={d:g} s)"


def seed_loop_polls(d: float) -> int:
    """Status polls the seed's loop makes for a report OSAI finishes D s after creating it:
    one every 2 s, the last at or just after D."""
    return max(1, math.ceil(d / 2))


def schedule_text(limit: float = 90.0) -> str:
    """The worker's poll gaps in words, e.g. "1 s, 2 s x15, 3 s, 4.5 s, then 10 s"."""
    from reports.pipeline.steps import _poll_delay

    gaps, t, n = [], 0.0, 0
    while t < limit and n < 100:
        gap = _poll_delay(n)
        gaps.append(gap)
        t += gap
        n += 1
    runs: list[list[float]] = []
    for gap in gaps:
        if runs and runs[-1][0] == gap:
            runs[-1][1] += 1
        else:
            runs.append([gap, 1])
    parts = [f"{g:g} s" + (f" x{int(c)}" if c > 1 else "") for g, c in runs[:-1]]
    return ", ".join([*parts, f"then {runs[-1][0]:g} s"])


# --- The seed's own loop --------------------------------------------------------------------


class SeedLoop(threading.Thread):
    """OSAI's own example script (tests/osai/data/osai_report_playbook.txt): sign in,
    POST /Reports, then GET it every 2 s until status is 0 or 1. Timed from before the
    sign-in to the answer that ends the loop."""

    def __init__(self, api_url: str, period: tuple[datetime, datetime]) -> None:
        super().__init__(daemon=True)
        self.api_url = api_url
        self.period = period
        self.token = f"osai-sandbox-bench-seed-{secrets.token_hex(4)}"
        self.posted = threading.Event()
        self.started_at = self.finished_at = 0.0
        self.error = ""

    def run(self) -> None:
        session = requests.Session()
        session.trust_env = False  # 127.0.0.1 only, never through a proxy
        try:
            self.started_at = time.time()
            jwt = session.post(f"{self.api_url}/Users/SignIn", json=self.token, timeout=10).text
            headers = {"Authorization": f"Bearer {jwt}"}
            body = {
                "periodFrom": self.period[0].isoformat().replace("+00:00", "Z"),
                "periodTo": self.period[1].isoformat().replace("+00:00", "Z"),
                "includeDatasets": True,
                "includeManipulations": True,
                "includeModels": True,
                "includeRentedDevices": True,
                "includePredictions": True,
            }
            report = session.post(
                f"{self.api_url}/Reports", headers=headers, json=body, timeout=10
            ).json()
            self.posted.set()
            for _ in range(200):  # bounded: 400 s at most
                answer = session.get(
                    f"{self.api_url}/Reports/{report['id']}", headers=headers, timeout=10
                ).json()
                if answer["status"] in (0, 1):
                    self.finished_at = time.time()
                    return
                time.sleep(2)
            self.error = "the report never finished"
        except (requests.RequestException, ValueError, KeyError) as exc:
            self.error = repr(exc)
        finally:
            self.posted.set()

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at if self.finished_at else math.nan


# --- Reports ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One report the benchmark requested, and what it needs to judge it afterwards."""

    name: str
    d: float
    account: str
    report_id: int
    requested_at: float  # epoch seconds: the click in the browser, or the service call
    page: Any = None
    context: Any = None
    seed: SeedLoop | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _report_buckets(report_id: int) -> list[Any]:
    from reports.models import Bucket

    return list(Bucket.objects.filter(report_buckets__report_id=report_id).order_by("pk"))


def _settle_creates(timeout: float = 60.0) -> None:
    """Wait until no bucket waits to be created at OSAI (so D and faults can change)."""
    from reports.models import Bucket

    wait_for(
        lambda: (
            not Bucket.objects.filter(state__in=[Bucket.State.NEW, Bucket.State.CREATING]).exists()
        ),
        timeout,
        "every requested bucket to be created at OSAI",
    )


def _configure(sandbox: SandboxControl, latency: float, **faults: Any) -> None:
    _settle_creates()
    sandbox.clear_faults()
    sandbox.faults(latency=latency, **faults)


def _terminal(report_id: int) -> Any:
    from reports.models import Report

    report = Report.objects.get(pk=report_id)
    return report if report.is_terminal else None


def _wait_terminal(report_id: int, timeout: float, interval: float = 0.1) -> Any:
    """The report, once it has finished (in whatever state)."""
    return wait_for(
        lambda: _terminal(report_id), timeout, f"report {report_id} to finish", interval
    )


def _request(owner: Any, connection: Any, preset: str, granularity: str) -> Any:
    """A report through the service, as the page's form would make it."""
    from reports.periods import preset_period

    now = timezone.now()
    start, end = preset_period(preset, now)
    return request_report(owner, connection, start, end, granularity, preset=preset, now=now)


def _request_in_browser(bench: Bench, name: str, d: float) -> Run:
    """A new user and connection; the report form submitted in the browser (last month,
    total: one bucket); the report page left open with its badge polling."""
    user = make_user(f"{name}-{secrets.token_hex(3)}")
    _, account = make_connection(user, name)
    context, page = open_report_form(bench.browser, bench.base_url, session_cookie(user))
    page.select_option("#id_preset", "last_month")
    page.select_option("#id_granularity", "total")
    clicked, report_id = generate_report(page)
    run = Run(name, d, account, report_id, clicked, page=page, context=context)
    trigger = page.get_attribute("#status-badge", "hx-trigger") or ""
    interval = re.search(r"every (\d+(?:\.\d+)?)s", trigger)
    run.extra["interval"] = float(interval.group(1)) if interval else math.nan
    return run


def _wait_created(run: Run, timeout: float = 30.0) -> None:
    wait_for(
        lambda: all(
            b.osai_report_id is not None or b.is_terminal for b in _report_buckets(run.report_id)
        ),
        timeout,
        f"{run.name}'s buckets to be created at OSAI",
    )


def _start_seed(bench: Bench) -> SeedLoop:
    from reports.periods import preset_period

    seed = SeedLoop(bench.sandbox.api_url, preset_period("last_month", timezone.now()))
    seed.start()
    seed.posted.wait(30)
    return seed


def _calls_of(calls: list[Call], account: str) -> list[Call]:
    return [c for c in calls if c.account == account]


# --- The targets ----------------------------------------------------------------------------


def run(bench: Bench, results: Results) -> None:
    """Every pipeline target; see the module docstring for the timeline."""
    sandbox = bench.sandbox
    sandbox.reset()

    _configure(sandbox, latency=60)
    r60 = _request_in_browser(bench, "R60", 60)
    _wait_created(r60)
    r60.seed = _start_seed(bench)

    _configure(sandbox, latency=0)
    owner = make_user(f"pipeline-{secrets.token_hex(3)}")
    connection, account = make_connection(owner, "R0")
    report = _request(owner, connection, "last_month", "total")
    r0 = Run("R0", 0, account, report.pk, time.time())
    _wait_created(r0)

    _configure(sandbox, latency=10)
    r10 = _request_in_browser(bench, "R10", 10)
    _wait_created(r10)
    r10.seed = _start_seed(bench)

    _configure(sandbox, latency=P12_D, report_error=True)
    r_err = _request_in_browser(bench, "R-error", P12_D)
    _wait_created(r_err)
    _configure(sandbox, latency=P4_D)

    _wait_terminal(r10.report_id, 60)
    r10.seed.join(30)
    p4_reports = _p4(bench, results)
    _p2(bench, results, p4_reports)

    for watched in (r0, r10, r60, r_err):
        _wait_terminal(watched.report_id, 150)
    # P5/P12 count polls after the terminal state: watch a few badge intervals first.
    watch = WATCH_INTERVALS * r10.extra["interval"] + 0.5
    time.sleep(max(0.0, watch - _seconds_since_terminal(r60, r10, r_err)))

    calls = read_calls(bench.calls_log)
    _p1(results, calls, [r0, r10, r60])
    _p3(results, calls, [r10, r60])
    seeds = {account_id_for_token(r.seed.token) for r in (r10, r60) if r.seed}
    _poll_lateness(results, [c for c in calls if c.account not in seeds])
    _p5(results, [r10, r60])
    _p12(results, calls, r_err)
    for watched in (r10, r60, r_err):
        watched.context.close()


def _seconds_since_terminal(*runs: Run) -> float:
    latest = 0.0
    for r in runs:
        probe = read_probe(r.page)
        if probe["terminalAt"]:
            latest = max(latest, probe["terminalAt"] / 1000)
    return time.time() - latest if latest else 0.0


def _p1(results: Results, calls: list[Call], runs: list[Run]) -> None:
    """P1: OSAI calls per finished bucket, from the sandbox's own record of each call.

    One OSAI account per report, D ∈ {0, 10, 60 s}. A report from the form also fetches the
    period before it to compare with: two buckets on the account, counted each on its own
    (GETs by OSAI report id; POSTs and downloads, which name no id, per bucket on average).
    Goal: exactly one POST /Reports, GET /Reports/{id} ≤ k(D) (the worker's back-off schedule:
    1 s, then every 2 s, then x1.5 up to 10 s, counted until a poll falls at or after D), one
    download of the file.
    """
    for r in runs:
        mine = _calls_of(calls, r.account)
        buckets = [b for b in _report_buckets(r.report_id) if b.osai_report_id is not None]
        n = max(1, len(buckets))
        posts_total = sum(c.route == CREATE for c in mine)
        posts = posts_total / n
        polls = [c.report for c in mine if c.route == STATUS]
        gets = max((polls.count(b.osai_report_id) for b in buckets), default=0)
        downloads = sum(c.route == DOWNLOAD for c in mine) / n
        k, polls_goal = backoff_goal(r.d)
        state = ",".join(sorted({b.state for b in buckets}))
        results.add(
            "P1",
            f"D={r.d:g} s: POST /Reports per bucket",
            f"{posts:g} ({posts_total} for {n} buckets)",
            goal="= 1",
            met=posts == 1,
        )
        results.add(
            "P1",
            f"D={r.d:g} s: GET /Reports/{{id}} per bucket",
            f"{gets} (the most for one bucket; worker's own counts "
            f"{', '.join(str(b.polls) for b in buckets)}, buckets {state})",
            goal=polls_goal,
            met=gets <= k,
        )
        results.add(
            "P1",
            f"D={r.d:g} s: downloads per bucket",
            f"{downloads:g}",
            goal="= 1",
            met=downloads == 1,
        )


def _p3(results: Results, calls: list[Call], runs: list[Run]) -> None:
    """P3: latency the dashboard adds, in a real browser.

    OSAI's status turns 0 at creationTime + D (the bucket's stored OSAI creation time plus the
    sandbox latency). The badge is done when the page's probe sees the badge-done class.
    Added latency = badge done - OSAI ready; its bound is W + I + poll: W the worker's poll
    interval in force at D, I the badge's interval, poll django-q2's broker poll. Also the
    end-to-end time (click on "Generate report" to badge done) against the seed's own 2 s
    loop run at the same D at the same time (sign-in to the answer with status 0).
    """
    for r in runs:
        probe = read_probe(r.page)
        bucket = _report_buckets(r.report_id)[0]
        if not probe["terminalAt"] or bucket.osai_created_at is None:
            results.error("P3", f"{r.name}: the badge never reached a terminal state")
            continue
        done_at = probe["terminalAt"] / 1000
        ready_at = bucket.osai_created_at.timestamp() + r.d
        done_get = next(
            (c.t for c in _calls_of(calls, r.account) if c.route == STATUS and c.status == 0),
            math.nan,
        )
        interval = r.extra["interval"]
        _, w, _ = backoff(r.d)
        bound = w + interval + BROKER_POLL
        added = done_at - ready_at
        results.add(
            "P3",
            f"D={r.d:g} s: added latency (OSAI ready -> badge done)",
            f"{added:.2f} s = worker noticed {done_get - ready_at:.2f} s after ready + page "
            f"{done_at - done_get:.2f} s; bound W+I+poll = {w:.2f}+{interval:g}+{BROKER_POLL:g}"
            f" = {bound:.2f} s",
        )
        results.add(
            "P3",
            f"D={r.d:g} s: added latency / (W + I + poll)",
            f"{added / bound:.2f}",
            goal="≤ 1.0",
            met=added / bound <= 1.0,
        )
        e2e = done_at - r.requested_at
        seed = r.seed
        if seed is None or not seed.finished_at:
            results.error("P3", f"{r.name}: the seed's loop did not finish ({seed and seed.error})")
            continue
        ratio = e2e / seed.seconds
        created = next((c.t for c in _calls_of(calls, r.account) if c.route == CREATE), math.nan)
        seed_created = next(
            (c.t for c in _calls_of(calls, account_id_for_token(seed.token)) if c.route == CREATE),
            math.nan,
        )
        to_create, lag, page = created - r.requested_at, done_get - ready_at, done_at - done_get
        results.add(
            "P3",
            f"D={r.d:g} s: end to end, dashboard vs the seed's 2 s loop",
            f"{e2e:.2f} s vs {seed.seconds:.2f} s",
        )
        results.add(
            "P3",
            f"D={r.d:g} s: where the time goes",
            f"dashboard: click -> OSAI create {to_create:.2f} s, OSAI {r.d:g} s, -> worker's "
            f"poll {lag:.2f} s, -> badge done {page:.2f} s; seed: sign-in and create "
            f"{seed_created - seed.started_at:.2f} s, OSAI {r.d:g} s, -> its poll "
            f"{seed.finished_at - seed_created - r.d:.2f} s",
        )
        why = (
            f"before OSAI is asked the dashboard spends {to_create:.1f} s (the form, two "
            f"broker hops, a sign-in); it notices OSAI's answer {lag:.1f} s late (poll "
            f"interval at D: {w:g} s), and the badge shows it {page:.1f} s later (its "
            f"{interval:g} s interval); at D={r.d:g} s these fixed costs weigh "
            f"{(e2e - seed.seconds) / seed.seconds:.0%} against the seed's loop"
        )
        results.add(
            "P3",
            f"D={r.d:g} s: ratio dashboard / seed loop",
            f"{ratio:.3f}",
            goal="≤ 1.1",
            met=ratio <= 1.1,
            why=why,
        )


def _poll_lateness(results: Results, calls: list[Call]) -> None:
    """For P3 and P4: how late each status poll of the whole run came against the worker's
    own schedule: its time minus (the previous call on that OSAI report + the scheduled
    gap, _poll_delay). The dispatcher's sleep granularity, broker poll and step time show
    here, and so would a stall of the worker (no free worker process)."""
    from reports.pipeline.steps import _poll_delay

    by_report: dict[tuple[str, int], list[Call]] = {}
    for c in calls:
        if c.route in (CREATE, STATUS) and c.report is not None:
            by_report.setdefault((c.account, c.report), []).append(c)
    late = []
    for sequence in by_report.values():
        if sequence[0].route != CREATE:
            continue
        for n in range(1, len(sequence)):
            if sequence[n].route != STATUS or sequence[n - 1].http != 200:
                break
            late.append(sequence[n].t - sequence[n - 1].t - _poll_delay(n - 1))
    if not late:
        return
    worst = max(late)
    results.add(
        "P3",
        f"poll lateness vs the worker's schedule (all {len(late)} polls of the run)",
        f"p50 {median(late):.2f} s, p95 {percentile(late, 95):.2f} s, max {worst:.2f} s",
    )
    _dispatcher_tasks(results)


_DISPATCHER_TASKS: dict[str, tuple[str, float]] = {}


def _collect_dispatcher_tasks() -> None:
    """Remember the dispatcher tasks django-q2 has recorded so far (it keeps only its last
    Q_CLUSTER["save_limit"] successful tasks, so this runs several times)."""
    from django_q.models import Task

    for task in Task.objects.filter(func="reports.tasks.pipeline_dispatch"):
        seconds = (task.stopped - task.started).total_seconds()
        _DISPATCHER_TASKS[str(task.id)] = (str(task.result), seconds)


def _dispatcher_tasks(results: Results) -> None:
    """How long dispatcher tasks held a worker process, by their result. With Q_WORKERS=2 one
    process runs the live dispatcher, so another dispatcher task that waits (for the lease)
    leaves no process for bucket steps meanwhile."""
    from collections import defaultdict

    _collect_dispatcher_tasks()
    held: dict[str, list[float]] = defaultdict(list)
    for result, seconds in _DISPATCHER_TASKS.values():
        held[result].append(seconds)
    if held:
        results.add(
            "P3",
            "dispatcher tasks of the run, by result",
            "; ".join(
                f"{result} x{len(s)} ({sum(s):.1f} s of worker time, longest {max(s):.1f} s)"
                for result, s in sorted(held.items())
            ),
        )


def _p5(results: Results, runs: list[Run]) -> None:
    """P5: the badge's polls per report in the browser (Resource Timing entries of /status/
    requests on the report page), against ⌈D/I⌉ + 2, and polls after the terminal state
    (any /status/ request started after the badge turned done), watched for 3 intervals."""
    for r in runs:
        probe = read_probe(r.page)
        interval = r.extra["interval"]
        polls = probe["polls"]
        bound = math.ceil(r.d / interval) + 2
        after = sum(t > probe["terminalAt"] for t in polls) if probe["terminalAt"] else -1
        _, w, t_k = backoff(r.d)
        results.add(
            "P5",
            f"D={r.d:g} s: badge polls per report",
            str(len(polls)),
            goal=f"≤ ⌈D/I⌉+2 = {bound}",
            met=len(polls) <= bound,
            why=f"the badge polls until the worker has noticed OSAI's answer: its poll "
            f"schedule reaches D={r.d:g} s only at {t_k:.1f} s after the create (interval "
            f"{w:.1f} s), so the page polls over ≈ D + {t_k - r.d:.1f} s + a page interval",
        )
        results.add(
            "P5",
            f"D={r.d:g} s: badge polls after done",
            str(after),
            goal="= 0",
            met=after == 0,
        )


def _p12(results: Results, calls: list[Call], r: Run) -> None:
    """P12: the sandbox answers status 1 (fault report_error, D=2 s). After the first answer
    with status 1: no OSAI call for that bucket, and no badge poll after the badge shows the
    failed state (watched for 3 badge intervals).

    The report from the form also fetches the period before it on the same account, and
    that bucket fails too (the fault holds for the account): it may be created and polled
    after the first failure. So the count is the failed OSAI report's own polls, any
    download, and any POST beyond one per bucket (a failed bucket created again)."""
    mine = _calls_of(calls, r.account)
    first = next((c for c in mine if c.route == STATUS and c.status == 1), None)
    if first is None:
        results.error("P12", "the sandbox never answered status 1")
        return
    first_error = first.t
    created = sum(b.osai_report_id is not None for b in _report_buckets(r.report_id))
    after = (
        sum(c.t > first_error and c.route == STATUS and c.report == first.report for c in mine)
        + sum(c.t > first_error and c.route == DOWNLOAD for c in mine)
        + max(0, sum(c.route == CREATE for c in mine) - created)
    )
    probe = read_probe(r.page)
    polls_after = (
        sum(t > probe["terminalAt"] for t in probe["polls"]) if probe["terminalAt"] else -1
    )
    watched = time.time() - first_error
    results.add(
        "P12",
        "OSAI calls for the bucket after status 1",
        f"{after} (watched {watched:.0f} s)",
        goal="= 0",
        met=after == 0,
    )
    results.add(
        "P12",
        "badge polls after the error shows",
        f"{polls_after} (badge {probe['terminalClass']})",
        goal="= 0",
        met=polls_after == 0 and probe["terminalClass"] == "badge-failed",
    )


def _p4(bench: Bench, results: Results) -> list[tuple[Any, Any, str]]:
    """P4: makespan of a 12-bucket report (last 12 months by month) vs a 1-bucket report
    (last month, monthly), same D = 10 s, Q_WORKERS=2, interleaved A B A B over 5 rounds,
    each report on a fresh connection (nothing to reuse). Makespan = the report's
    finished_at - requested_at, both written by the app. Goal: median ratio ≤ 1.3."""
    owner = make_user(f"p4-{secrets.token_hex(3)}")
    twelve, one, rounds = [], [], []
    for n in range(P4_ROUNDS):
        times = []
        for kind, preset in (("A", "last_12_months"), ("B", "last_month")):
            connection, account = make_connection(owner, f"P4 {kind}{n}")
            report = _request(owner, connection, preset, "month")
            try:
                done = _wait_terminal(report.pk, 120)
            except Timeout as exc:
                results.error("P4", str(exc))
                return rounds
            times.append((done.finished_at - done.requested_at).total_seconds())
            _collect_dispatcher_tasks()
            if kind == "A":
                rounds.append((owner, connection, account))
                bench.shared.setdefault("twelve_month_report", (owner, done.pk))
        twelve.append(times[0])
        one.append(times[1])
    per_round = ratios(twelve, one)
    results.add("P4", "makespan 12 buckets (s, per round)", ", ".join(f"{t:.2f}" for t in twelve))
    results.add("P4", "makespan 1 bucket (s, per round)", ", ".join(f"{t:.2f}" for t in one))
    results.add("P4", "per-round ratios", fmt_ratios(per_round))
    label = f"makespan ratio 12 vs 1 bucket (D={P4_D:g} s, 2 workers, median of {len(per_round)})"
    results.median_at_most("P4", label, per_round, 1.3)
    return rounds


def _p2(bench: Bench, results: Results, rounds: list[tuple[Any, Any, str]]) -> None:
    """P2: re-run "last 12 months by month" on a connection whose 12 months are done (a P4
    round). Counted at the sandbox: new POST /Reports for that account. Goal: 1 (the open
    month), not 12."""
    if not rounds:
        results.error("P2", "no finished 12-month report to re-run")
        return
    owner, connection, account = rounds[0]
    before = sum(c.route == CREATE for c in _calls_of(read_calls(bench.calls_log), account))
    report = _request(owner, connection, "last_12_months", "month")
    reused = sum(b.state == "done" for b in _report_buckets(report.pk))
    _settle_creates()
    time.sleep(1.0)  # a second POST, if any, would follow at once
    after = sum(c.route == CREATE for c in _calls_of(read_calls(bench.calls_log), account))
    results.add(
        "P2",
        "re-run last 12 months by month: new POST /Reports",
        f"{after - before} ({reused} of 12 buckets reused)",
        goal="= 1",
        met=after - before == 1,
    )
