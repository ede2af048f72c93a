"""Request a report from scripts and cron: the same report the page would create.

    manage.py generate_report --user U --connection L --from 2026-01-01 --to 2026-07-01 \
        --granularity month [--flags datasets,models] [--wait] [--json]

`--to` is exclusive, like OSAI's periodTo. `--wait` needs a running worker (`make run` or
`manage.py qcluster`); it exits 0 only if the report is done. `--json` prints the report, its
buckets and totals under OSAI's own field names in OSAI's raw units (seconds, KB-minutes,
counts), so scripts can reconcile them with OSAI.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from reports import services
from reports.models import FLAG_FIELDS, OSAI_TOTAL_FIELDS, Bucket, Connection, Granularity, Report
from reports.periods import PRESETS, preset_period

FLAG_NAMES = {name.removeprefix("include_"): name for name in FLAG_FIELDS}


def _parse_date(value: str, option: str) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} must be a date like 2026-01-01, not {value!r}.") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def report_as_json(report: Report) -> dict[str, Any]:
    """The report, its buckets and its totals (OSAI field names, raw units)."""
    buckets = list(
        Bucket.objects.filter(report_buckets__report=report)
        .select_related("connection")
        .order_by("period_start", "connection__label")
    )
    totals: dict[str, int | float] = dict.fromkeys(OSAI_TOTAL_FIELDS, 0)
    last_period_end = max(
        (b.period_end for b in buckets if b.state == Bucket.State.DONE), default=None
    )
    for bucket in buckets:
        if bucket.state != Bucket.State.DONE:
            continue
        for field, value in bucket.totals().items():
            # Images existing are a state at the end of a period, not a flow: take the
            # last period's counts only.
            if field == "totalExistingImagesNum" and bucket.period_end != last_period_end:
                continue
            totals[field] += value or 0
    return {
        "id": report.pk,
        "state": report.state,
        "granularity": report.granularity,
        "periodFrom": report.period_start.isoformat().replace("+00:00", "Z"),
        "periodTo": report.period_end.isoformat().replace("+00:00", "Z"),
        "flags": report.flags(),
        "connections": [c.label for c in report.connections.order_by("label")],
        "buckets_total": report.buckets_total,
        "buckets_done": report.buckets_done,
        "buckets_failed": report.buckets_failed,
        "requested_at": report.requested_at.isoformat(),
        "finished_at": report.finished_at.isoformat() if report.finished_at else None,
        "error": report.error_message or None,
        "totals": totals,
        "buckets": [
            {
                "connection": b.connection.label,
                "periodFrom": b.period_start.isoformat().replace("+00:00", "Z"),
                "periodTo": b.period_end.isoformat().replace("+00:00", "Z"),
                "preliminary": not b.is_closed,
                "state": b.state,
                "osaiReportId": b.osai_report_id,
                "osaiCreationTime": b.osai_creation_time_raw or None,
                "error": b.error_message or None,
                "totals": b.totals() if b.state == Bucket.State.DONE else None,
            }
            for b in buckets
        ],
    }


class Command(BaseCommand):
    help = "Request an OSAI usage report, optionally wait for it and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="username of the owner")
        parser.add_argument(
            "--connection",
            action="append",
            default=[],
            help="connection label (repeatable); omit for all of the user's connections",
        )
        parser.add_argument("--from", dest="date_from", help="first day (UTC), e.g. 2026-01-01")
        parser.add_argument("--to", dest="date_to", help="end day, EXCLUSIVE (UTC)")
        parser.add_argument("--preset", choices=sorted(PRESETS), help="instead of --from/--to")
        parser.add_argument("--granularity", default=Granularity.MONTH, choices=Granularity.values)
        parser.add_argument(
            "--flags",
            default=",".join(FLAG_NAMES),
            help=f"comma-separated categories (default all): {', '.join(FLAG_NAMES)}",
        )
        parser.add_argument("--wait", action="store_true", help="wait for a final state")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to --wait")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            owner = user_model.objects.get(username=options["user"])
        except user_model.DoesNotExist:
            raise CommandError(f"No user {options['user']!r}.") from None

        connections = Connection.objects.filter(owner=owner)
        if options["connection"]:
            labels = options["connection"]
            connections = connections.filter(label__in=labels)
            missing = set(labels) - set(connections.values_list("label", flat=True))
            if missing:
                raise CommandError(f"{owner.username} has no connection {sorted(missing)}.")

        names = [n.strip() for n in options["flags"].split(",") if n.strip()]
        unknown = [n for n in names if n not in FLAG_NAMES]
        if unknown:
            raise CommandError(f"Unknown flags {unknown}; choose from {list(FLAG_NAMES)}.")
        flags = {FLAG_NAMES[n]: True for n in names}

        now = timezone.now()
        if options["preset"]:
            start, end = preset_period(options["preset"], now)
        elif options["date_from"] and options["date_to"]:
            start = _parse_date(options["date_from"], "--from")
            end = _parse_date(options["date_to"], "--to")
        else:
            raise CommandError("Give --from and --to (exclusive), or --preset.")

        try:
            report = services.report_request(
                owner=owner,
                connections=connections,
                period_start=start,
                period_end=end,
                granularity=options["granularity"],
                flags=flags,
                preset=options["preset"] or "",
                now=now,
            )
        except services.ReportRequestError as exc:
            raise CommandError(str(exc)) from None

        if not options["json"]:
            self.stderr.write(
                f"Report {report.pk}: {report.buckets_total} buckets "
                f"({report.buckets_done} reused)."
            )
        if options["wait"]:
            deadline = time.monotonic() + options["timeout"]
            while not report.is_terminal and time.monotonic() < deadline:
                time.sleep(0.5)
                report.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(report_as_json(report), indent=2))
        else:
            self.stdout.write(
                f"Report {report.pk} is {report.get_state_display().lower()} "
                f"({report.buckets_done} of {report.buckets_total} buckets done)."
            )
            if report.error_message:
                self.stdout.write(report.error_message)
        if options["wait"] and report.state != Report.State.DONE:
            sys.exit(1)
