"""Serve the local OSAI sandbox: `manage.py osai_sandbox --host 127.0.0.1 --port 8765`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from osai import sandbox


class Command(BaseCommand):
    help = (
        "Serve the OSAI sandbox (an emulator of OSAI's report API) at http://HOST:PORT/api "
        "until SIGINT or SIGTERM. Faults and counters: /__sandbox__/faults, /__sandbox__/stats."
    )
    # The sandbox needs neither the database nor the app's checks; it should start fast.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        sandbox.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = sandbox.config_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        def announce(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            sandbox.serve(
                config,
                host=options["host"],
                port=options["port"],
                verbose=options["verbose"],
                announce=announce,
            )
        except OSError as exc:  # e.g. the port is taken
            raise CommandError(
                f"Cannot serve on {options['host']}:{options['port']}: {exc}"
            ) from exc
