"""The home page: the overview of this month's spend, budgets, recent reports."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from reports.pages import anomalies as anomaly_pages
from reports.pages import links
from reports.pages.history import home_page
from reports.pages.overview import overview_page
from reports.pages.price_book import live_repricing_notes
from reports.views.http import AuthenticatedRequest, htmx_login_required


@login_required
@require_GET
def home(request: AuthenticatedRequest) -> HttpResponse:
    context = home_page(request.user)
    if context["connections"]:
        # The same connections, in label order (Connection's default ordering).
        context.update(overview_page(request.user, own=context["connections"]))
        context["saved_views"] = links.personal_views(request.user)
        # The overview's own instance of the book: its versions are read once.
        context["price_book_notes"] = live_repricing_notes(context["price_book"])
        # The last 30 days' anomalies, the newest causes in the overview's book: one query.
        context["anomalies"] = anomaly_pages.recent(
            [c.pk for c in context["connections"]], context["price_book"], now=timezone.now()
        )
    return render(request, "reports/home.html", context)


@htmx_login_required
@require_GET
def overview(request: AuthenticatedRequest) -> HttpResponse:
    """The overview alone, polled by the home page while tracking fetches this month."""
    return render(request, "reports/home.html#overview", overview_page(request.user))
