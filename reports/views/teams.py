"""Team pages: the list, a team, sharing connections with it, team reports.

A team page answers 404 unless the user is a member of that team; team reports and their
requests answer 404 unless the user is one of its admins (S2).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from reports import services, teams
from reports.forms import SharingForm, TeamReportForm
from reports.models import Connection, Membership, Team
from reports.pages.team import team_page, team_report_page
from reports.views.http import AuthenticatedRequest, membership_or_404


@login_required
@require_GET
def team_list(request: AuthenticatedRequest) -> HttpResponse:
    return render(
        request, "reports/team_list.html", {"memberships": teams.memberships_of(request.user)}
    )


def _team_response(
    request: AuthenticatedRequest,
    membership: Membership,
    form: TeamReportForm | None,
    status: int = 200,
) -> HttpResponse:
    context = team_page(request.user, membership)
    context["form"] = (form or TeamReportForm()) if context["is_admin"] else None
    return render(request, "reports/team_detail.html", context, status=status)


@login_required
@require_GET
def team_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    return _team_response(request, membership_or_404(request, pk), None)


@login_required
@require_http_methods(["GET", "POST"])
def team_sharing(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk)
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
    membership = membership_or_404(request, pk, admin=True)
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
    return _team_response(request, membership, form, status=400)


@login_required
@require_GET
def team_report_detail(request: AuthenticatedRequest, pk: int, report_pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, admin=True)
    team: Team = membership.team
    report = teams.team_report_for(team, report_pk)
    if report is None:
        raise Http404("No such report.")
    context = team_report_page(report, cost_view=request.GET.get("view") == "cost")
    return render(request, "reports/team_report_detail.html", context)
