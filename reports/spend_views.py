"""Spend pages: teams, team reports, and CSV exports.

Every lookup is scoped to the signed-in user (S2): a team page answers 404 unless the user is a
member of that team (admin for team reports and their exports); a report export answers 404
unless access.report_visible_to lets the user see the report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.views.decorators.http import require_http_methods, require_POST

from reports import access, exports, services, team_charts, teams, views
from reports import costs as pricing
from reports.forms import SharingForm, TeamReportForm
from reports.models import Connection, Granularity, Membership, Report, Team

STATUS_BADGE = "reports/report_detail.html#status-badge"


class AuthenticatedRequest(HttpRequest):
    user: User  # every view here is behind login_required


# --- Scoping helpers --------------------------------------------------------------------------


def _membership_or_404(
    request: AuthenticatedRequest, team_pk: int, *, admin: bool = False
) -> Membership:
    membership = teams.membership_for(request.user, team_pk, admin=admin)
    if membership is None:
        raise Http404("No such team.")
    return membership


def _status_badge_available() -> bool:
    """The status badge partial lives in the report page template (owned by the report views)."""
    try:
        get_template(STATUS_BADGE)
    except TemplateDoesNotExist:
        return False
    return True


# --- Teams ------------------------------------------------------------------------------------


@login_required
def team_list(request: AuthenticatedRequest) -> HttpResponse:
    return render(
        request, "reports/team_list.html", {"memberships": teams.memberships_of(request.user)}
    )


def _team_detail_response(
    request: AuthenticatedRequest,
    membership: Membership,
    form: TeamReportForm | None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    is_admin = membership.role == Membership.Role.ADMIN
    context = {
        "team": team,
        "membership": membership,
        "is_admin": is_admin,
        "members": teams.team_members(team),
        "shared_connections": teams.team_shared_connections(team),
        "my_shared": Connection.objects.filter(owner=request.user, shared_with_teams=team),
        # Team reports show other people's spend: admins only.
        "reports": teams.team_reports(team)[:50] if is_admin else [],
        "form": (form or TeamReportForm()) if is_admin else None,
    }
    return render(request, "reports/team_detail.html", context, status=status)


@login_required
def team_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    return _team_detail_response(request, _membership_or_404(request, pk), None)


@login_required
@require_http_methods(["GET", "POST"])
def team_sharing(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = _membership_or_404(request, pk)
    team = membership.team
    if request.method == "POST":
        form = SharingForm(request.POST, user=request.user)
        if form.is_valid():
            labels = teams.team_sharing_set(
                team=team, user=request.user, connections=form.cleaned_data["connections"]
            )
            if labels:
                messages.success(request, f"{team.name} may now report on: {', '.join(labels)}.")
            else:
                messages.success(request, f"You no longer share any connection with {team.name}.")
            return redirect("team_detail", pk=team.pk)
    else:
        form = SharingForm(
            user=request.user,
            initial={
                "connections": Connection.objects.filter(owner=request.user, shared_with_teams=team)
            },
        )
    return render(request, "reports/team_sharing.html", {"team": team, "form": form})


@login_required
@require_POST
def team_report_new(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = _membership_or_404(request, pk, admin=True)
    form = TeamReportForm(request.POST)
    if form.is_valid():
        try:
            report = teams.team_report_request(
                team=membership.team,
                admin=request.user,
                period_start=form.cleaned_data["period_start"],
                period_end=form.cleaned_data["period_end"],
                granularity=form.cleaned_data["granularity"],
                flags=form.flags(),
                preset=form.preset_name(),
            )
        except services.ReportRequestError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("team_report_detail", pk=membership.team_id, report_pk=report.pk)
    return _team_detail_response(request, membership, form, status=400)


def _period_label(start: datetime, end: datetime, granularity: str) -> str:
    if granularity == Granularity.MONTH and start.day == 1:
        return f"{start:%Y-%m}"
    if end - start == timedelta(days=1):
        return f"{start:%Y-%m-%d}"
    return f"{start:%Y-%m-%d} to {(end - timedelta(microseconds=1)):%Y-%m-%d}"


def _amount(value: Decimal | float, *, cost_view: bool) -> str:
    """Display text: money rounded to cents once, here; usage to two decimals."""
    if cost_view:
        return f"{pricing.money(Decimal(value)):,.2f}"
    return f"{value:,.2f}"


def _member_table(spend: teams.TeamSpend, *, cost_view: bool) -> dict[str, Any]:
    """Members x categories (ML stages in money, or metrics in display units), then the team."""
    if cost_view:
        columns = [*pricing.STAGE_LABELS.values(), f"Total ({spend.currency})"]

        def values(m: teams.MemberSpend) -> list[str]:
            return [
                *(_amount(v, cost_view=True) for v in m.stages.values()),
                _amount(m.costs["total"], cost_view=True),
            ]
    else:
        columns = [f"{metric.label} ({metric.unit})" for metric in teams.TEAM_METRICS]

        def values(m: teams.MemberSpend) -> list[str]:
            return [_amount(m.display(x.column), cost_view=False) for x in teams.TEAM_METRICS]

    return {
        "columns": columns,
        "rows": [{"member": m.member, "values": values(m)} for m in spend.members],
        "total": values(spend.team),
    }


def _over_time(
    spend: teams.TeamSpend, report: Report, *, cost_view: bool
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Periods x members (cost, or GPU-hours of compute), as a table and as chart series."""
    members = [m.member for m in spend.members]
    cells = {(c.period_start, c.period_end, c.member): c for c in spend.cells}
    rows: list[dict[str, Any]] = []
    series: dict[str, list[float]] = {m: [] for m in members}
    for start, end in spend.periods:
        values: list[Decimal | float] = []
        preliminary = False
        for member in members:
            cell = cells.get((start, end, member))
            value: Decimal | float
            if cell is None:
                value = Decimal(0) if cost_view else 0.0
            elif cost_view:
                value = cell.costs["total"]
            else:
                value = sum(cell.totals[c] for c in teams.COMPUTE_COLUMNS) / 3600
            preliminary = preliminary or bool(cell and cell.preliminary)
            values.append(value)
            series[member].append(float(value))  # floats for drawing only
        total = sum(values, Decimal(0) if cost_view else 0.0)
        rows.append(
            {
                "label": _period_label(start, end, report.granularity),
                "preliminary": preliminary,
                "values": [_amount(v, cost_view=cost_view) for v in values],
                "total": _amount(total, cost_view=cost_view),
            }
        )
    return {"members": members, "rows": rows}, series


@login_required
def team_report_detail(request: AuthenticatedRequest, pk: int, report_pk: int) -> HttpResponse:
    membership = _membership_or_404(request, pk, admin=True)
    team: Team = membership.team
    report = teams.team_report_for(team, report_pk)
    if report is None:
        raise Http404("No such report.")
    cost_view = request.GET.get("view") == "cost"
    spend = teams.team_spend(report)
    over_time, series = _over_time(spend, report, cost_view=cost_view)
    unit = spend.currency if cost_view else "GPU-hours"
    title = (
        "Cost per member" if cost_view else "Compute per member (training, conversion, prediction)"
    )
    figure = team_charts.team_member_bars(
        [row["label"] for row in over_time["rows"]], series, unit=unit, title=title
    )
    previous = spend.previous_total
    context = {
        "team": team,
        "report": report,
        "spend": spend,
        "cost_view": cost_view,
        "unit": unit,
        "members_table": _member_table(spend, cost_view=cost_view),
        "over_time": over_time,
        "team_total": _amount(spend.team.costs["total"], cost_view=True),
        "previous_total": None if previous is None else _amount(previous, cost_view=True),
        "change_percent": None if spend.change is None else f"{100 * spend.change:+.1f} %",
        "is_example": pricing.is_example(spend.price_book),
        "chart": team_charts.figure_data(figure),
        "chart_title": title,
        "status_badge": _status_badge_available(),
        # What the report page's status-badge partial needs (elapsed, status_url, ...).
        **views.badge_context(report),
    }
    return render(request, "reports/team_report_detail.html", context)


# --- CSV exports ------------------------------------------------------------------------------


def _with_cost(request: AuthenticatedRequest) -> bool:
    return request.GET.get("cost", "1") not in ("0", "false", "no")


@login_required
def report_export_csv(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    report = access.report_visible_to(request.user, pk)
    if report is None:
        raise Http404("No such report.")
    team = report.team_id is not None
    # Team data is for the team's current admins, even for the admin who requested it.
    if team and teams.membership_for(request.user, report.team_id or 0, admin=True) is None:
        raise Http404("No such report.")
    return _export(request, report, team=team)


@login_required
def team_report_export_csv(
    request: AuthenticatedRequest, pk: int, report_pk: int
) -> StreamingHttpResponse:
    membership = _membership_or_404(request, pk, admin=True)
    report = teams.team_report_for(membership.team, report_pk)
    if report is None:
        raise Http404("No such report.")
    return _export(request, report, team=True)


def _export(request: AuthenticatedRequest, report: Report, *, team: bool) -> StreamingHttpResponse:
    price_book = pricing.price_book_for(report)
    rows = exports.export_rows(
        teams.team_report_buckets(report),
        team=team,
        with_cost=_with_cost(request),
        price_book=price_book,
    )
    kind = ("osai-usage-team", report.team_id, "report") if team else ("osai-usage-report",)
    filename = exports.safe_filename(
        *kind, report.pk, f"{report.period_start:%Y-%m-%d}", f"{report.period_end:%Y-%m-%d}"
    )
    return exports.csv_response(rows, filename)
