"""generate_report: the same report the page would make, for scripts and cron."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from reports.metrics import OSAI_FIELD_TO_COLUMN
from reports.models import Report
from tests.factories import make_connection, make_user


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
