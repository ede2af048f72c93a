"""Saved views: a report form's choices saved by name, for oneself or (a team's admins) for
the team, and deleted. Opening one is a link to the pre-filled form (reports/pages/links.py).

A team's views are its admins' only: anyone else gets 404 (S2). A form that is not valid
saves nothing: the form opens again as it was sent, with its errors.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from reports.access import Capability
from reports.models import Team
from reports.pages import links
from reports.teams import TeamError
from reports.views.forms import PeriodForm, ReportForm, SavedViewForm, TeamReportForm
from reports.views.http import AuthenticatedRequest, membership_or_404


def _save(request: AuthenticatedRequest, form: PeriodForm, team: Team | None) -> HttpResponse:
    name_form = SavedViewForm(request.POST)
    problem = None
    if form.is_valid() and name_form.is_valid():
        every = form.all_connections_chosen() if isinstance(form, ReportForm) else True
        try:
            view, created = links.saved_view_save(
                owner=request.user,
                name=name_form.cleaned_data["view_name"],
                params=links.params_of(form.cleaned_data, all_connections=every),
                team=team,
            )
        except TeamError as exc:
            problem = str(exc)
        else:
            where = f"{team.name}'s team page" if team else "your overview"
            verb = "Saved" if created else "Updated"
            messages.success(request, f"{verb} the view “{view.name}”: it is on {where}.")
            return redirect(links.view_url(view))
    elif not name_form.is_valid():
        problem = " ".join(str(error) for error in name_form.errors.get("view_name", []))
    else:
        problem = "correct the form first (its errors are shown below)."
    messages.error(request, f"The view was not saved: {problem}")
    return redirect(links.form_url(links.params_of_data(request.POST), team.pk if team else None))


@login_required
@require_POST
def saved_view_create(request: AuthenticatedRequest) -> HttpResponse:
    """Save the personal report form's choices by name."""
    return _save(request, ReportForm(request.POST, owner=request.user), None)


@login_required
@require_POST
def team_saved_view_create(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Save the team report form's choices by name, for the team (its admins only)."""
    membership = membership_or_404(request, pk, Capability.REQUEST_TEAM_REPORT)
    return _save(request, TeamReportForm(request.POST), membership.team)


@login_required
@require_POST
def saved_view_delete(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    view = links.saved_view_for(request.user, pk)
    if view is None:
        raise Http404("No such view.")
    links.saved_view_delete(view=view)
    messages.success(request, f"Deleted the view “{view.name}”.")
    if view.team_id is not None:
        return redirect("team_detail", pk=view.team_id)
    return redirect("home")
