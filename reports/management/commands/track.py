"""Refresh tracking now, as the hourly schedule does: `manage.py track [--user U] [--wait]`.

For cron and tests. `--wait` returns once the refreshed connections' tracked buckets are all
finished (it needs a running worker) and exits non-zero if some failed or time ran out.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports.management import cli
from reports.models import Bucket, Connection
from reports.spend import tracking


class Command(BaseCommand):
    help = "Refresh this month's tracked spend of every working connection (or one person's)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="only this person's connections")
        parser.add_argument("--wait", action="store_true", help="wait until OSAI has answered")
        parser.add_argument("--timeout", type=float, default=600, help="seconds to --wait")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = cli.user_named(options["user"]) if options["user"] else None
        count = tracking.tracking_refresh_all(owner=owner)
        self.stdout.write(f"Refreshing {count} connection{'s' if count != 1 else ''}.")
        if not options["wait"]:
            return
        connections = Connection.objects.filter(status=Connection.Status.OK)
        if owner is not None:
            connections = connections.filter(owner=owner)
        ids = list(connections.values_list("pk", flat=True))
        deadline = time.monotonic() + options["timeout"]
        while tracking.tracking_in_flight(ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        if tracking.tracking_in_flight(ids):
            self.stderr.write("Timed out waiting for OSAI (is a worker running?).")
            sys.exit(1)
        failed = Bucket.objects.filter(
            connection_id__in=ids, tracked=True, state__in=Bucket.FAILED_STATES
        ).count()
        self.stdout.write(f"Done; {failed} tracked bucket(s) failed." if failed else "Done.")
        if failed:
            sys.exit(1)
