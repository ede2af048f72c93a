"""Add an OSAI connection for a user. The token is read from standard input, never argv."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

from reports.management.cli import AuditedCommand
from reports.pipeline import connections
from reports.spend import tracking


class Command(AuditedCommand):
    help = (
        "Add an OSAI connection: checks the access token by signing in, stores it encrypted. "
        "The token is read from standard input (so it never shows in the process list)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="username of the owner")
        parser.add_argument("--label", required=True)
        parser.add_argument("--region", required=True, help="one of: eu, us, sandbox")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            owner = get_user_model().objects.get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {options['user']!r}.") from None
        if sys.stdin.isatty():
            token = getpass.getpass("OSAI access token: ")
        else:
            token = sys.stdin.readline()
        try:
            connection = connections.connection_create(
                owner=owner, label=options["label"], region=options["region"], access_token=token
            )
        except connections.ConnectionCheckError as exc:
            raise CommandError(str(exc)) from None
        tracking.tracking_refresh(connection)  # a worker fetches this month's spend
        self.stdout.write(
            f"Added connection {connection.label!r} (id {connection.pk}) for {owner.username}: "
            f"OSAI account {connection.account_name!r}, token {connection.token_hint}."
        )
