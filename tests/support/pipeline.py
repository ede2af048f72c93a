"""Run the report pipeline inside the test process, without a worker, and what it must
add up to."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from osai.client import OsaiClient
from reports.metrics import all_flags, to_osai_flags
from reports.models import Bucket
from reports.pipeline import buckets, steps


def drive(max_seconds: float = 20.0) -> int:
    """Run due steps in this process until no bucket is active. Returns steps run."""
    ran = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        buckets.buckets_time_out_overdue(timezone.now())
        active = Bucket.objects.active()
        if not active.exists():
            return ran
        # Due, or queued already (a request enqueues its first steps itself): what a worker
        # would run next.
        runnable = active.filter(
            Q(next_attempt_at__lte=timezone.now()) | Q(queued_at__isnull=False)
        )
        for pk in runnable.values_list("pk", flat=True):
            steps.bucket_step(pk)
            ran += 1
        time.sleep(0.02)
    raise AssertionError("buckets still active after the time limit")


def direct_totals(sandbox: Any, token: str, start: datetime, end: datetime) -> dict[str, Any]:
    """What the pipeline's buckets must add up to: the sandbox asked directly for one report
    over the whole period, every category."""
    client = OsaiClient(sandbox.api_url, token, sandbox=True)
    created = client.create_report(start, end, to_osai_flags(all_flags()))
    for _ in range(200):
        status = client.get_report(created.id)
        if status.is_done:
            return status.totals
        time.sleep(0.05)
    raise AssertionError("the sandbox did not finish")
