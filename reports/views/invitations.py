"""Invitations (M6): the link's page (join, sign in, or create an account), withdrawing one
from the team page, and accepting or declining one's own from the teams page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from reports.access import Capability
from reports.models import Membership
from reports.teams import TeamError, invitations
from reports.views.forms import InvitationSignUpForm
from reports.views.http import AuthenticatedRequest, membership_or_404

# The backend a new account is signed in with (the one that checks passwords).
SIGN_IN_BACKEND = "django.contrib.auth.backends.ModelBackend"

T = TypeVar("T")


def _gone(request: HttpRequest, exc: TeamError) -> HttpResponse:
    return render(request, "reports/invitation_gone.html", {"reason": str(exc)}, status=410)


def _joined(request: HttpRequest, membership: Membership) -> HttpResponse:
    label = Membership.Role(membership.role).label.lower()
    messages.success(request, f"You joined {membership.team.name} as a {label}.")
    return redirect("team_detail", pk=membership.team_id)


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The link's page: "Join" for anyone signed in; "Sign in to accept" or "Create an
    account" for everyone else. A used, declined, withdrawn or expired link: 410."""
    found = invitations.invitation_by_token(token)
    if found is None:
        raise Http404("No such invitation.")
    try:
        invitations.ensure_pending(found)
    except invitations.InvitationGone as exc:
        return _gone(request, exc)
    if request.GET.get("sign_in"):
        return redirect_to_login(request.path, settings.LOGIN_URL)
    form = None
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                membership = invitations.invitation_accept(token=token, user=request.user)
            except invitations.InvitationGone as exc:
                return _gone(request, exc)
            return _joined(request, membership)
    else:
        form = InvitationSignUpForm(request.POST or None, email=found.email)
        if request.method == "POST" and form.is_valid():
            try:
                user, membership = invitations.invitation_sign_up(
                    token=token,
                    username=form.cleaned_data["username"],
                    password=form.cleaned_data["password1"],
                )
            except invitations.InvitationGone as exc:
                return _gone(request, exc)
            except TeamError as exc:
                form.add_error("username", str(exc))
            else:
                login(request, user, backend=SIGN_IN_BACKEND)
                return _joined(request, membership)
    return render(
        request,
        "reports/invitation.html",
        {
            "invitation": found,
            "role": Membership.Role(found.role).label.lower(),
            "form": form,
        },
        status=400 if form is not None and form.errors else 200,
    )


@login_required
@require_POST
def invitation_withdraw(request: AuthenticatedRequest, pk: int, invitation_pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.MANAGE_MEMBERS)
    try:
        withdrawn = invitations.invitation_withdraw(
            team=membership.team, actor=request.user, pk=invitation_pk
        )
    except invitations.InvitationGone:
        raise Http404("No such invitation.") from None
    messages.success(
        request, f"Withdrew the invitation of {withdrawn.email}: its link no longer works."
    )
    return redirect("team_detail", pk=pk)


def _mine_or_404(service: Callable[..., T], request: AuthenticatedRequest, invitation_pk: int) -> T:
    """Accept or decline one of the person's own pending invitations; 404 if there is none."""
    try:
        return service(user=request.user, pk=invitation_pk)
    except invitations.InvitationGone:
        raise Http404("No such invitation.") from None


@login_required
@require_POST
def invitation_accept_mine(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    return _joined(request, _mine_or_404(invitations.invitation_accept_mine, request, pk))


@login_required
@require_POST
def invitation_decline_mine(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    declined = _mine_or_404(invitations.invitation_decline_mine, request, pk)
    messages.success(request, f"Declined the invitation to {declined.team.name}.")
    return redirect("team_list")
