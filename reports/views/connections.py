"""Connections: a person's OSAI access tokens (add, relabel and share, replace, delete).

Only the owner manages a connection; team admins never do (they only see labels).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from reports.models import Connection, Report
from reports.pipeline import connections
from reports.spend import discrepancies, tracking
from reports.teams import sharing
from reports.views.forms import ConnectionCreateForm, ConnectionEditForm, ConnectionTokenForm
from reports.views.http import AuthenticatedRequest


def _own_connection(request: AuthenticatedRequest, pk: int) -> Connection:
    return get_object_or_404(Connection, pk=pk, owner=request.user)


@login_required
@require_GET
def connection_list(request: AuthenticatedRequest) -> HttpResponse:
    own = Connection.objects.filter(owner=request.user).prefetch_related("shared_with_teams")
    return render(request, "reports/connection_list.html", {"connections": own})


@login_required
@require_http_methods(["GET", "POST"])
def connection_create(request: AuthenticatedRequest) -> HttpResponse:
    form = ConnectionCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connection = connections.connection_create(
                owner=request.user,
                label=form.cleaned_data["label"],
                region=form.cleaned_data["region"],
                access_token=form.cleaned_data["access_token"],
            )
        except connections.ConnectionCheckError as exc:
            form.add_error(None, str(exc))
        else:
            tracking.tracking_refresh(connection)  # this month's spend fills in the overview
            messages.success(
                request,
                f"Connected to OSAI as {connection.account_name or 'your account'}: "
                f"“{connection.label}” is ready. This month's spend is being fetched.",
            )
            return redirect("connection_list")
    return render(request, "reports/connection_form.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def connection_edit(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    connection = _own_connection(request, pk)
    initial = {"label": connection.label, "shared_with_teams": connection.shared_with_teams.all()}
    form = ConnectionEditForm(request.POST or None, initial=initial, owner=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                connections.connection_relabel(
                    connection=connection, label=form.cleaned_data["label"]
                )
                sharing.connection_teams_set(
                    connection=connection, teams=form.cleaned_data["shared_with_teams"]
                )
        except connections.ConnectionCheckError as exc:
            form.add_error("label", str(exc))
        else:
            messages.success(request, f"Saved “{connection.label}”.")
            return redirect("connection_list")
    return render(
        request,
        "reports/connection_edit.html",
        {
            "form": form,
            "connection": connection,
            # What tracking holds for it, and where its held months and days disagree.
            "held": tracking.history_held([connection.pk], timezone.now()),
            "disagreements": discrepancies.disagreements_of(connection),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def connection_token(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    connection = _own_connection(request, pk)
    form = ConnectionTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connections.connection_replace_token(
                connection=connection, access_token=form.cleaned_data["access_token"]
            )
        except connections.ConnectionCheckError as exc:
            form.add_error("access_token", str(exc))
        else:
            tracking.tracking_refresh(connection)
            messages.success(request, f"The token of “{connection.label}” was replaced.")
            return redirect("connection_list")
        connection.refresh_from_db()  # undo what the failed check set on the instance
    return render(
        request, "reports/connection_token.html", {"form": form, "connection": connection}
    )


@login_required
@require_http_methods(["GET", "POST"])
def connection_delete(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    connection = _own_connection(request, pk)
    if request.method == "POST":
        label = connection.label
        reports_deleted = connections.connection_delete(connection=connection)
        messages.success(
            request,
            f"Deleted the connection “{label}”, its stored usage and {reports_deleted} "
            "report(s) that covered only it.",
        )
        return redirect("connection_list")
    reports_using = Report.objects.filter(connections=connection).count()
    return render(
        request,
        "reports/connection_delete.html",
        {"connection": connection, "reports_using": reports_using},
    )
