"""The Anomalies page, its CSV and the "Expected" / "Not expected" answer (N5).

The rows come from reports/pages/anomalies.py, the one selector the API and `manage.py
anomalies` read too: one's own connections', or with `?team=<id>` a team's counting
connections' for roles that see its spend (404 otherwise). Answering is for the connection's
owner and, for a connection that counts for a team, the team's admins (ANSWER_ANOMALIES):
anyone else gets a 404 and nothing changes (S2).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from reports.access import Capability, teams_where
from reports.pages import anomalies, downloads
from reports.spend import exports
from reports.views.http import AuthenticatedRequest, BadParameter, bad_request, id_parameter

ROW = "reports/anomaly_list.html#anomaly-row"


def _filters(request: HttpRequest) -> anomalies.AnomalyFilter:
    kind = request.GET.get("kind", "")
    if kind and kind not in anomalies.KINDS:
        raise BadParameter(f"?kind= takes one of {', '.join(anomalies.KINDS)}, not {kind[:40]!r}.")
    look = request.GET.get("look", "")
    if look not in ("", "0", "1"):
        raise BadParameter(f"?look= takes 1 (no answer yet) or 0, not {look[:40]!r}.")
    return anomalies.AnomalyFilter(kind=kind or None, needs_look=look == "1")


def _scope(request: AuthenticatedRequest) -> anomalies.AnomalyScope:
    scope = anomalies.scope_of(request.user, id_parameter(request, "team"))
    if scope is None:
        raise Http404("No such team.")
    return scope


@login_required
@require_GET
def anomaly_list(request: AuthenticatedRequest) -> HttpResponse:
    try:
        scope = _scope(request)
        filters = _filters(request)
    except BadParameter as exc:
        return bad_request(exc)
    paginator = Paginator(anomalies.anomalies_in(scope, filters), anomalies.PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    team_query = {"team": scope.team.pk} if scope.team else {}
    query = {
        **team_query,
        **({"kind": filters.kind} if filters.kind else {}),
        **({"look": "1"} if filters.needs_look else {}),
    }
    teams = list(teams_where(request.user, Capability.SEE_TEAM_SPEND).order_by("name"))
    context = {
        "scope": scope,
        "filters": filters,
        "anomaly_rows": anomalies.page_rows(scope, list(page.object_list)),
        "page": page,
        "teams": teams,
        "kinds": anomalies.KIND_CHOICES,
        "query": urlencode(query),
        "team_query": urlencode(team_query),
        "csv_url": f"{reverse('anomaly_export_csv')}?{urlencode(query)}",
        "window_days": anomalies.window_days(),
    }
    return render(request, "reports/anomaly_list.html", context)


@login_required
@require_GET
def anomaly_export_csv(request: AuthenticatedRequest) -> HttpResponse | StreamingHttpResponse:
    """The page's rows, every page of them (`?team=`, `?kind=`, `?look=1` as on the page); a
    team's for the roles that may download its CSVs."""
    try:
        scope = _scope(request)
        filters = _filters(request)
    except BadParameter as exc:
        return bad_request(exc)
    if scope.team is not None and scope.team not in teams_where(
        request.user, Capability.DOWNLOAD_CSV
    ):
        raise Http404("No such team.")
    csv = downloads.anomaly_csv(scope, filters)
    return exports.csv_response(csv.rows, csv.filename)


@login_required
@require_POST
def anomaly_feedback(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """ "Expected" or "Not expected": htmx swaps the row; without JS, back to the list."""
    anomaly = anomalies.answerable(request.user, pk)
    if anomaly is None:
        raise Http404("No such anomaly.")
    try:
        anomalies.anomaly_feedback_set(anomaly=anomaly, feedback=request.POST.get("feedback", ""))
    except anomalies.FeedbackError as exc:
        return bad_request(BadParameter(str(exc)))
    raw = request.POST.get("team", "")
    team_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    if request.htmx:  # the row again, priced in the book of the page it is on
        scope = anomalies.scope_of(request.user, team_id) or anomalies.scope_of(request.user)
        assert scope is not None
        row = anomalies.page_rows(scope, [anomaly])[0]
        return render(request, ROW, {"row": row, "scope": scope})
    back = reverse("anomaly_list")
    if team_id is not None:
        back += f"?{urlencode({'team': team_id})}"
    label = "expected" if anomaly.feedback == "expected" else "not expected"
    messages.success(request, f"Marked the anomaly of {anomaly.day:%d %b %Y} as {label}.")
    return redirect(back)
