"""Make a personal API token: `manage.py api_token --user U [--name N]`.

The token is printed once, on standard output alone (so `TOKEN=$(manage.py api_token …)`
works); only its hash is stored. Revoke it on the API tokens page, or with `--revoke PREFIX`.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from reports.integrations import api_tokens
from reports.management import cli
from reports.management.cli import AuditedCommand
from reports.models import ApiToken


class Command(AuditedCommand):
    help = "Make a read-only API token for a user and print it once (or revoke one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument(
            "--revoke", metavar="PREFIX", help="revoke the user's token that starts with this"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.user_named(options["user"])
        if options["revoke"]:
            prefix = options["revoke"].rstrip("…")
            matches = [
                t
                for t in ApiToken.objects.filter(user=user, revoked_at__isnull=True)
                if prefix and (t.prefix.startswith(prefix) or prefix.startswith(t.prefix))
            ]
            if len(matches) != 1:
                raise CommandError(
                    f"{len(matches)} active tokens of {user.get_username()} match {prefix!r}."
                )
            api_tokens.api_token_revoke(user=user, pk=matches[0].pk)
            self.stderr.write(f"Revoked {matches[0].prefix}… ({matches[0].name}).")
            return
        try:
            row, token = api_tokens.api_token_create(user=user, name=options["name"])
        except api_tokens.ApiTokenError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"Made the API token “{row.name}” for {user.get_username()}. It is shown once:"
        )
        self.stdout.write(token)
