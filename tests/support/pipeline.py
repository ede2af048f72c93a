"""Run the report pipeline inside the test process, without a worker."""

from __future__ import annotations

import time

from django.db.models import Q
from django.utils import timezone

from reports.models import Bucket
from reports.pipeline import pipeline


def drive(max_seconds: float = 20.0) -> int:
    """Run due steps in this process until no bucket is active. Returns steps run."""
    steps = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        pipeline._time_out_overdue(timezone.now())
        active = Bucket.objects.filter(state__in=pipeline.ACTIVE_STATES)
        if not active.exists():
            return steps
        # Due, or queued already (a request enqueues its first steps itself): what a worker
        # would run next.
        runnable = active.filter(
            Q(next_attempt_at__lte=timezone.now()) | Q(queued_at__isnull=False)
        )
        for pk in runnable.values_list("pk", flat=True):
            pipeline.bucket_step(pk)
            steps += 1
        time.sleep(0.02)
    raise AssertionError("buckets still active after the time limit")
