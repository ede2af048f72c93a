"""django-q2 task entry points. They take primary keys only (no tokens, JWTs or URLs).

This module sits above everything else: the pipeline names these tasks as strings (so it
imports nothing above it), and each one calls into the module that does the work.
"""

from __future__ import annotations

from django.conf import settings

from reports import retention
from reports.integrations import webhooks
from reports.models import Connection, PriceBook
from reports.pipeline import dispatcher, steps
from reports.spend import anomalies, anomaly_alerts, budgets, digests, ledger, notify, tracking


def pipeline_dispatch() -> str:
    return dispatcher.dispatch()


def pipeline_reconcile() -> str:
    return dispatcher.reconcile()


def bucket_step(bucket_id: int, not_before: float | None = None) -> str:
    return steps.bucket_step(int(bucket_id), not_before)


def tracking_refresh_all() -> str:
    return f"refreshed {tracking.tracking_refresh_all()} connections"


def tracking_bucket_done(connection_id: int) -> str:
    """A tracked bucket finished: once the connection's refresh is complete, check the
    budgets its spend counts against (the last bucket to finish does it; checks are
    idempotent, so two at once alert once), then judge its new closed held days for
    anomalies (each day once, reports/spend/anomalies.py), queueing the alerts of new recent
    ones in the same transaction (once each, reports/spend/anomaly_alerts.py, A12)."""
    if not tracking.tracking_done_for(int(connection_id)):
        return "refresh still on its way"
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:
        return "connection gone"
    checked, alerts = budgets.budgets_check(budgets.budgets_for_connection(connection))
    if not settings.OSAI_ANOMALIES:
        return f"checked {checked} budgets, {len(alerts)} new alerts, 0 new anomalies"
    queued: list[object] = []
    # The alerts of new anomalies are queued in the transaction that records them (A12).
    found = anomalies.detect(
        connection, then=lambda: queued.extend(anomaly_alerts.anomaly_alerts_queue(connection))
    ).new
    said = f"checked {checked} budgets, {len(alerts)} new alerts, {len(found)} new anomalies"
    return f"{said}, {len(queued)} anomaly alerts queued" if queued else said


def ledger_reprice(price_book_id: int) -> str:
    """A price book's versions changed: re-write its rows of the spend ledger."""
    book = PriceBook.objects.filter(pk=price_book_id).first()
    if book is None:
        return "price book gone"
    return f"wrote {ledger.ledger_reprice(book)} ledger rows"


def delivery_send(delivery_id: int) -> str:
    return notify.delivery_send(int(delivery_id))


def digests_send() -> str:
    return f"queued {digests.digests_send()} digests"


def webhook_refresh(connection_id: int) -> str:
    """The open-day refresh a burst of OSAI webhooks asked for (integrations/webhooks.py)."""
    return webhooks.webhook_refresh(int(connection_id))


def retention_prune() -> str:
    """The daily prune (reports/retention.py): what is past its retention, a line per kind."""
    return retention.summary(retention.prune()).replace("\n", "; ")
