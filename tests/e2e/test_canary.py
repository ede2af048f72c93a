"""The canary sweep (Q11, T1, T2): a unique token goes through every flow and failure path,
then every response, log line, table, queued task, task result and cache entry is searched.

The only place the token may exist is the encrypted column (as ciphertext, so not even
there as text). The JWT the sandbox issued for it, and the signed link's query string,
must not appear anywhere either.
"""

from __future__ import annotations

import io
import logging
import pickle
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from reports import crypto
from reports.models import Bucket, Connection, Report
from tests.factories import ensure_example_price_book, make_team, make_user
from tests.support import figures
from tests.support.worker import queued_task_payloads, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SIGNED_URL_PARTS = ("Signature=", "AWSAccessKeyId=", "Expires=")


def cache_texts() -> list[str]:
    """Every entry of the shared cache, decoded as far as possible."""
    texts: list[str] = []
    if settings.REDIS_URL:
        client = cache._cache.get_client()  # type: ignore[attr-defined]
        for key in client.keys("*"):
            raw = client.get(key) or b""
            texts.append(repr(key) + repr(raw))
            try:
                texts.append(repr(pickle.loads(raw)))  # noqa: S301 (our own cache)
            except Exception:  # not every entry is a pickle  # noqa: S112
                continue
        return texts
    for path in Path(settings.CACHES["default"]["LOCATION"]).glob("*.djcache"):
        with path.open("rb") as f:
            pickle.load(f)  # expiry  # noqa: S301
            texts.append(repr(pickle.loads(zlib.decompress(f.read()))))  # noqa: S301
    return texts


def task_texts() -> list[str]:
    from django_q.models import Task

    return [repr((t.func, t.args, t.kwargs, t.result)) for t in Task.objects.all()]


def test_a_canary_token_leaks_nowhere(start_worker, use_sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    canary = f"osai-sandbox-CANARY-{uuid.uuid4().hex}"
    use_sandbox.set_latency(0.3)
    ensure_example_price_book()
    user = make_user("canary")
    admin = make_user("admin", is_staff=True, is_superuser=True)
    team = make_team(admins=[admin], members=[user])
    web = Client()
    web.force_login(user)
    responses: list[bytes] = []

    def keep(response: Any) -> Any:
        if hasattr(response, "streaming_content"):
            responses.append(b"".join(response.streaming_content))
        else:
            responses.append(response.content)
        for header in response.headers.values():
            responses.append(header.encode())
        return response

    # Add the connection through the page; then fail the form once (a duplicate label) so
    # the token field is re-rendered with an error.
    form = {"label": "Canary", "region": "sandbox", "access_token": canary}
    keep(web.post(reverse("connection_create"), form))
    conn = Connection.objects.get(owner=user, label="Canary")
    keep(web.post(reverse("connection_create"), form))
    keep(web.post(reverse("connection_create"), {**form, "access_token": "bad-token"}))
    conn.shared_with_teams.add(team)
    jwt = crypto.decrypt_secret(conn.jwt_encrypted)

    start_worker()
    # Failure paths first: OSAI errors, garbage, rate limits, an expired link, a refused JWT.
    faults: list[dict[str, Any]] = [
        {"report_error": True},
        {"malformed_next": 2, "malformed": "html"},
        {"rate_limit_next": 1, "retry_after": "1"},
        {"fail_next": 2},
        {"expire_links": True},
        {},
    ]
    for month, fault in enumerate(faults, start=1):
        use_sandbox.faults(**fault) if fault else use_sandbox.clear_faults()
        if month == len(faults):
            Connection.objects.filter(pk=conn.pk).update(
                jwt_encrypted=crypto.encrypt_secret("eyJhbGciOiJIUzI1NiJ9.e30.revoked")
            )
        response = keep(
            web.post(
                reverse("report_new"),
                {
                    "connections": [conn.pk],
                    "preset": "custom",
                    "date_from": f"2025-{month:02d}-01",
                    "date_to": f"2025-{month:02d}-28",
                    "granularity": "total",
                    "include_datasets": "on",
                    "include_models": "on",
                    "include_predictions": "on",
                    "include_manipulations": "on",
                    "include_rented_devices": "on",
                },
            )
        )
        assert response.status_code == 302, response.content[:500]
        report = Report.objects.filter(owner=user).order_by("-pk").first()
        wait_until(lambda r=report: _refresh(r).is_terminal, timeout=60, message="report")
    jwt_after = crypto.decrypt_secret(Connection.objects.get(pk=conn.pk).jwt_encrypted)

    # Every page that shows the connection, its reports, buckets and exports.
    for report in Report.objects.filter(owner=user):
        for name in ("report_detail", "report_status", "report_charts", "report_export_csv"):
            keep(web.get(reverse(name, args=[report.pk]), HTTP_HX_REQUEST="true"))
            keep(web.get(reverse(name, args=[report.pk]) + "?view=cost"))
        for bucket in Bucket.objects.filter(report_buckets__report=report, file__isnull=False):
            keep(web.get(reverse("bucket_raw_json", args=[report.pk, bucket.pk])))
    for name in ("home", "connection_list", "report_history", "report_new", "team_list"):
        keep(web.get(reverse(name)))
    for name in ("connection_edit", "connection_token", "connection_delete"):
        keep(web.get(reverse(name, args=[conn.pk])))
    keep(web.get(reverse("team_detail", args=[team.pk])))
    staff = Client()
    staff.force_login(admin)
    keep(staff.get(reverse("team_detail", args=[team.pk])))
    for url in (
        "/admin/reports/connection/",
        f"/admin/reports/connection/{conn.pk}/change/",
        "/admin/reports/bucket/",
        "/admin/reports/report/",
        "/admin/django_q/task/",
    ):
        keep(staff.get(url))
    out = io.StringIO()
    june = ["--user", "canary", "--from", "2025-06-01", "--to", "2025-06-29"]
    call_command("generate_report", *june, "--granularity", "total", "--json", stdout=out)
    call_command(
        "export_usage", *june, "--granularity", "total", "--cost", stdout=out, stderr=io.StringIO()
    )
    responses.append(out.getvalue().encode())

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    haystacks = {
        "responses": b"\n".join(responses).decode(errors="replace"),
        "logs": caplog.text,
        "worker logs": "".join(p.read_text(errors="replace") for p in _worker_logs()),
        "database": dump.getvalue(),
        "queue": "\n".join(queued_task_payloads()),
        "task results": "\n".join(task_texts()),
        "cache": "\n".join(cache_texts()),
    }
    needles = [canary, jwt, jwt_after, *SIGNED_URL_PARTS]
    hits = {
        (where, needle[:24]): text.count(needle)
        for where, text in haystacks.items()
        for needle in needles
        if needle in text
    }
    figures.figure("canary hits", sum(hits.values()))
    figures.figure("canary places searched", len(haystacks) * len(needles))
    assert hits == {}
    assert "…" + canary[-4:] in haystacks["responses"]  # the hint is shown, and only it


def _refresh(report: Report) -> Report:
    report.refresh_from_db()
    return report


def _worker_logs() -> list[Path]:
    from tests.support.worker import ARTIFACTS

    return sorted(ARTIFACTS.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)[-2:]
