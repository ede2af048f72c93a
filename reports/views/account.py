"""A person's own settings: which digest emails they get, and their API tokens (W2)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from reports.integrations import api_tokens
from reports.models import Channel, DigestPreference, validate_one_line
from reports.views.forms import channel_label
from reports.views.http import AuthenticatedRequest


class DigestForm(forms.ModelForm):
    class Meta:
        model = DigestPreference
        fields = ["weekly", "monthly", "anomalies", "channels"]
        labels = {
            "weekly": "Weekly digest, on Mondays, for the week before",
            "monthly": "Monthly digest, on the 1st, for the month before",
            "anomalies": "Email me about usage anomalies",
            "channels": "Also send my digests to",
        }
        widgets = {"channels": forms.CheckboxSelectMultiple}

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["channels"]
        assert isinstance(field, forms.ModelMultipleChoiceField)
        field.queryset = Channel.objects.filter(owner=user).order_by("name", "pk")
        field.required = False
        field.label_from_instance = channel_label  # type: ignore[method-assign,assignment]


@login_required
@require_http_methods(["GET", "POST"])
def digest_settings(request: AuthenticatedRequest) -> HttpResponse:
    preference, _ = DigestPreference.objects.get_or_create(user=request.user)
    form = DigestForm(request.POST or None, instance=preference, user=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Saved your digest settings.")
        return redirect("digest_settings")
    return render(
        request,
        "reports/digest_settings.html",
        {"form": form, "email": request.user.email},
    )


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=api_tokens.MAX_NAME,
        required=False,
        label="Name",
        help_text="What the token is for, e.g. “finance cron”.",
        validators=[validate_one_line],
    )


def _api_tokens_page(
    request: AuthenticatedRequest, form: ApiTokenForm, new_token: str = "", status: int = 200
) -> HttpResponse:
    return render(
        request,
        "reports/api_tokens.html",
        {
            "form": form,
            "tokens": api_tokens.api_tokens_of(request.user),
            "new_token": new_token,
            "api_base": request.build_absolute_uri("/api/v1/"),
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def api_token_list(request: AuthenticatedRequest) -> HttpResponse:
    """The person's API tokens; a POST makes one and shows it, once, in this answer only."""
    form = ApiTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        row, token = api_tokens.api_token_create(user=request.user, name=form.cleaned_data["name"])
        messages.success(request, f"Made the token “{row.name}”. Copy it now: it is shown once.")
        return _api_tokens_page(request, ApiTokenForm(), new_token=token)
    return _api_tokens_page(request, form)


@login_required
@require_POST
def api_token_revoke(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    if not api_tokens.api_token_revoke(user=request.user, pk=pk):
        raise Http404("No such token.")
    messages.success(request, "Revoked the token: it stops working at once.")
    return redirect("api_token_list")
