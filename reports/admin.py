"""Django admin: price books (the operator sets the rates), teams, and read-only pipeline rows.

Connections are read-only here and never show a token: token_encrypted and jwt_encrypted are
excluded from every form, list and detail page; the token appears only as "…last4" (T2).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from reports.metrics import (
    RATE_FIELDS,
    REPORT_PROGRESS_FIELDS,
    REPORT_REQUEST_FIELDS,
    USAGE_COLUMNS,
)
from reports.models import (
    ApiToken,
    AuditEntry,
    Bucket,
    Connection,
    Membership,
    PriceBook,
    PriceBookVersion,
    Report,
    Team,
    WebhookEvent,
)
from reports.teams import price_books

SECRET_FIELDS = (
    "token_encrypted",
    "jwt_encrypted",
    "webhook_secret_encrypted",
    "webhook_secret_sha256",
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the app writes itself: the admin may look and delete, never add or edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Price books --------------------------------------------------------------------------------


class PriceBookVersionInline(admin.TabularInline):
    """Staff may back-date a version: the ledger re-prices the book, and reports requested
    before the change say their figures were re-priced (pricing.repriced_by). Rates are 0 to
    1,000 per hour or per GB-month (the model's validators)."""

    model = PriceBookVersion
    extra = 0
    ordering = ("effective_from",)
    fields = ("effective_from", *RATE_FIELDS, "note", "created_at")
    readonly_fields = ("created_at",)


class PriceBookForm(forms.ModelForm):
    """The currency is fixed once a budget uses the book; a team's own book is never the
    default (reports/teams/price_books.py)."""

    class Meta:
        model = PriceBook
        fields = ("name", "currency", "team", "is_default", "is_example")

    def clean_currency(self) -> str:
        currency = str(self.cleaned_data["currency"]).strip().upper()
        if not price_books.CURRENCY.fullmatch(currency):
            raise forms.ValidationError("A currency is three letters, such as EUR or USD.")
        book = self.instance
        if book.pk and currency != book.currency and price_books.currency_locked(book):
            raise forms.ValidationError(
                f"The currency stays {book.currency}: a budget uses this price book, and its "
                "amount is in that currency."
            )
        return currency

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("is_default") and data.get("team") is not None:
            raise forms.ValidationError("A team's own price book cannot be the default.")
        return data


@admin.register(PriceBook)
class PriceBookAdmin(admin.ModelAdmin):
    form = PriceBookForm
    list_display = (
        "name",
        "currency",
        "team",
        "is_default",
        "is_example",
        "version_count",
        "created_at",
    )
    list_filter = ("currency", "is_default", "is_example", ("team", admin.EmptyFieldListFilter))
    search_fields = ("name", "team__name")
    list_select_related = ("team",)
    inlines = (PriceBookVersionInline,)
    fieldsets = (
        (None, {"fields": ("name", "currency", "team")}),
        (
            "Use",
            {
                "fields": ("is_default", "is_example"),
                "description": (
                    "Reports without a price book of their own use the default book. An example "
                    "book is labelled on every page as example prices, not OSAI's."
                ),
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[PriceBook]:
        return super().get_queryset(request).prefetch_related("versions")

    @admin.display(description="Versions")
    def version_count(self, obj: PriceBook) -> int:
        return len(obj.versions.all())

    def save_model(self, request: HttpRequest, obj: PriceBook, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.is_default:
            # One default book: making this one the default retires the previous one.
            PriceBook.objects.filter(is_default=True).exclude(pk=obj.pk).update(is_default=False)


# --- Teams ----------------------------------------------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ("user",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    inlines = (MembershipInline,)


# --- Connections: never a token -------------------------------------------------------------------


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    list_display = ("label", "owner", "region", "account_name", "status", "token", "created_at")
    list_filter = ("region", "status")
    search_fields = ("label", "owner__username", "account_name")
    list_select_related = ("owner",)
    exclude = SECRET_FIELDS
    fields = (
        "label",
        "owner",
        "region",
        "account_name",
        "status",
        "status_message",
        "token",
        "last_verified_at",
        "jwt_expires_at",
        "shared_with_teams",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="Token")
    def token(self, obj: Connection) -> str:
        return obj.token_hint

    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        # The ciphertexts are not even loaded.
        return super().get_queryset(request).defer(*SECRET_FIELDS)


# --- Reports and buckets: read-only ---------------------------------------------------------------


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = (
        "pk",
        "owner",
        "team",
        "state",
        "granularity",
        "period_start",
        "period_end",
        "buckets_done",
        "buckets_failed",
        "buckets_total",
        "requested_at",
    )
    list_filter = ("state", "granularity", "team")
    search_fields = ("owner__username", "team__name")
    list_select_related = ("owner", "team")
    date_hierarchy = "requested_at"
    exclude = ("buckets", "connections")
    readonly_fields = (
        "owner",
        "team",
        "price_book",
        *REPORT_REQUEST_FIELDS,
        *REPORT_PROGRESS_FIELDS,
        "error_message",
        "requested_at",
        "started_at",
        "finished_at",
    )


# What identifies a bucket and where it stands: in the list, and first on its page.
BUCKET_SUMMARY = (
    "connection",
    "period_start",
    "period_end",
    "is_closed",
    "state",
    "osai_report_id",
)


@admin.register(Bucket)
class BucketAdmin(ReadOnlyAdmin):
    list_display = ("pk", *BUCKET_SUMMARY, "attempts", "polls", "finished_at")
    list_filter = ("state", "is_closed")
    search_fields = ("connection__label", "connection__owner__username", "osai_report_id")
    list_select_related = ("connection",)
    date_hierarchy = "period_start"
    exclude = ("osai_response",)  # the full answer is archived; its signed link was stripped
    readonly_fields = (
        *BUCKET_SUMMARY,
        "osai_creation_time_raw",
        "osai_status",
        "attempts",
        "polls",
        "next_attempt_at",
        "lease_until",
        "deadline_at",
        "error_message",
        "created_at",
        "started_at",
        "finished_at",
        *USAGE_COLUMNS,
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Bucket]:
        return (
            super()
            .get_queryset(request)
            .defer("osai_response", "connection__token_encrypted", "connection__jwt_encrypted")
        )


# --- Integrations: read-only; neither a webhook's raw body nor a token's hash is shown ----------


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("pk", "connection", "kind", "succeeded", "worker_gb", "received_at")
    list_filter = ("kind", "succeeded", "worker_gb")
    list_select_related = ("connection",)
    fields = (
        "connection",
        "kind",
        "kind_raw",
        "succeeded",
        "worker_gb",
        "task_id",
        "finished_at",
        "message",
        "received_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        return super().get_queryset(request).defer("body")


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    list_select_related = ("user",)
    fields = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log (M7): read-only, and never deleted here either (nor pruned)."""

    list_display = ("at", "actor_name", "action", "object_type", "object_id", "label", "via")
    list_filter = ("action", "via")
    search_fields = ("actor_name", "label", "object_id")
    date_hierarchy = "at"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
