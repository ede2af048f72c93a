"""The team page: its members, the connections shared with it, its reports, and for its
admins the controls that run it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reports.models import Connection, Membership
from reports.pages import links
from reports.pages.history import with_periods
from reports.pages.price_book import team_price_books
from reports.spend import pricing
from reports.teams import price_books, roster, sharing, team_reports


@dataclass(frozen=True)
class SharedConnection:
    """A connection shared with the team, as this viewer may see it (M2, S3): plain members
    see whose it is and its label; the owner and the team's admins also see the OSAI account
    and the token's last four characters."""

    owner: str
    label: str
    account_name: str | None
    token_hint: str | None
    needs_token: bool


def team_page(user: Any, membership: Membership) -> dict[str, Any]:
    """The team as a member sees it; admins also see its reports and manage it."""
    team = membership.team
    is_admin = membership.role == Membership.Role.ADMIN
    shared = [
        SharedConnection(
            owner=c.owner.get_username(),
            label=c.label,
            account_name=c.account_name if is_admin or c.owner_id == user.pk else None,
            token_hint=c.token_hint if is_admin or c.owner_id == user.pk else None,
            needs_token=c.status == Connection.Status.NEEDS_TOKEN,
        )
        for c in sharing.team_shared_connections(team)
    ]
    members = list(roster.team_members(team))
    price_book = team.price_book or pricing.default_price_book()
    return {
        "team": team,
        "membership": membership,
        "is_admin": is_admin,
        "members": members,
        "admin_count": sum(1 for m in members if m.role == Membership.Role.ADMIN),
        "shared_connections": shared,
        "my_shared": Connection.objects.filter(owner=user, shared_with_teams=team),
        # Team reports show other people's spend: admins only.
        "reports": with_periods(team_reports.team_reports(team)[:50]) if is_admin else [],
        "price_book": price_book,
        "price_books": list(price_books.books_for_team(team)) if is_admin else [],
        "roles": Membership.Role.choices,
        # Its own price books, notes where prices changed, and its saved views: admins only.
        **(team_price_books(team, price_book) if is_admin else {}),
        "team_views": list(links.team_views(team)) if is_admin else [],
    }
