"""Set a monthly budget from scripts, as on the budget page.

    manage.py set_budget --user U [--connection LABEL | --team NAME] --monthly AMOUNT
        [--thresholds 50,80,100] [--forecast] [--email ADDRESS]... [--webhook URL
        --webhook-secret S]

Without --connection or --team the budget covers all of the person's connections. For a team
the person must be one of its admins. Setting a budget again changes it.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reports.management import cli
from reports.models import Budget, Connection, Team
from reports.spend import budgets


class Command(BaseCommand):
    help = "Set the monthly budget of a person, one of their connections, or a team."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="who sets it (and whose it is)")
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--connection", help="label of one of the user's connections")
        scope.add_argument("--team", help="name of a team the user administers")
        parser.add_argument("--monthly", required=True, help="the monthly amount, e.g. 250")
        parser.add_argument("--thresholds", default="50,80,100", help="percentages (50,80,100)")
        parser.add_argument("--forecast", action="store_true", help="also alert on the forecast")
        parser.add_argument("--email", action="append", default=[], help="repeatable")
        parser.add_argument("--webhook", default="", help="https URL for signed JSON alerts")
        parser.add_argument("--webhook-secret", default=None, help="the secret that signs them")

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.user_named(options["user"])
        connection = team = None
        scope = Budget.Scope.PERSON
        if options["connection"]:
            scope = Budget.Scope.CONNECTION
            connection = Connection.objects.filter(owner=user, label=options["connection"]).first()
            if connection is None:
                raise CommandError(
                    f"{user.get_username()} has no connection {options['connection']!r}."
                )
        elif options["team"]:
            scope = Budget.Scope.TEAM
            team = Team.objects.filter(name=options["team"]).first()
            if team is None:
                raise CommandError(f"No team {options['team']!r}.")
        try:
            budget = budgets.budget_set(
                actor=user,
                scope=scope,
                amount=options["monthly"],
                connection=connection,
                team=team,
                thresholds=options["thresholds"].split(","),
                on_forecast=options["forecast"],
                emails=options["email"],
                webhook_url=options["webhook"],
                webhook_secret=options["webhook_secret"],
            )
        except budgets.BudgetError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Budget {budget.pk}: {budget.amount} a month, thresholds {budget.thresholds}."
        )
