"""The home page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from reports.pages.history import home_page
from reports.views.http import AuthenticatedRequest


@login_required
@require_GET
def home(request: AuthenticatedRequest) -> HttpResponse:
    return render(request, "reports/home.html", home_page(request.user))
