"""Budgets: the list (with where each stands), setting one, and a budget's alert log.

A budget is visible to its owner (a personal or connection budget) or, for a team budget, to
the team's roles that see its spend (admins and viewers); only those that manage its budgets
(admins) change or remove it. To everyone else it is a 404 (reports/access.py, CAPABILITIES).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from reports.access import Capability, teams_where
from reports.models import Budget
from reports.spend import budgets
from reports.spend.monthly import budget_statuses
from reports.views.forms import BudgetForm
from reports.views.http import AuthenticatedRequest


def _managed_or_404(request: AuthenticatedRequest, pk: int) -> Budget:
    return _one_or_404(budgets.budgets_managed_by(request.user), pk)


def _one_or_404(found: list[Budget], pk: int) -> Budget:
    budget = next((b for b in found if b.pk == pk), None)
    if budget is None:
        raise Http404("No such budget.")
    return budget


def _save(request: AuthenticatedRequest, form: BudgetForm) -> Budget | None:
    data = form.cleaned_data
    try:
        return budgets.budget_set(
            actor=request.user,
            scope=data["scope"],
            amount=data["amount"],
            connection=data.get("connection"),
            team=data.get("team"),
            thresholds=data["thresholds"].split(","),
            on_forecast=data["on_forecast"],
            channels=list(data["channels"]),
            emails=[data["emails"]],
        )
    except budgets.BudgetError as exc:
        form.add_error(None, str(exc))
        return None


@login_required
@require_http_methods(["GET", "POST"])
def budget_list(request: AuthenticatedRequest) -> HttpResponse:
    form = BudgetForm(
        request.POST or None,
        user=request.user,
        initial={"emails": request.user.email},
    )
    if request.method == "POST" and form.is_valid():
        budget = _save(request, form)
        if budget is not None:
            messages.success(request, "The budget is set; it is checked after every refresh.")
            return redirect("budget_detail", pk=budget.pk)
    visible = budgets.budgets_visible_to(request.user)
    return render(
        request,
        "reports/budget_list.html",
        {"statuses": budget_statuses(visible), "form": form},
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def budget_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """The budget, its standing and its alert log; the form for those who manage it (a POST by
    anyone else is a 404 and changes nothing)."""
    if request.method == "POST":
        budget = _managed_or_404(request, pk)
        manages = True
    else:
        budget = _one_or_404(budgets.budgets_visible_to(request.user), pk)
        managed = teams_where(request.user, Capability.MANAGE_BUDGETS)
        manages = budget.team_id is None or managed.filter(pk=budget.team_id).exists()
    initial = {
        "scope": budget.scope,
        "connection": budget.connection,
        "team": budget.team,
        "amount": budget.amount,
        "thresholds": ", ".join(str(t) for t in budget.thresholds),
        "on_forecast": budget.on_forecast,
        # Its channels, by name; never a URL (the channel keeps it encrypted).
        "channels": list(budget.channels.all()),
    }
    form = BudgetForm(request.POST or None, user=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        saved = _save(request, form)
        if saved is not None:
            messages.success(request, "Saved.")
            return redirect("budget_detail", pk=saved.pk)
    status = budget_statuses([budget])[0]
    return render(
        request,
        "reports/budget_detail.html",
        {
            "status": status,
            "budget": budget,
            "form": form,
            "alerts": budget.alerts.order_by("-created_at", "-threshold")[:100],
            "deliveries": budget.deliveries.order_by("-created_at", "-pk")[:100],
            "manages": manages,
            # A8: channels set by someone no longer an admin stop; the page says so.
            "channels_stopped": budgets.channels_stopped(budget),
            "channels_setter": budget.channels_set_by.get_username()
            if budget.channels_set_by
            else "",
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def budget_delete(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    budget = _managed_or_404(request, pk)
    budgets.budget_delete(actor=request.user, budget=budget)
    messages.success(request, "The budget was removed.")
    return redirect("budget_list")
