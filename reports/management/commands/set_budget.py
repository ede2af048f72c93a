"""Set a monthly budget from scripts, as on the budget page.

    manage.py set_budget --user U [--connection LABEL | --team NAME] --monthly AMOUNT
        [--thresholds 50,80,100] [--forecast] [--email ADDRESS]... [--webhook URL
        --webhook-secret-file PATH]

Without --connection or --team the budget covers all of the person's connections. For a team
the person must be one of its admins. Setting a budget again changes it.

The webhook's secret is read from a file, or from standard input with
`--webhook-secret-file -` (asked for without echo at a terminal): on the command line it would
show in `ps` and in the shell's history.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from reports.management import cli
from reports.management.cli import AuditedCommand
from reports.models import Budget, Connection, Team
from reports.spend import budgets


class Command(AuditedCommand):
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
        parser.add_argument(
            "--webhook-secret-file",
            metavar="PATH",
            default=None,
            help="a file holding the secret that signs them; - reads standard input",
        )
        # Refused with a pointer to the above: a secret in argv shows in ps and the history.
        parser.add_argument("--webhook-secret", default=None, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["webhook_secret"] is not None:
            raise CommandError(
                "--webhook-secret puts the secret in the process list and the shell's history; "
                "give it with --webhook-secret-file PATH, or - to read standard input."
            )
        secret = _read_secret(options["webhook_secret_file"])
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
                webhook_secret=secret,
            )
        except budgets.BudgetError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Budget {budget.pk}: {budget.amount} a month, thresholds {budget.thresholds}."
        )


def _read_secret(path: str | None) -> str | None:
    """The secret from a file or standard input (its last line break dropped); None keeps the
    budget's current secret."""
    if path is None:
        return None
    if path == "-":
        secret = getpass.getpass("Webhook secret: ") if sys.stdin.isatty() else sys.stdin.read()
    else:
        try:
            secret = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read the webhook secret from {path}: {exc}") from None
    secret = secret.rstrip("\r\n")
    if not secret:
        raise CommandError("The webhook secret is empty.")
    return secret
