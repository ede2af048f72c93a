"""OSAI's worker webhooks: the receiver (the one CSRF-exempt endpoint), the activity feed and
its polling partial, and each connection's webhook page (its URL; rotate the secret)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from reports.integrations import webhooks
from reports.models import Connection
from reports.pages.activity import activity_page, has_newer
from reports.pipeline import connections
from reports.views.http import (
    AuthenticatedRequest,
    BadParameter,
    bad_request,
    htmx_login_required,
    id_parameter,
    over_rate,
)

FEED_POLL_SECONDS = 5


def _json_error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


@csrf_exempt  # OSAI cannot send a CSRF token: the secret in the URL is the credential (W1)
def osai_webhook(request: HttpRequest, secret: str) -> HttpResponse:
    """Receive one OSAI webhook delivery. A wrong secret is a 404, whatever the method."""
    connection = webhooks.connection_for_webhook(secret)
    if connection is None:
        return _json_error(404, "Not found.")
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if over_rate(
        request,
        group="osai-webhook",
        key=connection.webhook_secret_sha256,
        rate=settings.OSAI_WEBHOOK_RATE,
    ):
        response = _json_error(429, "Too many deliveries for this connection; slow down.")
        response["Retry-After"] = "60"
        return response
    # Per person too: a person's many connections do not each get the whole rate.
    if over_rate(
        request,
        group="osai-webhook-person",
        key=connections.person_key(connection.owner),
        rate=settings.OSAI_WEBHOOK_PERSON_RATE,
    ):
        response = _json_error(429, "Too many deliveries for this person's connections; slow down.")
        response["Retry-After"] = "60"
        return response
    limit = settings.OSAI_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _json_error(413, "The body is larger than this endpoint accepts.")
    body = request.read(limit + 1)  # never more than the cap, whatever was declared
    try:
        event, created = webhooks.webhook_receive(
            connection=connection, body=body, content_type=request.content_type or ""
        )
    except webhooks.WebhookRejected as exc:
        return _json_error(exc.status, exc.message)
    return JsonResponse({"stored": created, "duplicate": not created, "id": event.pk})


def _feed_connection(request: AuthenticatedRequest) -> Connection | None:
    """The connection the feed is narrowed to (?connection=<id>, one's own only), or None.
    A malformed id raises BadParameter (400); someone else's is a 404."""
    pk = id_parameter(request, "connection")
    if pk is None:
        return None
    return get_object_or_404(Connection, pk=pk, owner=request.user)


@login_required
@require_GET
def activity(request: AuthenticatedRequest) -> HttpResponse:
    try:
        connection = _feed_connection(request)
    except BadParameter as exc:
        return bad_request(exc)
    context = activity_page(request.user, connection=connection)
    context["connections"] = Connection.objects.filter(owner=request.user)
    context["poll_seconds"] = FEED_POLL_SECONDS
    return render(request, "reports/activity.html", context)


@htmx_login_required
@require_GET
def activity_feed(request: AuthenticatedRequest) -> HttpResponse:
    """The feed alone, polled by the page: 204 (nothing to swap) until a newer delivery arrives."""
    try:
        connection = _feed_connection(request)
        after_id = id_parameter(request, "after") or 0
    except BadParameter as exc:
        return bad_request(exc)
    if not has_newer(
        request.user, after=after_id, connection_id=connection.pk if connection else None
    ):
        return HttpResponse(status=204)
    context = activity_page(request.user, connection=connection)
    context["poll_seconds"] = FEED_POLL_SECONDS
    return render(request, "reports/activity.html#activity-feed", context)


@login_required
@require_GET
def connection_webhook(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    connection = get_object_or_404(Connection, pk=pk, owner=request.user)
    context = activity_page(request.user, connection=connection)
    context.update(
        {
            "connection": connection,
            "webhook_url": request.build_absolute_uri(webhooks.webhook_path(connection)),
            "poll_seconds": FEED_POLL_SECONDS,
            "max_kb": settings.OSAI_WEBHOOK_MAX_BYTES // 1024,
        }
    )
    return render(request, "reports/connection_webhook.html", context)


@login_required
@require_POST
def connection_webhook_rotate(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    connection = get_object_or_404(Connection, pk=pk, owner=request.user)
    webhooks.webhook_secret_rotate(connection=connection)
    messages.success(
        request,
        f"“{connection.label}” has a new webhook URL. Give it to OSAI: the old one is gone.",
    )
    return redirect("connection_webhook", pk=connection.pk)
