"""Print a connection's OSAI webhook URL: `manage.py webhook_url --user U --connection LABEL`.

The URL carries the connection's secret: give it to OSAI (its API documentation, per task) and
to nobody else. `--rotate` makes a new one first; the old URL stops working at once. The site's
address comes from OSAI_USAGE_BASE_URL (or --base-url): where OSAI reaches this server.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from reports.integrations import webhooks
from reports.management import cli
from reports.management.cli import AuditedCommand
from reports.models import Connection


class Command(AuditedCommand):
    help = "Print (or with --rotate, renew and print) a connection's OSAI webhook URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="the connection's owner")
        parser.add_argument("--connection", required=True, help="the connection's label")
        parser.add_argument("--rotate", action="store_true", help="make a new URL first")
        parser.add_argument(
            "--base-url", help="where OSAI reaches this site (default: OSAI_USAGE_BASE_URL)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.user_named(options["user"])
        connection = Connection.objects.filter(owner=user, label=options["connection"]).first()
        if connection is None:
            raise CommandError(
                f"{user.get_username()} has no connection labelled {options['connection']!r}."
            )
        if options["rotate"]:
            webhooks.webhook_secret_rotate(connection=connection)
            self.stderr.write("Made a new webhook URL; the old one no longer works.")
        base_url = options["base_url"] or settings.OSAI_USAGE_BASE_URL
        self.stdout.write(webhooks.webhook_url(connection, base_url))
