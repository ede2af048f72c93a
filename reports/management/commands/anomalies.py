"""The anomalies a person may see, for scripts: `manage.py anomalies --user U [--team NAME]
[--json]` (reports/spend/anomalies.py, N1-N4).

Without --team: the anomalies of the user's own connections, priced in the default book.
With --team: those of the connections that count for the team (M1), in the team's book, if
the user's role may see the team's spend (an admin or a viewer).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports.management import cli
from reports.models import Connection
from reports.spend import anomalies, pricing


class Command(BaseCommand):
    help = "List the anomalies (usage spikes, idle storage) of a person's or a team's connections."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_spend_view_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.user_named(options["user"])
        if options["team"]:
            team = cli.team_whose_spend_they_see(user, options["team"])
            connections = Connection.objects.counting_for_team(team)
            book = team.price_book or pricing.default_price_book()
        else:
            connections = Connection.objects.filter(owner=user)
            book = pricing.default_price_book()
        rows = anomalies.listed(connections, book)
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No anomalies.")
        for row in rows:
            note = f" ({str(row['feedback']).replace('_', ' ')})" if row["feedback"] else ""
            self.stdout.write(f"{row['day']}  {row['kind']}  {row['cause']}{note}")
