"""generate_report: the same report the page would make, for scripts and cron."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import pytest
from dateutil.relativedelta import relativedelta
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from osai.client import OsaiClient
from reports.formatting import utc_z
from reports.metrics import OSAI_FIELD_TO_COLUMN, all_flags, to_osai_flags
from reports.models import Granularity, Report
from reports.periods import split_period, utc_midnight
from tests.factories import make_connection, make_user
from tests.support.worker import wait_until


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-07-01", "--to", "2026-01-01"], "must end after it starts"),
        (["--from", "2026-13-01", "--to", "2026-01-01"], "must be a date"),
        (["--from", "1999-01-01", "--to", "2000-01-01"], "cannot start before"),
        (["--from", "2026-01-01", "--to", "2099-01-01"], "future"),
        (["--from", "2020-01-01", "--to", "2026-01-01", "--granularity", "day"], "limit is"),
        (["--from", "2026-01-01", "--to", "2026-02-01", "--connection", "Nope"], "no connection"),
        (["--from", "2026-01-01", "--to", "2026-02-01", "--flags", "gpus"], "Unknown flags"),
        (["--to", "2026-02-01"], "Give --from and --to"),
    ],
)
def test_bad_requests_get_a_clear_message_and_create_nothing(args, message):
    user = make_user("cli")
    make_connection(user, "Main")
    with pytest.raises(CommandError, match=message):
        call_command("generate_report", "--user", "cli", *args)
    assert Report.objects.count() == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_wait_and_json_print_the_report_in_osai_units(worker, use_sandbox):
    user = make_user("cli")
    make_connection(user, "Main", token="osai-sandbox-cli-json")
    out = io.StringIO()
    call_command(
        "generate_report",
        "--user",
        "cli",
        "--connection",
        "Main",
        "--from",
        "2026-01-01",
        "--to",
        "2026-07-01",
        "--granularity",
        "month",
        "--wait",
        "--timeout",
        "60",
        "--json",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    assert data["state"] == "done"
    assert len(data["buckets"]) == 6  # --to is exclusive
    assert data["buckets"][0]["periodFrom"] == "2026-01-01T00:00:00Z"
    assert data["buckets"][-1]["periodTo"] == "2026-07-01T00:00:00Z"
    assert set(data["totals"]) == set(OSAI_FIELD_TO_COLUMN)
    training = sum(b["totals"]["totalTrainingSeconds8GB"] for b in data["buckets"])
    assert data["totals"]["totalTrainingSeconds8GB"] == training
    assert all(b["osaiReportId"] for b in data["buckets"])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_wait_exits_non_zero_unless_the_report_is_done(worker, use_sandbox):
    user = make_user("cli")
    make_connection(user, "Main", token="osai-sandbox-cli-fail")
    use_sandbox.faults(report_error=True)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "generate_report",
            "--user",
            "cli",
            "--from",
            "2026-01-01",
            "--to",
            "2026-02-01",
            "--granularity",
            "total",
            "--wait",
            "--timeout",
            "60",
            stdout=out,
        )
    assert exit_info.value.code == 1
    assert "failed" in out.getvalue()


def _last_quarter(now: datetime) -> tuple[datetime, datetime]:
    this_quarter = utc_midnight(now.date()).replace(day=1, month=3 * ((now.month - 1) // 3) + 1)
    return this_quarter - relativedelta(months=3), this_quarter


def _direct(sandbox: Any, token: str, period: tuple[datetime, datetime], flags: dict[str, bool]):
    """OSAI (the sandbox) asked directly for one report over the whole period."""
    client = OsaiClient(sandbox.api_url, token, sandbox=True)
    created = client.create_report(*period, to_osai_flags(flags))
    return wait_until(lambda: (s := client.get_report(created.id)).is_done and s.totals, 30)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_after_tracking_last_quarter_by_week_asks_osai_nothing_and_matches_osai(
    worker, use_sandbox, settings
):
    """D5 (roll-ups): once tracking holds last quarter's days, `generate_report` of that
    quarter by week (and of two categories in total) finishes at once from held days, with no
    new OSAI report, and its totals equal OSAI's own report of the quarter."""
    token = "osai-sandbox-cli-rollup"
    make_connection(make_user("cli"), "Main", token=token)
    quarter = _last_quarter(timezone.now())
    quarter_days = split_period(*quarter, Granularity.DAY)
    # Tracking holds every day since the previous quarter began, as in production (the tests'
    # default window is smaller), and a single month, to keep the test short.
    settings.OSAI_HELD_DAYS_SINCE = "quarter"
    settings.OSAI_HELD_MONTHS = 1
    call_command("track", "--user", "cli", "--wait", "--timeout", "300", stdout=io.StringIO())

    def generate(*args: str) -> dict[str, Any]:
        out = io.StringIO()
        call_command(
            "generate_report",
            "--user",
            "cli",
            "--from",
            f"{quarter[0]:%Y-%m-%d}",
            "--to",
            f"{quarter[1]:%Y-%m-%d}",
            *args,
            "--wait",
            "--timeout",
            "30",
            "--json",
            stdout=out,
        )
        data: dict[str, Any] = json.loads(out.getvalue())
        return data

    creates = use_sandbox.calls("POST /api/Reports")
    weekly = generate("--granularity", "week")
    two = generate("--granularity", "total", "--flags", "datasets,models")
    assert use_sandbox.calls("POST /api/Reports") == creates  # no new OSAI report

    assert weekly["state"] == "done"
    assert weekly["sources"] == f"{len(quarter_days)} held days"
    assert [p["periodFrom"] for p in weekly["periods"]] == [
        utc_z(start) for start, _ in split_period(*quarter, Granularity.WEEK)
    ]
    assert all(b["held"] for b in weekly["buckets"])
    assert weekly["totals"] == _direct(use_sandbox, token, quarter, all_flags())

    two_flags = {**all_flags(False), "include_datasets": True, "include_models": True}
    assert two["state"] == "done" and len(two["periods"]) == 1
    assert two["totals"] == _direct(use_sandbox, token, quarter, two_flags)
    assert two["totals"]["totalDeviceRentalSeconds"] == 0
