"""Write usage (and cost) as CSV to stdout, from finished buckets already in the database.

    manage.py export_usage (--team T | --user U [--connection L])
        (--from 2026-01-01 --to 2026-07-01 | --preset last_quarter)
        [--granularity month] [--flags datasets,models] [--cost] [--price-book NAME]
        [--group member|connection]

`--to` is exclusive; `--preset` (reports/periods.py PRESETS: this_month, last_month,
last_quarter …) instead of --from/--to. Nothing is ever asked of OSAI.

Without --group: a row per bucket, in the columns of the web export (reports/spend/exports.py);
--team adds the member column, and without --cost the cost columns are left out. Closed
periods use their finished bucket; the period that contains now uses its latest finished
(preliminary) bucket, and periods in the future are skipped. If a bucket of some period is
missing or unfinished, the command lists them on stderr, suggests
`manage.py generate_report ... --wait` to fill them in, and exits with status 1.

With --group member|connection: a row per member (or per member's connection) and period of
--granularity, from held data only (what tracking keeps: closed days and months, and today so
far) and its cost as the spend ledger holds it, in the team's price book for --team (else the
default one, or --price-book): the sums the pages read, so a member's total is the team
page's. A calendar month that is held whole counts its held month, anything else its held
days. What is not held is not counted: each row says how many connection-days are missing
(`missing_days`, `complete`), and stderr says which days of the period are not held, per
connection. The usage of categories --flags leaves out is 0, and so is their cost.
"""

from __future__ import annotations

import operator
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q, QuerySet
from django.utils import timezone

from reports.formatting import utc_z
from reports.management import cli
from reports.metrics import METRICS, PRICED, STATE_COLUMNS, USAGE_COLUMNS, columns_off
from reports.models import Bucket, Connection, LedgerEntry, PriceBook, Team
from reports.periods import (
    PRESETS,
    count_buckets,
    day_number,
    preset_period,
    split_period,
    utc_midnight,
)
from reports.spend import exports, ledger, pricing
from reports.spend.monthly import price_book_of
from reports.spend.period_spend import calendar_months, is_whole_month, month_that_counts
from reports.teams import sharing

MAX_PERIODS = 5000
MISSING_SHOWN = 20


class Command(BaseCommand):
    help = (
        "Export usage (and cost with --cost) of finished buckets as CSV to stdout; with --group, "
        "a row per member or connection and period from held data and the spend ledger."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--team", help="team name (or id): its members' shared connections")
        who.add_argument("--user", help="username: the user's own connections")
        cli.add_connection_argument(
            parser, "with --user: connection label (repeatable); default all of the user's"
        )
        parser.add_argument("--from", dest="date_from", help="first day (UTC)")
        parser.add_argument("--to", dest="date_to", help="end day, EXCLUSIVE")
        parser.add_argument(
            "--preset", choices=list(PRESETS), help="a period preset, instead of --from/--to"
        )
        cli.add_usage_arguments(parser)
        parser.add_argument(
            "--group",
            choices=GROUPS,
            help="a row per member (or connection) and period, from held data and the spend "
            "ledger (always with cost)",
        )
        parser.add_argument("--cost", action="store_true", help="add the cost columns")
        parser.add_argument(
            "--price-book",
            help="price book name (default: the default price book; with --group and --team, "
            "the team's)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        start, end = self._period(options, now)
        granularity = options["granularity"]
        if count_buckets(start, end, granularity) > MAX_PERIODS:
            raise CommandError("Too many periods: choose a coarser --granularity.")
        flags = cli.parse_flags(options["flags"])
        team = self._team(options["team"]) if options["team"] else None
        connections = self._connections(team, options["user"], options["connection"])
        if start >= now:
            raise CommandError("--from is in the future: OSAI reports past usage.")
        if options["group"]:
            book_name = options["price_book"]
            book = self._price_book(book_name) if book_name or team is None else None
            book = book or price_book_of(team)
            if book is None:
                raise CommandError("No default price book: give --price-book.")
            self._grouped(connections, book, start, end, granularity, flags, options, now)
            return
        price_book = self._price_book(options["price_book"]) if options["cost"] else None
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

    def _period(self, options: dict[str, Any], now: datetime) -> tuple[datetime, datetime]:
        """--preset, or --from and --to (exclusive), never both."""
        dates = (options["date_from"], options["date_to"])
        if options["preset"]:
            if any(dates):
                raise CommandError("Give --preset or --from/--to, not both.")
            return preset_period(options["preset"], now)
        if not all(dates):
            raise CommandError("Give --from and --to (or --preset).")
        start = cli.parse_date(options["date_from"], "--from")
        end = cli.parse_date(options["date_to"], "--to")
        if end <= start:
            raise CommandError("--to must be after --from (it is exclusive).")
        return start, end

    def _grouped(
        self,
        connections: list[Connection],
        book: PriceBook,
        start: datetime,
        end: datetime,
        granularity: str,
        flags: dict[str, bool],
        options: dict[str, Any],
        now: datetime,
    ) -> None:
        """--group: a row per group and period, from held data only (see the docstring)."""
        by_connection = options["group"] == "connection"
        periods = [(s, min(e, now)) for s, e in split_period(start, end, granularity) if s < now]
        held = held_usage(connections, book, periods, flags, now)
        columns = ["period_start", "period_end", "preliminary", "member"]
        columns += ["connection"] if by_connection else []
        columns += [m.csv_header for m in METRICS]
        columns += [*(m.cost_header for m in PRICED), "cost_total", "currency", "price_book"]
        columns += ["held_months", "held_days", "missing_days", "complete"]
        rows: list[list[str]] = [columns]
        for period in periods:
            groups: dict[tuple[str, ...], list[HeldPart]] = {}
            for connection in connections:
                member = connection.owner.get_username()
                key: tuple[str, ...] = (member, connection.label) if by_connection else (member,)
                groups.setdefault(key, []).append(held[(connection.pk, period)])
            for name in sorted(groups):
                parts = groups[name]
                usage = {c: sum(p.usage[c] for p in parts) for c in USAGE_COLUMNS}
                units = {f: sum(p.units[f] for p in parts) for f in UNIT_FIELDS}
                missing = sum(len(p.missing) for p in parts)
                row = [
                    exports.cell(period[0]),
                    exports.cell(period[1]),
                    exports.cell(any(p.preliminary for p in parts)),
                    *(exports.cell(k) for k in name),
                    *(exports.display_number(m.column, usage[m.column]) for m in METRICS),
                    *(exports.number(ledger.from_units(units[f])) for f in UNIT_FIELDS),
                    exports.cell(book.currency),
                    exports.cell(book.name),
                    exports.number(sum(p.months for p in parts)),
                    exports.number(sum(p.days for p in parts)),
                    exports.number(missing),
                    exports.cell(missing == 0),
                ]
                rows.append(row)
        for line in exports.csv_lines(rows):
            self.stdout.write(line, ending="")
        self._report_not_held(connections, periods, held, end, now)

    def _report_not_held(
        self,
        connections: list[Connection],
        periods: list[tuple[datetime, datetime]],
        held: dict[tuple[int, tuple[datetime, datetime]], HeldPart],
        end: datetime,
        now: datetime,
    ) -> None:
        """On stderr: which days of the period are not held, per connection (not counted)."""
        lines = []
        for connection in connections:
            days = sorted(day for p in periods for day in held[(connection.pk, p)].missing)
            for first, last in day_ranges(days):
                count = (last - first).days + 1
                lines.append(
                    f"  {connection.owner.get_username()} / {connection.label}: "
                    f"{first:%Y-%m-%d} .. {last:%Y-%m-%d} ({count} day{'s' if count > 1 else ''})"
                )
        if lines:
            self.stderr.write("Not held, so not counted (missing_days in the rows):")
            for line in lines[:MISSING_SHOWN]:
                self.stderr.write(line)
            if len(lines) > MISSING_SHOWN:
                self.stderr.write(f"  … and {len(lines) - MISSING_SHOWN} more.")
            self.stderr.write(
                "Tracking holds what it keeps (manage.py track); generate_report fetches the rest."
            )
        else:
            self.stderr.write("Every day of the period is held.")
        if end > now:
            self.stderr.write(f"From {utc_z(now)} on is the future: not exported.")

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
            period = (
                f"--preset {options['preset']}"
                if options["preset"]
                else f"--from {options['date_from']} --to {options['date_to']}"
            )
            self.stderr.write(
                f"  python manage.py generate_report --user {_quote(username)} "
                f"--connection {_quote(label)} {period} --granularity {granularity} "
                f"--flags {options['flags']} --wait"
            )


# --- Held data per connection and period (--group) ------------------------------------------

GROUPS = ("member", "connection")
UNIT_FIELDS = (*ledger.COST_FIELDS, "cost_total")  # in the order of the cost columns
ONE_DAY = timedelta(days=1)


@dataclass
class HeldPart:
    """One connection's held part of one period: usage (raw units, masked) and cost in whole
    ledger units, how many held months and days it rests on, and the days not held."""

    usage: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE_COLUMNS, 0.0))
    units: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNIT_FIELDS, 0))
    months: int = 0
    days: int = 0
    preliminary: bool = False
    missing: list[datetime] = field(default_factory=list)
    latest_end: datetime | None = None  # of the bucket whose state (images existing) counts


@dataclass
class _Held:
    end: datetime
    preliminary: bool
    units: dict[str, int]
    usage: dict[str, float]


def held_usage(
    connections: list[Connection],
    book: PriceBook,
    periods: list[tuple[datetime, datetime]],
    flags: dict[str, bool],
    now: datetime,
) -> dict[tuple[int, tuple[datetime, datetime]], HeldPart]:
    """Per connection and period, what held buckets say, as the spend ledger prices them in
    `book`: a calendar month held whole counts its month, anything else its held days (a
    closed day, or today's latest open-day bucket). One query for the ledger rows with their
    buckets' usage (after writing any the ledger lacks); nothing is asked of OSAI."""
    ids = [c.pk for c in connections]
    result: dict[tuple[int, tuple[datetime, datetime]], HeldPart] = {}
    if not periods:
        return result
    first, last = periods[0][0], periods[-1][1]
    ledger.ledger_fill(ids, [book], since=first, now=now)
    today = day_number(utc_midnight(now.date()))
    usage_fields = [f"bucket__{c}" for c in USAGE_COLUMNS]
    months: dict[tuple[int, datetime], _Held] = {}
    days: dict[tuple[int, datetime], _Held] = {}
    for values in (
        LedgerEntry.objects.filter(
            Q(preliminary=False) | Q(span=LedgerEntry.Span.DAY, day=today),
            price_book=book,
            connection_id__in=ids,
            period_start__gte=first,
            period_start__lt=last,
        )
        .order_by("bucket_id")
        .values_list(
            "connection_id",
            "span",
            "period_start",
            "period_end",
            "preliminary",
            *UNIT_FIELDS,
            *usage_fields,
        )
    ):
        connection_id, span, start, end, preliminary = values[:5]
        units = values[5 : 5 + len(UNIT_FIELDS)]
        raw = values[5 + len(UNIT_FIELDS) :]
        into = months if span == LedgerEntry.Span.MONTH else days
        seen = into.get((connection_id, start))
        if seen is None:  # a bucket's first row (one per version of the book): its usage
            usage = {c: float(v or 0.0) for c, v in zip(USAGE_COLUMNS, raw, strict=True)}
            seen = into[(connection_id, start)] = _Held(
                end, preliminary, dict.fromkeys(UNIT_FIELDS, 0), usage
            )
        for name, value in zip(UNIT_FIELDS, units, strict=True):
            seen.units[name] += value or 0
    off = set(columns_off(flags))
    off_units = {f"cost_{c}" for c in off}
    for connection_id in ids:
        for period in periods:
            part = result[(connection_id, period)] = HeldPart()
            for month_start, month_end in calendar_months(*period):
                starts = _day_starts(month_start, month_end)
                held_days = [days[(connection_id, d)] for d in starts if (connection_id, d) in days]
                whole = is_whole_month(month_start, month_end)
                month = months.get((connection_id, month_start)) if whole else None
                # The team page's rule; a whole month held is preferred, as a chart by month
                # prefers it: each row here is a period of the export's granularity.
                month = month_that_counts(month, len(held_days), len(starts), prefer_month=True)
                if month is not None:
                    part.months += 1
                    _add(part, month, off, off_units)
                    continue
                part.days += len(held_days)
                for held in held_days:
                    _add(part, held, off, off_units)
                part.missing += [d for d in starts if (connection_id, d) not in days]
    return result


def _day_starts(start: datetime, end: datetime) -> list[datetime]:
    """Where each UTC day of [start, end) begins within it (the first may be cut)."""
    starts = []
    cursor = start
    while cursor < end:
        starts.append(cursor)
        cursor = min(utc_midnight(cursor.date()) + ONE_DAY, end)
    return starts


def _add(part: HeldPart, held: _Held, off: set[str], off_units: set[str]) -> None:
    part.preliminary = part.preliminary or held.preliminary
    for column in USAGE_COLUMNS:
        if column in off:
            continue
        if column in STATE_COLUMNS:  # the state at the period's end: the latest bucket's
            if part.latest_end is None or held.end > part.latest_end:
                part.usage[column] = held.usage[column]
        else:
            part.usage[column] += held.usage[column]
    if part.latest_end is None or held.end > part.latest_end:
        part.latest_end = held.end
    for name in ledger.COST_FIELDS:
        if name not in off_units:
            part.units[name] += held.units[name]
    # The total as the ledger holds it; with categories left out, the sum of the others.
    if off_units:
        part.units["cost_total"] = sum(part.units[name] for name in ledger.COST_FIELDS)
    else:
        part.units["cost_total"] += held.units["cost_total"]


def day_ranges(days: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted days as runs of consecutive days: [(first, last), …]."""
    runs: list[tuple[datetime, datetime]] = []
    for day in days:
        if runs and day - runs[-1][1] == ONE_DAY:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _quote(text: str) -> str:
    """Shell-quote a label for a command line a person will copy."""
    return shlex.quote(text)
