"""Write usage (and cost) as CSV to stdout, from finished buckets already in the database.

    manage.py export_usage (--team T | --user U [--connection L]) --from 2026-01-01 \
        --to 2026-07-01 --granularity month [--flags datasets,models] [--cost]

The columns are those of the web export (reports/spend/exports.py); --team adds the member column,
and without --cost the cost columns are left out. `--to` is exclusive. Closed periods use their
finished bucket; the period that contains now uses its latest finished (preliminary) bucket,
and periods in the future are skipped. Nothing is asked of OSAI:
if a bucket of some period is missing or unfinished, the command lists them on stderr, suggests
`manage.py generate_report ... --wait` to fill them in, and exits with status 1.
"""

from __future__ import annotations

import operator
import shlex
from datetime import datetime
from functools import reduce
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q, QuerySet
from django.utils import timezone

from reports.formatting import utc_z
from reports.management import cli
from reports.models import Bucket, Connection, PriceBook, Team
from reports.periods import count_buckets, split_period
from reports.spend import exports, pricing
from reports.teams import sharing

MAX_PERIODS = 5000
MISSING_SHOWN = 20


class Command(BaseCommand):
    help = "Export usage (and cost with --cost) of finished buckets as CSV to stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--team", help="team name (or id): its members' shared connections")
        who.add_argument("--user", help="username: the user's own connections")
        cli.add_connection_argument(
            parser, "with --user: connection label (repeatable); default all of the user's"
        )
        parser.add_argument("--from", dest="date_from", required=True, help="first day (UTC)")
        parser.add_argument("--to", dest="date_to", required=True, help="end day, EXCLUSIVE")
        cli.add_usage_arguments(parser)
        parser.add_argument("--cost", action="store_true", help="add the cost columns")
        parser.add_argument(
            "--price-book", help="price book name (default: the default price book)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        start = cli.parse_date(options["date_from"], "--from")
        end = cli.parse_date(options["date_to"], "--to")
        if end <= start:
            raise CommandError("--to must be after --from (it is exclusive).")
        granularity = options["granularity"]
        if count_buckets(start, end, granularity) > MAX_PERIODS:
            raise CommandError("Too many periods: choose a coarser --granularity.")
        flags = cli.parse_flags(options["flags"])
        team = self._team(options["team"]) if options["team"] else None
        connections = self._connections(team, options["user"], options["connection"])
        price_book = self._price_book(options["price_book"]) if options["cost"] else None

        now = timezone.now()
        if start >= now:
            raise CommandError("--from is in the future: OSAI reports past usage.")
        periods = split_period(start, end, granularity)
        buckets = self._buckets(connections, periods, flags, now)
        found = {
            (b.connection_id, b.period_start) for b in buckets.only("connection", "period_start")
        }
        missing = [
            (c, s, e) for c in connections for s, e in periods if s < now and (c.pk, s) not in found
        ]
        if missing:
            self._report_missing(missing, options, granularity)
            raise CommandError(
                f"{len(missing)} of {len(periods) * len(connections)} buckets are not finished "
                "in the database; nothing was written."
            )
        for line in exports.csv_lines(
            exports.export_rows(
                buckets, team=team is not None, with_cost=options["cost"], price_book=price_book
            )
        ):
            self.stdout.write(line, ending="")

    def _buckets(
        self,
        connections: list[Connection],
        periods: list[tuple[datetime, datetime]],
        flags: dict[str, bool],
        now: datetime,
    ) -> QuerySet[Bucket]:
        """Finished buckets of the periods: closed ones exactly; for the period that contains
        now, the latest finished (preliminary) bucket that starts with it, if there is one."""
        done = Bucket.objects.filter(connection__in=connections, state=Bucket.State.DONE, **flags)
        closed = [(s, e) for s, e in periods if e <= now]
        selected = Q(pk__in=[])
        if closed:
            selected |= Q(is_closed=True) & reduce(
                operator.or_, (Q(period_start=s, period_end=e) for s, e in closed)
            )
        open_start = next((s for s, e in periods if s < now < e), None)
        if open_start is not None:
            latest: dict[int, int] = {}
            for pk, connection_id in (
                done.filter(is_closed=False, period_start=open_start)
                .order_by("period_end", "pk")
                .values_list("pk", "connection_id")
            ):
                latest[connection_id] = pk  # the last one wins: the most recent figures
            selected |= Q(pk__in=latest.values())
        return done.filter(selected)

    def _team(self, value: str) -> Team:
        team = Team.objects.filter(name=value).first()
        if team is None and value.isdigit():
            team = Team.objects.filter(pk=int(value)).first()
        if team is None:
            raise CommandError(f"No team {value!r}.")
        return team

    def _connections(
        self, team: Team | None, username: str | None, labels: list[str]
    ) -> list[Connection]:
        if team is not None:
            if labels:
                raise CommandError("--connection goes with --user, not --team.")
            connections = list(sharing.team_shared_connections(team))
            if not connections:
                raise CommandError(f"No member shares a connection with the team {team.name!r}.")
            return connections
        owner = cli.user_named(username or "")
        queryset = cli.connections_labelled(owner, labels)
        connections = list(queryset.select_related("owner").order_by("label"))
        if not connections:
            raise CommandError(f"{username} has no connections.")
        return connections

    def _price_book(self, name: str | None) -> PriceBook:
        book = PriceBook.objects.filter(name=name).first() if name else pricing.default_price_book()
        if book is None:
            raise CommandError(
                f"No price book {name!r}." if name else "No default price book: give --price-book."
            )
        return book

    def _report_missing(
        self,
        missing: list[tuple[Connection, datetime, datetime]],
        options: dict[str, Any],
        granularity: str,
    ) -> None:
        self.stderr.write("These buckets are missing or unfinished in the database:")
        for connection, s, e in missing[:MISSING_SHOWN]:
            self.stderr.write(
                f"  {connection.owner.get_username()} / {connection.label}: "
                f"{utc_z(s)} .. {utc_z(e)}"
            )
        if len(missing) > MISSING_SHOWN:
            self.stderr.write(f"  … and {len(missing) - MISSING_SHOWN} more.")
        self.stderr.write("Fill them in with (needs a running worker), then export again:")
        pairs = sorted({(c.owner.get_username(), c.label) for c, _, _ in missing})
        for username, label in pairs:
            self.stderr.write(
                f"  python manage.py generate_report --user {_quote(username)} "
                f"--connection {_quote(label)} --from {options['date_from']} "
                f"--to {options['date_to']} --granularity {granularity} "
                f"--flags {options['flags']} --wait"
            )


def _quote(text: str) -> str:
    """Shell-quote a label for a command line a person will copy."""
    return shlex.quote(text)
