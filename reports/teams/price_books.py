"""A team's own price books: made as a copy, edited by the team's admins without staff rights.

The rules, in one place:

- A *shared* book (`PriceBook.team` empty, such as the shipped example) belongs to Django
  staff: a team's admins read it, copy it and choose it for their team, never change it.
- A team's *own* book is a copy (name, currency, every version) of a shared book or of
  another of its books. It is offered to that team only, and its admins change it: versions,
  name and currency. A copy of the example stays labelled as an example until they add a
  version of their own.
- A version's rates apply from a UTC midnight, never earlier than today's for anyone but
  staff: a team's admin cannot re-price what its reports already showed. A version on the
  date of an existing one replaces its rates; versions from today on may be deleted, not the
  last one. Staff (with the right to change price books) may back-date, here or in the
  Django admin; the ledger re-prices itself (ledger.on_version_changed) and the pages that
  show re-priced figures say so (pricing.repriced_by).
- Rates are 0 to 1,000 per hour or per GB-month (`models.MAX_RATE`).
- The currency is fixed once a budget uses the book: a budget's amount is in its book's
  currency (a team budget uses its team's book; other budgets, and teams without a book of
  their choice, the default book).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from reports import audit
from reports.access import Capability
from reports.metrics import PRICED, RATE_FIELDS
from reports.models import MAX_RATE, Budget, PriceBook, PriceBookVersion, Team
from reports.periods import utc_midnight
from reports.teams import TeamError, clean_name, roster

CURRENCY = re.compile(r"[A-Z]{3}")
NAME_MAX_LENGTH = PriceBook._meta.get_field("name").max_length or 120
_RATE_LABELS = {m.rate_field: m.label for m in PRICED if m.rate_field}


def books_for_team(team: Team) -> QuerySet[PriceBook]:
    """The books a team may read, copy and choose: the shared ones and its own, by name."""
    return PriceBook.objects.filter(Q(team__isnull=True) | Q(team=team)).order_by("name")


def own_books(team: Team) -> QuerySet[PriceBook]:
    return PriceBook.objects.filter(team=team).order_by("name")


def book_for_team(team: Team, book_pk: int) -> PriceBook | None:
    """One of the books the team may see (shared, or its own), else None."""
    return books_for_team(team).filter(pk=book_pk).first()


def is_price_staff(user: User) -> bool:
    """Django staff who may change any price book, and back-date a version."""
    return bool(user.is_active and user.is_staff and user.has_perm("reports.change_pricebook"))


def can_edit(book: PriceBook, team: Team, user: User) -> bool:
    """May `user` (an admin of `team`) change `book`: the team's own, or any book for staff."""
    return book.team_id == team.pk or is_price_staff(user)


def _require_editor(book: PriceBook, team: Team, actor: User) -> None:
    if roster.membership_for(actor, team.pk, Capability.CHOOSE_PRICE_BOOK) is None:
        raise TeamError("Only the team's admins can do that.")
    if book.team_id not in (None, team.pk):
        raise TeamError("That price book belongs to another team.")
    if not can_edit(book, team, actor):
        raise TeamError(
            f"“{book.name}” is a shared price book: only staff change it. Make your team's own "
            "copy to set your rates."
        )


def budgets_using(book: PriceBook) -> QuerySet[Budget]:
    """The budgets whose amounts are in this book's currency (see the module's rules)."""
    uses = Q(scope=Budget.Scope.TEAM, team__price_book=book)
    if book.is_default:
        uses |= ~Q(scope=Budget.Scope.TEAM) | Q(scope=Budget.Scope.TEAM, team__price_book=None)
    return Budget.objects.filter(uses)


def currency_locked(book: PriceBook) -> bool:
    return budgets_using(book).exists()


def _name_taken(name: str) -> TeamError:
    return TeamError(f"There is already a price book called “{name}”: choose another name.")


@transaction.atomic
def price_book_copy(*, team: Team, actor: User, source: PriceBook, name: str) -> PriceBook:
    """A new book of the team's own: `source`'s currency and every version of it, under
    `name`. The versions keep when they were saved (they are the same prices), so a copy
    re-prices nothing. Written without signals: the ledger fills the new book's rows as
    pages read them (ledger.ledger_fill)."""
    if roster.membership_for(actor, team.pk, Capability.CHOOSE_PRICE_BOOK) is None:
        raise TeamError("Only the team's admins can do that.")
    if source.team_id not in (None, team.pk):
        raise TeamError("That price book belongs to another team.")
    name = clean_name(name, noun="price book", max_length=NAME_MAX_LENGTH)
    try:
        with transaction.atomic():
            book = PriceBook.objects.create(
                name=name, currency=source.currency, team=team, is_example=source.is_example
            )
    except IntegrityError:
        raise _name_taken(name) from None
    PriceBookVersion.objects.bulk_create(
        PriceBookVersion(
            price_book=book,
            effective_from=version.effective_from,
            note=version.note,
            created_at=version.created_at,
            **{field: getattr(version, field) for field in RATE_FIELDS},
        )
        for version in source.versions.order_by("effective_from")
    )
    _record("price_book.copy", actor, book, team, after={"name": name, "copy_of": source.name})
    return book


def _record(
    action: str,
    actor: User,
    book: PriceBook,
    team: Team,
    *,
    object_type: str = "price_book",
    object_id: object = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    audit.record(
        action,
        actor=actor,
        object_type=object_type,
        object_id=book.pk if object_id is None else object_id,
        label=book.name,
        team=team,
        before=before,
        after=after,
    )


def _rates(version: PriceBookVersion) -> dict[str, Any]:
    return {field: str(getattr(version, field)) for field in RATE_FIELDS} | {
        "effective_from": f"{version.effective_from:%Y-%m-%d}",
        "note": version.note,
    }


def earliest_start(actor: User, now: datetime | None = None) -> datetime | None:
    """The earliest moment a new version may apply from for `actor`: today's UTC midnight,
    or None (any time) for staff."""
    if is_price_staff(actor):
        return None
    return utc_midnight((now or timezone.now()).date())


def check_rates(rates: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Every rate of a version, each 0 to MAX_RATE; raises TeamError naming the first wrong."""
    cleaned = {}
    for field in RATE_FIELDS:
        value = rates.get(field)
        label = _RATE_LABELS[field]
        if value is None:
            raise TeamError(f"{label}: enter a rate (0 if it is free).")
        value = Decimal(value)
        if not value.is_finite() or value < 0:
            raise TeamError(f"{label}: a rate cannot be negative.")
        if value > MAX_RATE:
            raise TeamError(f"{label}: a rate is at most 1,000 per hour or per GB-month.")
        cleaned[field] = value
    return cleaned


@transaction.atomic
def price_book_version_save(
    *,
    book: PriceBook,
    team: Team,
    actor: User,
    effective: date,
    rates: Mapping[str, Decimal],
    note: str = "",
    now: datetime | None = None,
) -> tuple[PriceBookVersion, bool]:
    """Rates in force from `effective` (a UTC day) on: a new version, or the new rates of the
    version already on that day. Returns the version and whether it is new. The ledger
    re-prices the book when this commits."""
    _require_editor(book, team, actor)
    start = utc_midnight(effective)
    earliest = earliest_start(actor, now)
    if earliest is not None and start < earliest:
        raise TeamError(
            f"New rates apply from today ({earliest:%Y-%m-%d} UTC) or later: what reports "
            "already showed keeps its prices. Only staff can back-date a version."
        )
    cleaned = check_rates(rates)
    version = PriceBookVersion.objects.filter(price_book=book, effective_from=start).first()
    created = version is None
    before = None if version is None else _rates(version)
    if version is None:
        version = PriceBookVersion(price_book=book, effective_from=start)
    for field, value in cleaned.items():
        setattr(version, field, value)
    version.note = (note or "").strip()[: PriceBookVersion._meta.get_field("note").max_length]
    version.created_at = now or timezone.now()
    version.save()
    if book.is_example and book.team_id is not None:
        # The team's own rates now: no longer the example's.
        PriceBook.objects.filter(pk=book.pk).update(is_example=False)
        book.is_example = False
    _record(
        "price_book.version_add" if created else "price_book.version_change",
        actor,
        book,
        team,
        object_type="price_book_version",
        object_id=version.pk,
        before=before,
        after=_rates(version),
    )
    return version, created


@transaction.atomic
def price_book_version_delete(
    *, version: PriceBookVersion, team: Team, actor: User, now: datetime | None = None
) -> None:
    """Delete a version from today on (any, for staff); a book keeps at least one."""
    book = version.price_book
    _require_editor(book, team, actor)
    earliest = earliest_start(actor, now)
    if earliest is not None and version.effective_from < earliest:
        raise TeamError(
            "Only versions from today on can be deleted: earlier rates already priced reports."
        )
    if not PriceBookVersion.objects.filter(price_book=book).exclude(pk=version.pk).exists():
        raise TeamError("A price book keeps at least one version.")
    before, pk = _rates(version), version.pk
    version.delete()
    _record(
        "price_book.version_delete",
        actor,
        book,
        team,
        object_type="price_book_version",
        object_id=pk,
        before=before,
    )


@transaction.atomic
def price_book_settings_set(
    *, book: PriceBook, team: Team, actor: User, name: str, currency: str
) -> None:
    """Rename a book, or change its currency while no budget uses it."""
    _require_editor(book, team, actor)
    name = clean_name(name, noun="price book", max_length=NAME_MAX_LENGTH)
    currency = (currency or "").strip().upper()
    if not CURRENCY.fullmatch(currency):
        raise TeamError("A currency is three letters, such as EUR or USD.")
    if currency != book.currency and currency_locked(book):
        raise TeamError(
            f"The currency stays {book.currency}: a budget uses this price book, and its "
            "amount is in that currency."
        )
    try:
        with transaction.atomic():
            PriceBook.objects.filter(pk=book.pk).update(name=name, currency=currency)
    except IntegrityError:
        raise _name_taken(name) from None
    before = {"name": book.name, "currency": book.currency}
    book.name, book.currency = name, currency
    if before != {"name": name, "currency": currency}:
        _record(
            "price_book.settings",
            actor,
            book,
            team,
            before=before,
            after={"name": name, "currency": currency},
        )
