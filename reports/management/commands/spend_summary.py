"""What the overview shows, for scripts: `manage.py spend_summary --user U [--team NAME] --json`.

Money is printed as strings (exact decimals). With --team, the team's month (the user's role
in it must see its spend: an admin or a viewer).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports.management import cli
from reports.pages.overview import overview_page, spend_summary, team_overview


class Command(BaseCommand):
    help = "Print this month's spend, forecast and budgets, as the overview shows them."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_spend_view_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.user_named(options["user"])
        if options["team"]:
            team = cli.team_whose_spend_they_see(user, options["team"])
            summary = spend_summary(team_overview(team))
        else:
            summary = spend_summary(overview_page(user))
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        currency = summary["currency"]
        self.stdout.write(f"Month to date: {currency} {summary['month_to_date_cost']}")
        if summary["previous_month_same_days_cost"] is not None:
            self.stdout.write(
                f"Same days of last month: {currency} {summary['previous_month_same_days_cost']}"
            )
        if summary["forecast_cost"] is not None:
            self.stdout.write(
                f"Forecast: {currency} {summary['forecast_cost']} "
                f"({summary['forecast_low']} to {summary['forecast_high']})"
            )
        for budget in summary["budgets"]:
            self.stdout.write(
                f"Budget {budget['name']}: {budget['percent']} % of {budget['amount']}, "
                f"{budget['remaining']} left"
            )
