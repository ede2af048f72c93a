"""A team's price books: one book's page (its versions; for those who may change it, new rates,
its name and currency), making the team's own copy, and choosing a book for the team.

Team admins only: everyone else gets 404 (S2), and so does a book of another team. A shared
book is read-only for a team's admins unless they are staff (reports/teams/price_books.py).
Bad input changes nothing and says why (A6, I1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from reports.access import Capability
from reports.models import Membership, PriceBook, PriceBookVersion
from reports.pages.price_book import current_rates, price_book_page
from reports.teams import TeamError, price_books, roster
from reports.views.forms import PriceBookCopyForm, PriceBookSettingsForm, PriceBookVersionForm
from reports.views.http import AuthenticatedRequest, Saved, membership_or_404, save_form

PAGE = "team_price_book_detail"


def _book_or_404(
    request: AuthenticatedRequest, pk: int, book_pk: int
) -> tuple[Membership, PriceBook]:
    membership = membership_or_404(request, pk, Capability.CHOOSE_PRICE_BOOK)
    book = price_books.book_for_team(membership.team, book_pk)
    if book is None:
        raise Http404("No such price book.")
    return membership, book


def _read_only(request: AuthenticatedRequest, membership: Membership, book: PriceBook) -> bool:
    """A shared book, for a team admin who is not staff: say so (nothing changes)."""
    if price_books.can_edit(book, membership.team, request.user):
        return False
    messages.error(
        request,
        f"“{book.name}” is a shared price book: only staff change it. Make your team's own "
        "copy to set your rates.",
    )
    return True


def _version_form(request: AuthenticatedRequest, book: PriceBook) -> PriceBookVersionForm:
    earliest = price_books.earliest_start(request.user)
    return PriceBookVersionForm(
        earliest=earliest.date() if earliest else None,
        initial={"effective": timezone.now().date(), **current_rates(book)},  # today, UTC
    )


def _page(
    request: AuthenticatedRequest,
    membership: Membership,
    book: PriceBook,
    *,
    version_form: PriceBookVersionForm | None = None,
    settings_form: PriceBookSettingsForm | None = None,
    copy_form: PriceBookCopyForm | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    context = price_book_page(team, book, request.user)
    context["version_form"] = version_form or _version_form(request, book)
    context["settings_form"] = settings_form or PriceBookSettingsForm(
        initial={"name": book.name, "currency": book.currency}
    )
    context["copy_form"] = copy_form or PriceBookCopyForm(
        team=team, initial={"source": book.pk, "name": f"{book.name} (copy)"}
    )
    return render(request, "reports/price_book.html", context, status=status)


@login_required
@require_GET
def price_book_detail(request: AuthenticatedRequest, pk: int, book_pk: int) -> HttpResponse:
    membership, book = _book_or_404(request, pk, book_pk)
    return _page(request, membership, book)


@login_required
@require_POST
def price_book_copy(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Make the team's own book, a copy of one it may see; then edit it on its page."""
    membership = membership_or_404(request, pk, Capability.CHOOSE_PRICE_BOOK)
    team = membership.team
    form = PriceBookCopyForm(request.POST, team=team)
    done = save_form(
        request,
        form,
        lambda: price_books.price_book_copy(
            team=team,
            actor=request.user,
            source=form.cleaned_data["source"],
            name=form.cleaned_data["name"],
        ),
        success=lambda book: (
            f"Made “{book.name}”, {team.name}'s own price book. Set its rates below, then use "
            "it for the team's reports."
        ),
        then=lambda book: redirect(PAGE, pk=pk, book_pk=book.pk),
        error_field="name",
    )
    if done is not None:
        return done
    shown: PriceBook | None = form.cleaned_data.get("source") or team.price_book
    shown = shown or price_books.books_for_team(team).first()
    if shown is None:
        raise Http404("No price book to copy.")
    return _page(request, membership, shown, copy_form=form, status=400)


@dataclass(frozen=True)
class _BookChange:
    """A POST that changes one book: who asks, as which team's admin, and which book."""

    request: AuthenticatedRequest
    membership: Membership
    book: PriceBook

    @property
    def editor(self) -> dict[str, Any]:
        """The change services' own arguments: which book, for which team, by whom."""
        return {"book": self.book, "team": self.membership.team, "actor": self.request.user}

    def save(
        self,
        form: forms.Form,
        change: Callable[[], Saved],
        *,
        success: Callable[[Saved], str],
        shown_in: str,
    ) -> HttpResponse:
        """`change` for a valid form, then back to the book's page; else the page again, the
        form in its place on it (`shown_in`) with what is wrong (400)."""
        done = save_form(
            self.request,
            form,
            change,
            success=success,
            then=lambda _: redirect(PAGE, pk=self.membership.team.pk, book_pk=self.book.pk),
        )
        if done is not None:
            return done
        shown: dict[str, Any] = {shown_in: form}
        return _page(self.request, self.membership, self.book, status=400, **shown)


def _book_to_change(
    view: Callable[[_BookChange], HttpResponse],
) -> Callable[[AuthenticatedRequest, int, int], HttpResponse]:
    """For a view that changes a book: the team's admins only (404 for everyone else); a
    shared book, for one who is not staff, is left as it is (back to its page, saying why)."""

    @wraps(view)
    def checked(request: AuthenticatedRequest, pk: int, book_pk: int) -> HttpResponse:
        membership, book = _book_or_404(request, pk, book_pk)
        if _read_only(request, membership, book):
            return redirect(PAGE, pk=pk, book_pk=book.pk)
        return view(_BookChange(request, membership, book))

    return checked


@login_required
@require_POST
@_book_to_change
def price_book_version_add(change: _BookChange) -> HttpResponse:
    """New rates from a day on (or new rates for a day that has a version)."""
    earliest = price_books.earliest_start(change.request.user)
    form = PriceBookVersionForm(change.request.POST, earliest=earliest.date() if earliest else None)

    def rates_saved(saved: tuple[PriceBookVersion, bool]) -> str:
        version, created = saved
        return (
            f"{'Saved' if created else 'Replaced'} the rates from "
            f"{version.effective_from:%Y-%m-%d} (UTC): “{change.book.name}” prices usage "
            "from that day on with them."
        )

    return change.save(
        form,
        lambda: price_books.price_book_version_save(
            **change.editor,
            effective=form.cleaned_data["effective"],
            rates=form.rates(),
            note=form.cleaned_data["note"],
        ),
        success=rates_saved,
        shown_in="version_form",
    )


@login_required
@require_POST
def price_book_version_delete(
    request: AuthenticatedRequest, pk: int, book_pk: int, version_pk: int
) -> HttpResponse:
    membership, book = _book_or_404(request, pk, book_pk)
    version = get_object_or_404(PriceBookVersion, pk=version_pk, price_book=book)
    try:
        price_books.price_book_version_delete(
            version=version, team=membership.team, actor=request.user
        )
    except TeamError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Deleted the rates from {version.effective_from:%Y-%m-%d}.")
    return redirect(PAGE, pk=pk, book_pk=book.pk)


@login_required
@require_POST
@_book_to_change
def price_book_settings(change: _BookChange) -> HttpResponse:
    """A new name, or a new currency while no budget uses the book."""
    form = PriceBookSettingsForm(change.request.POST)
    return change.save(
        form,
        lambda: price_books.price_book_settings_set(**change.editor, **form.cleaned_data),
        success=lambda _: f"Saved “{change.book.name}” ({change.book.currency}).",
        shown_in="settings_form",
    )


@login_required
@require_POST
def price_book_use(request: AuthenticatedRequest, pk: int, book_pk: int) -> HttpResponse:
    """Price the team's reports with this book (all of them, earlier ones included)."""
    membership, book = _book_or_404(request, pk, book_pk)
    team = membership.team
    try:
        roster.team_price_book_set(team=team, actor=request.user, price_book=book)
    except TeamError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{team.name}'s reports are now priced with “{book.name}”.")
    return redirect(PAGE, pk=pk, book_pk=book.pk)
