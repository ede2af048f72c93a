"""What the management commands share: parsing people, dates and flags into clear errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet

from reports import audit
from reports.access import Capability, teams_where
from reports.metrics import FLAG_BY_CLI_NAME, FLAGS
from reports.models import AuditEntry, Connection, Granularity, Team

FLAGS_HELP = f"comma-separated categories (default all): {', '.join(FLAG_BY_CLI_NAME)}"
ALL_FLAGS = ",".join(FLAG_BY_CLI_NAME)


def user_named(username: str) -> Any:
    """The user with this username, or a CommandError that says there is none."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user {username!r}.")
    return user


def parse_date(value: str, option: str) -> datetime:
    """A YYYY-MM-DD option as UTC midnight."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} must be a date like 2026-01-01, not {value!r}.") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def parse_flags(text: str) -> dict[str, bool]:
    """`datasets,models` as all five flags: the named ones on, the others off."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FLAG_BY_CLI_NAME]
    if unknown or not names:
        raise CommandError(f"Unknown flags {unknown}; choose from {list(FLAG_BY_CLI_NAME)}.")
    chosen = {FLAG_BY_CLI_NAME[n].field for n in names}
    return {flag.field: flag.field in chosen for flag in FLAGS}


def add_usage_arguments(parser: CommandParser) -> None:
    """--granularity and --flags: how usage is split in time, and which kinds of it."""
    parser.add_argument("--granularity", default=Granularity.MONTH, choices=Granularity.values)
    parser.add_argument("--flags", default=ALL_FLAGS, help=FLAGS_HELP)


def add_connection_argument(parser: CommandParser, help: str) -> None:
    """--connection LABEL, repeatable (connections_labelled reads it)."""
    parser.add_argument("--connection", action="append", default=[], help=help)


def connections_labelled(owner: User, labels: list[str]) -> QuerySet[Connection]:
    """The owner's connections (those with these labels, if any are given), or a CommandError
    that names the labels the owner has no connection with."""
    connections = Connection.objects.filter(owner=owner)
    if labels:
        connections = connections.filter(label__in=labels)
        unknown = set(labels) - set(connections.values_list("label", flat=True))
        if unknown:
            raise CommandError(f"{owner.get_username()} has no connection {sorted(unknown)}.")
    return connections


def add_spend_view_arguments(parser: CommandParser) -> None:
    """--user, --team and --json: a person's view, or a team's they see the spend of."""
    parser.add_argument("--user", required=True)
    parser.add_argument("--team", help="a team whose spend the user sees")
    parser.add_argument("--json", action="store_true", help="print JSON")


def team_whose_spend_they_see(user: User, name: str) -> Team:
    """The team of that name whose spend this person's role may see (admins and viewers)."""
    team = teams_where(user, Capability.SEE_TEAM_SPEND).filter(name=name).first()
    if team is None:
        raise CommandError(f"{user.get_username()} is not an admin or viewer of {name!r}.")
    return team


class AuditedCommand(BaseCommand):
    """A command whose changes the audit log records as made from the command line (M7)."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        with audit.acting(AuditEntry.Via.CLI):
            return super().execute(*args, **options)
