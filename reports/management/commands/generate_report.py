"""Request a report from scripts and cron: the same report the page would create.

    manage.py generate_report --user U --connection L --from 2026-01-01 --to 2026-07-01 \
        --granularity month [--flags datasets,models] [--wait] [--json]
    manage.py generate_report --team T --user ADMIN --preset last_month [--wait] [--json]

With `--team`, the report covers every working connection the team's members share with it,
and `--user` must be one of its admins (the report is theirs, as on the team page).

`--to` is exclusive, like OSAI's periodTo. `--wait` needs a running worker (`make run` or
`manage.py qcluster`); it exits 0 only if the report is done. `--json` prints the report, its
buckets and totals under OSAI's own field names in OSAI's raw units (seconds, KB-minutes,
counts), so scripts can reconcile them with OSAI.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from reports.management import cli
from reports.models import Report, Team
from reports.pages.report import report_json
from reports.periods import PRESETS, preset_period
from reports.pipeline import report_requests
from reports.teams import team_reports


class Command(BaseCommand):
    help = "Request an OSAI usage report, optionally wait for it and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="username of the owner")
        parser.add_argument("--team", help="team name: a team report (--user is its admin)")
        cli.add_connection_argument(
            parser, "connection label (repeatable); omit for all of the user's connections"
        )
        parser.add_argument("--from", dest="date_from", help="first day (UTC), e.g. 2026-01-01")
        parser.add_argument("--to", dest="date_to", help="end day, EXCLUSIVE (UTC)")
        parser.add_argument("--preset", choices=sorted(PRESETS), help="instead of --from/--to")
        cli.add_usage_arguments(parser)
        parser.add_argument("--wait", action="store_true", help="wait for a final state")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to --wait")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = cli.user_named(options["user"])
        team = None
        if options["team"]:
            team = Team.objects.filter(name=options["team"]).first()
            if team is None:
                raise CommandError(f"No team {options['team']!r}.")
            if options["connection"]:
                raise CommandError("--connection goes with a personal report, not --team.")

        connections = cli.connections_labelled(owner, options["connection"])

        flags = cli.parse_flags(options["flags"])

        now = timezone.now()
        if options["preset"]:
            start, end = preset_period(options["preset"], now)
        elif options["date_from"] and options["date_to"]:
            start = cli.parse_date(options["date_from"], "--from")
            end = cli.parse_date(options["date_to"], "--to")
        else:
            raise CommandError("Give --from and --to (exclusive), or --preset.")

        request = {
            "period_start": start,
            "period_end": end,
            "granularity": options["granularity"],
            "flags": flags,
            "preset": options["preset"] or "",
            "now": now,
        }
        try:
            if team is not None:
                report = team_reports.team_report_request(team=team, admin=owner, **request)
            else:
                report = report_requests.report_request(
                    owner=owner, connections=connections, **request
                )
        except report_requests.ReportRequestError as exc:
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
            self.stdout.write(json.dumps(report_json(report), indent=2))
        else:
            self.stdout.write(
                f"Report {report.pk} is {report.get_state_display().lower()} "
                f"({report.buckets_done} of {report.buckets_total} buckets done)."
            )
            if report.error_message:
                self.stdout.write(report.error_message)
            for skipped in report.skipped_connections:
                self.stdout.write(
                    f"Left out: {skipped['owner']} / {skipped['label']} ({skipped['reason']})."
                )
        if options["wait"] and report.state != Report.State.DONE:
            sys.exit(1)
