"""django-q2 task entry points. They take primary keys only (no tokens, JWTs or URLs)."""

from __future__ import annotations

from reports import pipeline


def pipeline_dispatch() -> str:
    return pipeline.dispatch()


def pipeline_reconcile() -> str:
    return pipeline.reconcile()


def bucket_step(bucket_id: int) -> str:
    return pipeline.bucket_step(int(bucket_id))
