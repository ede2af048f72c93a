"""Team pages: the list (and creating a team), a team, sharing, running it, team reports.

A team page answers 404 unless the user is in that team; each action asks the capability
table (reports/access.py) whether the user's role may do it, and answers 404 to everyone else
(S2, M4): admins run the team, viewers read its spend, members share their own connections.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from reports.access import Capability
from reports.models import Connection, Membership
from reports.pages.overview import team_overview
from reports.pages.team import team_page
from reports.pages.team_spend import team_period, team_spend
from reports.pipeline import report_requests
from reports.teams import TeamError, invitations, roster, sharing, team_reports
from reports.views.forms import (
    MemberAddForm,
    MemberRoleForm,
    SavedViewForm,
    SharingForm,
    TeamCreateForm,
    TeamPriceBookForm,
    TeamReportForm,
    prefilled,
)
from reports.views.http import AuthenticatedRequest, membership_or_404


@login_required
@require_http_methods(["GET", "POST"])
def team_list(request: AuthenticatedRequest) -> HttpResponse:
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = roster.team_create(name=form.cleaned_data["name"], admin=request.user)
        except TeamError as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, f"Created {team.name}: you are its admin.")
            return redirect("team_detail", pk=team.pk)
    return render(
        request,
        "reports/team_list.html",
        {
            "memberships": roster.memberships_of(request.user),
            "invitations": invitations.invitations_for_person(request.user),
            "form": form,
        },
        status=400 if form.errors else 200,
    )


def _team_response(
    request: AuthenticatedRequest,
    membership: Membership,
    *,
    report_form: TeamReportForm | None = None,
    member_form: MemberAddForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = team_page(request.user, membership)
    can = context["can"]
    now = timezone.now()
    if can[Capability.SEE_TEAM_SPEND]:
        context["month"] = team_overview(membership.team, now=now)
    # Who spent what: the whole team for admins and viewers, one's own part for members.
    period = team_period(request.GET.get("period"))
    context["spend"] = team_spend(
        membership.team,
        request.user,
        whole_team=can[Capability.SEE_TEAM_SPEND],
        period=period,
        by=request.GET.get("by", "member"),
        now=now,
    )
    if can[Capability.DOWNLOAD_CSV]:
        csv_url = reverse("team_spend_export_csv", args=[membership.team.pk])
        context["spend"]["csv_url"] = f"{csv_url}?{urlencode({'period': period})}"
    if can[Capability.REQUEST_TEAM_REPORT]:
        context["form"] = report_form or TeamReportForm()
    if can[Capability.MANAGE_MEMBERS]:
        context["member_form"] = member_form or MemberAddForm()
    if can[Capability.CHOOSE_PRICE_BOOK]:
        context["price_book_form"] = TeamPriceBookForm(
            team=membership.team, initial={"price_book": membership.team.price_book}
        )
        context["view_form"] = SavedViewForm()
    return render(request, "reports/team_detail.html", context, status=status)


@login_required
@require_GET
def team_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    return _team_response(request, membership_or_404(request, pk))


@login_required
@require_http_methods(["GET", "POST"])
def team_sharing(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.SHARE_OWN_CONNECTIONS)
    team = membership.team
    if request.method == "POST":
        form = SharingForm(request.POST, user=request.user)
        if form.is_valid():
            labels = sharing.team_sharing_set(
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
def team_member_add(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Invite someone by email address (M6). The page says the same for every address,
    whether or not it has an account here."""
    membership = membership_or_404(request, pk, Capability.MANAGE_MEMBERS)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            sent = invitations.invitation_send(
                team=membership.team,
                actor=request.user,
                email=form.cleaned_data["who"],
                role=form.cleaned_data["role"],
            )
        except TeamError as exc:
            form.add_error("who", str(exc))
        else:
            if sent.emailed:
                messages.success(
                    request,
                    f"{invitations.SENT} to {sent.invitation.email}. Its link works once, for "
                    f"{settings.OSAI_INVITATION_DAYS} days; they join when they accept.",
                )
            else:
                messages.error(
                    request,
                    f"The invitation to {sent.invitation.email} could not be emailed: withdraw "
                    "it and try again later.",
                )
            return redirect("team_detail", pk=pk)
    return _team_response(request, membership, member_form=form, status=400)


def _member_or_404(membership: Membership, user_pk: int) -> User:
    target = get_object_or_404(Membership, team=membership.team, user_id=user_pk)
    return target.user


@login_required
@require_POST
def team_member_role(request: AuthenticatedRequest, pk: int, user_pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.MANAGE_MEMBERS)
    user = _member_or_404(membership, user_pk)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles.")
        return redirect("team_detail", pk=pk)
    role = form.cleaned_data["role"]
    try:
        roster.team_member_set_role(team=membership.team, actor=request.user, user=user, role=role)
    except TeamError as exc:
        messages.error(request, str(exc))
    else:
        label = Membership.Role(role).label.lower()
        messages.success(request, f"{user.get_username()} is now a {label}.")
    return redirect("team_detail", pk=pk)


@login_required
@require_POST
def team_member_remove(request: AuthenticatedRequest, pk: int, user_pk: int) -> HttpResponse:
    """An admin removes someone, or anyone in the team leaves (removes themselves)."""
    leaving = user_pk == request.user.pk
    membership = membership_or_404(
        request, pk, Capability.SEE_TEAM if leaving else Capability.MANAGE_MEMBERS
    )
    user = _member_or_404(membership, user_pk)
    team = membership.team
    try:
        roster.team_member_remove(team=team, actor=request.user, user=user)
    except TeamError as exc:
        messages.error(request, str(exc))
        return redirect("team_detail", pk=pk)
    if leaving:
        messages.success(request, f"You left {team.name}; it no longer sees your connections.")
        return redirect("team_list")
    messages.success(
        request,
        f"Removed {user.get_username()} from {team.name}; their connections no longer count "
        "for its reports.",
    )
    return redirect("team_detail", pk=pk)


@login_required
@require_POST
def team_price_book(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.CHOOSE_PRICE_BOOK)
    form = TeamPriceBookForm(request.POST, team=membership.team)
    if not form.is_valid():
        messages.error(request, "Choose one of the price books.")
        return redirect("team_detail", pk=pk)
    book = form.cleaned_data["price_book"]
    roster.team_price_book_set(team=membership.team, actor=request.user, price_book=book)
    messages.success(
        request,
        f"{membership.team.name}'s reports are now priced with "
        f"{book.name if book else 'the default price book'}.",
    )
    return redirect("team_detail", pk=pk)


@login_required
@require_POST
def team_digest(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """A viewer asks for the team's weekly and monthly digests, or stops them."""
    membership = membership_or_404(request, pk, Capability.OPT_INTO_TEAM_DIGEST)
    wanted = request.POST.get("team_digest") == "on"
    roster.team_digest_set(membership=membership, wanted=wanted)
    team = membership.team.name
    if wanted:
        messages.success(request, f"You will get {team}'s weekly and monthly digests.")
    else:
        messages.success(request, f"You no longer get {team}'s digests.")
    return redirect("team_detail", pk=pk)


@login_required
@require_POST
def team_two_factor(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """An admin requires two-factor sign-in of the team's password users, or stops (S15)."""
    membership = membership_or_404(request, pk, Capability.MANAGE_MEMBERS)
    required = request.POST.get("require_two_factor") == "on"
    roster.team_two_factor_set(team=membership.team, actor=request.user, required=required)
    team = membership.team.name
    if required:
        messages.success(
            request,
            f"{team}'s members who sign in with a password must now set up two-factor sign-in.",
        )
    else:
        messages.success(request, f"{team} no longer requires two-factor sign-in.")
    return redirect("team_detail", pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def team_report_new(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.REQUEST_TEAM_REPORT)
    if request.method == "GET":  # a link, a saved view, "run again": the form pre-filled
        return _team_response(
            request, membership, report_form=prefilled(TeamReportForm, request.GET)
        )
    form = TeamReportForm(request.POST)
    if form.is_valid():
        try:
            report = team_reports.team_report_request(
                team=membership.team, admin=request.user, **form.request_kwargs()
            )
        except report_requests.ReportRequestError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("report_detail", pk=report.pk)
    return _team_response(request, membership, report_form=form, status=400)


@login_required
@require_GET
def team_report_detail(request: AuthenticatedRequest, pk: int, report_pk: int) -> HttpResponse:
    """The team's address of one of its reports: the report page, for those who may see it."""
    membership = membership_or_404(request, pk, Capability.SEE_TEAM_REPORTS)
    if team_reports.team_report_for(membership.team, report_pk) is None:
        raise Http404("No such report.")
    return redirect("report_detail", pk=report_pk)
