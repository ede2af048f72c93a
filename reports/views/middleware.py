"""Middleware of our own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control

from reports import audit
from reports.models import AuditEntry
from reports.views.http import client_ip


def private_pages(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[..., HttpResponse]:
    """S11: a signed-in person's pages, partials and downloads are theirs alone: no browser
    or proxy cache may keep them (a shared computer's back button, a company proxy)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, private=True, no_store=True)
        return response

    return middleware


def audit_source(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[..., HttpResponse]:
    """M7: changes made while answering a request are recorded as made from a page (or the
    API, under /api/), from the client's address (reports/audit.py)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        api = request.path.startswith("/api/")
        with audit.acting(AuditEntry.Via.API if api else AuditEntry.Via.PAGE, client_ip(request)):
            return get_response(request)

    return middleware
