"""Channels: a person's own (/channels/) and a team's (/teams/<id>/channels/, its admins only:
MANAGE_CHANNELS). List, add, delete, send a test. Anyone else gets 404 (S2); a URL or secret
is never rendered back (the list shows its host and last four characters).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from reports.access import Capability
from reports.models import Channel, Delivery, Team
from reports.spend import channels as channel_service
from reports.views.forms import ChannelForm
from reports.views.http import AuthenticatedRequest, membership_or_404


def _listed(queryset: Any) -> list[Channel]:
    recent = Delivery.objects.order_by("-created_at", "-pk")
    channels = list(queryset.prefetch_related(Prefetch("deliveries", queryset=recent)))
    for channel in channels:
        channel.last_delivery = next(iter(channel.deliveries.all()), None)
    return channels


def _page(request: AuthenticatedRequest, team: Team | None) -> HttpResponse:
    form = ChannelForm(request.POST or None, team=team is not None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            channel_service.channel_add(
                actor=request.user,
                kind=data["kind"],
                name=data["name"],
                team=team,
                emails=[data["emails"]],
                to_team_admins=data.get("to_team_admins", False),
                url=data["url"],
                secret=data["secret"],
            )
        except channel_service.ChannelError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "The channel is added. Send a test to see it arrive.")
            return redirect(_back(team))
    owned = (
        Channel.objects.filter(team=team) if team else Channel.objects.filter(owner=request.user)
    )
    return render(
        request,
        "reports/channel_list.html",
        {"team": team, "channels": _listed(owned), "form": form},
        status=400 if form.errors else 200,
    )


def _back(team: Team | None) -> str:
    return reverse("team_channels", args=[team.pk]) if team else reverse("channel_list")


@login_required
@require_http_methods(["GET", "POST"])
def channel_list(request: AuthenticatedRequest) -> HttpResponse:
    return _page(request, None)


@login_required
@require_http_methods(["GET", "POST"])
def team_channels(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.MANAGE_CHANNELS)
    return _page(request, membership.team)


def _managed_or_404(request: AuthenticatedRequest, pk: int) -> Channel:
    channel = channel_service.channels_managed_by(request.user).filter(pk=pk).first()
    if channel is None:
        raise Http404("No such channel.")
    return channel


@login_required
@require_POST
def channel_delete(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    channel = _managed_or_404(request, pk)
    team = channel.team
    channel_service.channel_delete(actor=request.user, channel=channel)
    messages.success(request, "The channel was removed; budgets no longer send to it.")
    return redirect(_back(team))


@login_required
@require_POST
def channel_test(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    channel = _managed_or_404(request, pk)
    channel_service.channel_send_test(actor=request.user, channel=channel)
    messages.success(request, f"A test message to {channel.name} is queued; its state shows here.")
    return redirect(_back(channel.team))
