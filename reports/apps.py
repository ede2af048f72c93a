import logging
from typing import Any

from django.apps import AppConfig

log = logging.getLogger(__name__)


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "OSAI usage reports"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from osai_dashboard import login_throttle
        from reports import checks  # noqa: F401  (registers the deploy checks)
        from reports.spend import discrepancies, ledger

        ledger.connect_signals()
        discrepancies.connect_signals()
        login_throttle.connect_signals()

        post_spawn.connect(_resume_pipeline, dispatch_uid="osai-resume-pipeline")


def _resume_pipeline(sender: Any, proc_name: str, **kwargs: Any) -> None:
    """A worker (re)started, e.g. after a crash: resume work in flight without waiting for
    the reconciler's next tick, and make the schedules follow the settings."""
    from reports.pipeline.dispatcher import reconcile
    from reports.schedules import ensure_schedules

    try:
        ensure_schedules()
        reconcile(force=True)
    except Exception:  # a worker must start even if the database is briefly unavailable
        log.exception("Could not resume the report pipeline at worker start")
