"""The anomalies a person may see, for scripts: `manage.py anomalies --user U [--team NAME]
[--json]` (reports/spend/anomalies.py, N1-N4).

Without --team: the anomalies of the user's own connections, priced in the default book.
With --team: those of the connections that count for the team (M1), in the team's book, if
the user's role may see the team's spend (an admin or a viewer). Exactly the rows of the
Anomalies page (`/anomalies/`, `?team=`): reports/pages/anomalies.py.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports.management import cli
from reports.pages import anomalies


class Command(BaseCommand):
    help = "List the anomalies (usage spikes, idle storage) of a person's or a team's connections."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_spend_view_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.user_named(options["user"])
        team = cli.team_whose_spend_they_see(user, options["team"]) if options["team"] else None
        # The Anomalies page's own selector: what it lists, in its order (N5).
        scope = anomalies.scope_of(user, team.pk if team else None)
        assert scope is not None  # the team's spend is theirs to see
        rows = anomalies.rows(scope)
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No anomalies.")
        for row in rows:
            note = f" ({str(row['feedback']).replace('_', ' ')})" if row["feedback"] else ""
            self.stdout.write(f"{row['day']}  {row['kind']}  {row['cause']}{note}")
