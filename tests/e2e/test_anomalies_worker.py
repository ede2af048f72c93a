"""An anomaly found end to end (N1-N3): a spike injected into the sandbox over its socket
(`POST /__sandbox__/usage`), held by tracking through a real `qcluster` worker, flagged once
by the detector the refresh runs (reports/tasks.py `tracking_bucket_done`), and not again by
the next refresh."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django_q.models import Task

from reports.models import Anomaly, Bucket, Connection
from reports.spend import tracking
from tests.factories import ensure_example_price_book, make_connection, make_user
from tests.support.worker import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TOKEN = "osai-sandbox-anomaly-lab"
SPIKE_SECONDS = 360_000  # 100 GPU-hours on 16 GB workers in one day


def _refresh(connection: Connection) -> None:
    """One tracking refresh of the connection, waited for until its detector has run: every
    tracked bucket done and the task of its open day's bucket finished."""
    tracking.tracking_refresh(connection)
    held = Bucket.objects.filter(connection=connection, tracked=True)
    wait_until(
        lambda: not held.exclude(state=Bucket.State.DONE).exists(),
        timeout=120,
        message="the refresh's buckets to be done",
    )
    newest = held.filter(is_closed=False).order_by("-pk").first()
    assert newest is not None
    wait_until(
        lambda: Task.objects.filter(name=f"osai-tracked-{newest.pk}").exists(),
        timeout=30,
        message="the refresh's last task (budgets, then anomalies)",
    )


def test_an_injected_spike_is_flagged_once_naming_the_connection_and_category(
    use_sandbox: Any, start_worker: Any, settings: Any
) -> None:
    # The sandbox's own usage never costs EUR 50 a day above its usual (8 GPU-hours at most,
    # a day of device rental: EUR 21.60), so whatever days the window holds on the day this
    # runs, the injected spike (EUR 210) is the only anomaly.
    start_worker(OSAI_ANOMALY_MIN_AMOUNT="50.00")
    settings.OSAI_HELD_MONTHS = 1  # a small window: days since the first of last month
    settings.OSAI_HELD_DAYS_SINCE = "month"
    use_sandbox.set_latency(0.2)
    ensure_example_price_book()
    owner = make_user("dana")
    connection = make_connection(owner, "Dana's lab", token=TOKEN)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    use_sandbox.add_usage(TOKEN, yesterday.isoformat(), totalTrainingSeconds16GB=SPIKE_SECONDS)

    # The first refresh fetches the history in the background; the detector waits for all of
    # it, so the refresh that ends after it judges every held day.
    _refresh(connection)
    if not Anomaly.objects.exists():
        _refresh(connection)
    (anomaly,) = Anomaly.objects.all()
    assert (anomaly.connection_id, anomaly.column, anomaly.day) == (
        connection.pk,
        "training_seconds_16gb",
        yesterday,
    )
    assert anomaly.kind == Anomaly.Kind.SPIKE and anomaly.actual >= SPIKE_SECONDS
    out = io.StringIO()
    call_command("anomalies", "--user", "dana", stdout=out)
    assert f"{yesterday}  spike  training on 16 GB workers on Dana's lab: EUR " in out.getvalue()

    _refresh(connection)  # the next refresh: nothing new
    assert list(Anomaly.objects.values_list("pk", flat=True)) == [anomaly.pk]
    connection.refresh_from_db()
    assert connection.anomalies_checked_through == yesterday
