"""`make run`: the demo data, the OSAI sandbox, the web server and a worker, stopped by Ctrl-C.

honcho's process manager runs the three processes with prefixed, coloured output and stops
all of them when one exits or on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from honcho.manager import Manager
from honcho.printer import Printer

from reports.management.commands.seed_demo import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    demo_spike,
    demo_webhook_registrations,
    inject_demo_spike,
    register_demo_webhooks,
)


class SturdyPrinter(Printer):
    """A printer that survives a closed stdout (`make run | tee log`, then Ctrl-C kills tee):
    honcho must still get to stop the processes it started."""

    def write(self, message: Any) -> None:
        with contextlib.suppress(OSError):
            super().write(message)


class Command(BaseCommand):
    help = "Seed the demo, then run the OSAI sandbox, the web server and a qcluster worker."
    requires_system_checks: list[str] = []  # the web server runs them itself

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Web server address.")
        parser.add_argument("--port", type=int, default=8000, help="Web server port.")
        parser.add_argument("--sandbox-port", type=int, default=8765)
        parser.add_argument(
            "--latency",
            type=float,
            default=3.0,
            help="Seconds the sandbox takes to generate a report.",
        )
        parser.add_argument("--no-seed", action="store_true", help="Skip seed_demo.")
        parser.add_argument(
            "--webhook-interval",
            type=float,
            default=10.0,
            help="Seconds between the sandbox's worker webhooks to each demo connection.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sandbox_url = f"http://127.0.0.1:{options['sandbox_port']}/api"
        # Every process, this one included (seed_demo runs here), uses the sandbox region on
        # the chosen port: it is off by default and this is the local demo.
        os.environ["OSAI_SANDBOX_URL"] = sandbox_url
        settings.OSAI_SANDBOX_URL = sandbox_url
        settings.OSAI_REGIONS = {**settings.OSAI_REGIONS, "sandbox": sandbox_url}
        if not options["no_seed"]:
            call_command("seed_demo", stdout=self.stdout)

        manage = f"{sys.executable} {os.path.abspath(sys.argv[0])}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OSAI_SANDBOX_URL": sandbox_url}
        manager = Manager(SturdyPrinter(sys.stdout))
        manager.add_process(
            "sandbox",
            f"{manage} osai_sandbox --host 127.0.0.1 --port {options['sandbox_port']} "
            f"--latency {options['latency']} --webhook-interval {options['webhook_interval']}",
            env=env,
        )
        manager.add_process(
            "web", f"{manage} runserver {options['host']}:{options['port']} --noreload", env=env
        )
        manager.add_process("worker", f"{manage} qcluster", env=env)

        url = f"http://{options['host']}:{options['port']}/"
        # Once the sandbox answers, it posts worker webhooks to the demo connections' URLs on
        # this web server: the activity feed fills in by itself.
        registrations = demo_webhook_registrations(url)
        sandbox_base = f"http://127.0.0.1:{options['sandbox_port']}"
        spike = demo_spike(timezone.now())

        def prepare_sandbox() -> None:
            # First the demo's anomaly (a day of heavy training on Dana's lab, before the
            # worker fetches that day), then the webhooks.
            inject_demo_spike(sandbox_base, spike)
            register_demo_webhooks(sandbox_base, registrations)

        threading.Thread(target=prepare_sandbox, name="prepare-sandbox", daemon=True).start()
        self.stdout.write(
            self.style.SUCCESS(
                f"\nOpen {url} and sign in as {DEMO_USERNAME} / {DEMO_PASSWORD}"
                "\n(a fixed password for this local demo). Ctrl-C stops everything.\n"
            )
        )
        manager.loop()
        sys.exit(manager.returncode)
