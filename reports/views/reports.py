"""Reports: the request form, the report page with its live status badge, history.

htmx endpoints use `htmx_login_required`, which answers an expired session with
HX-Redirect instead of letting htmx swap the login form into the badge (S5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling, trigger_client_event

from reports.access import Capability, counted_buckets, report_visible_to
from reports.models import BucketFile, Connection, Report
from reports.pages import links
from reports.pages.history import history_queryset, with_periods
from reports.pages.report import (
    ViewMode,
    badge_context,
    comparison_pending,
    report_body,
    report_page,
    view_mode,
)
from reports.pipeline import report_requests
from reports.views.forms import ReportForm, SavedViewForm, prefilled
from reports.views.http import AuthenticatedRequest, htmx_login_required, visible_report_or_404

HISTORY_PAGE_SIZE = 25
STATUS_BADGE = "reports/report_detail.html#status-badge"
# Events the status endpoint sends (HX-Trigger) so the report body reloads without a refresh.
EVENT_FINISHED = "report-finished"
EVENT_PROGRESS = "report-progress"


@login_required
@require_http_methods(["GET", "POST"])
def report_new(request: AuthenticatedRequest) -> HttpResponse:
    """The form; opened from a link (a saved view, "run again") it is pre-filled and checked,
    and still requests nothing until it is sent (reports/pages/links.py)."""
    if request.method == "GET" and links.has_params(request.GET):
        form = prefilled(ReportForm, request.GET, owner=request.user)
    else:
        form = ReportForm(request.POST or None, owner=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            report = report_requests.report_request(owner=request.user, **form.request_kwargs())
        except report_requests.ReportRequestError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("report_detail", pk=report.pk)
    has_connections = Connection.objects.filter(owner=request.user).exists()
    return render(
        request,
        "reports/report_new.html",
        {
            "form": form,
            "has_connections": has_connections,
            "saved_views": links.personal_views(request.user),
            "view_form": SavedViewForm(),
        },
    )


@login_required
@require_GET
def report_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    return _render_report(request, pk, report_page, "reports/report_detail.html")


@htmx_login_required
@require_GET
def report_status(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """The badge alone, polled every 2 s while the report runs (S6: two queries, no writes).

    Finished: 286 stops htmx polling, and the report-finished event makes the page load the
    final tiles and charts. While running, a change in the count of finished buckets since
    the last poll (`seen`) sends report-progress, so charts fill in as buckets finish.
    """
    report = visible_report_or_404(request, pk)
    response: HttpResponse = render(request, STATUS_BADGE, badge_context(report))
    if report.is_terminal:
        return trigger_client_event(HttpResponseStopPolling(response.content), EVENT_FINISHED)
    if request.GET.get("seen") != str(report.buckets_done):
        trigger_client_event(response, EVENT_PROGRESS)
    return response


@htmx_login_required
@require_GET
def report_comparison(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Polled while the period a finished report compares with is still being fetched; once
    it is, 286 stops the polling and report-finished reloads the body, once."""
    report = visible_report_or_404(request, pk)
    if comparison_pending(report):
        return HttpResponse(status=204)  # htmx swaps nothing and keeps polling
    return trigger_client_event(HttpResponseStopPolling(""), EVENT_FINISHED)


@htmx_login_required
@require_GET
def report_charts(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """The report body (tiles, charts, tables, buckets), reloaded by htmx as buckets finish."""
    return _render_report(request, pk, report_body, "reports/report_detail.html#report-body")


def _render_report(
    request: AuthenticatedRequest,
    pk: int,
    page: Callable[[Report, ViewMode], dict[str, Any]],
    template: str,
) -> HttpResponse:
    """The report's page (or part of it) in the view mode `?view=` asks for."""
    report = visible_report_or_404(request, pk)
    context = page(report, view_mode(request.GET.get("view")))
    if "can_cancel" in context and report.team_id is not None:
        # Viewers read a team report; only roles that may request one cancel or retry it.
        acts = report_visible_to(request.user, pk, Capability.REQUEST_TEAM_REPORT) is not None
        context["can_cancel"] = context["can_cancel"] and acts
        context["can_retry"] = context["can_retry"] and acts
    return render(request, template, context)


@login_required
@require_POST
def report_cancel(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    report = visible_report_or_404(request, pk, Capability.REQUEST_TEAM_REPORT)
    if report.is_terminal:
        messages.info(request, "This report had already finished.")
    else:
        report_requests.report_cancel(report=report)
        messages.success(request, "The report was cancelled.")
    return redirect("report_detail", pk=pk)


@login_required
@require_POST
def report_retry(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    report = visible_report_or_404(request, pk, Capability.REQUEST_TEAM_REPORT)
    if not report.is_terminal:
        messages.info(request, "This report is still running.")
        return redirect("report_detail", pk=pk)
    before = report.state
    report = report_requests.report_retry(report=report)
    if report.state == before:
        messages.info(request, "Nothing to retry: every part of this report finished.")
    else:
        messages.success(request, "Trying the failed parts again.")
    return redirect("report_detail", pk=pk)


@login_required
@require_GET
def bucket_raw_json(request: AuthenticatedRequest, pk: int, bucket_pk: int) -> HttpResponse:
    """The OSAI report file of one bucket, exactly as archived, as a download."""
    report = visible_report_or_404(request, pk)
    bucket = get_object_or_404(counted_buckets(report), pk=bucket_pk)
    file = BucketFile.objects.filter(bucket=bucket).first()
    if file is None:
        raise Http404("OSAI's file for this part of the report was not archived.")
    name = f"osai-report-{bucket.osai_report_id or bucket.pk}.json"
    response = HttpResponse(bytes(file.content), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-SHA256"] = file.sha256
    return response


@login_required
@require_GET
def report_history(request: AuthenticatedRequest) -> HttpResponse:
    paginator = Paginator(history_queryset(request.user), HISTORY_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(
        request,
        "reports/report_history.html",
        {
            "page": page,
            "reports": with_periods(list(page.object_list)),
            "mode": view_mode(request.GET.get("view")),
        },
    )
