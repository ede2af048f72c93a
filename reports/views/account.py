"""A person's own settings: which digest emails they get."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from reports.models import DigestPreference
from reports.views.http import AuthenticatedRequest


class DigestForm(forms.ModelForm):
    class Meta:
        model = DigestPreference
        fields = ["weekly", "monthly"]
        labels = {
            "weekly": "Weekly digest, on Mondays, for the week before",
            "monthly": "Monthly digest, on the 1st, for the month before",
        }


@login_required
@require_http_methods(["GET", "POST"])
def digest_settings(request: AuthenticatedRequest) -> HttpResponse:
    preference, _ = DigestPreference.objects.get_or_create(user=request.user)
    form = DigestForm(request.POST or None, instance=preference)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Saved your digest settings.")
        return redirect("digest_settings")
    return render(
        request,
        "reports/digest_settings.html",
        {"form": form, "email": request.user.email},
    )
