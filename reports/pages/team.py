"""The team page: its members, the connections shared with it, and what the viewer's role may
see and do there (reports/access.py, CAPABILITIES): its month, budgets, reports and CSVs for
admins and viewers, the controls that run it for admins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User

from reports.access import Capability, capabilities_of, roles_that_may
from reports.models import Connection, Membership
from reports.pages import links
from reports.pages.history import with_periods
from reports.pages.price_book import team_price_books
from reports.spend import pricing
from reports.teams import invitations, price_books, roster, sharing, team_reports


@dataclass(frozen=True)
class SharedConnection:
    """A connection shared with the team, as this person may see it (M2, S3): whose it is and
    its label; the owner, and roles that may see account names (admins), also see the OSAI
    account and the token's last four characters."""

    owner: str
    label: str
    account_name: str | None
    token_hint: str | None
    needs_token: bool


def team_page(user: User, membership: Membership) -> dict[str, Any]:
    """The team as this member sees it: `can` says what their role may see and do."""
    team = membership.team
    can = capabilities_of(membership.role)
    names = can[Capability.SEE_ACCOUNT_NAMES]
    shared = [
        SharedConnection(
            owner=c.owner.get_username(),
            label=c.label,
            account_name=c.account_name if names or c.owner_id == user.pk else None,
            token_hint=c.token_hint if names or c.owner_id == user.pk else None,
            needs_token=c.status == Connection.Status.NEEDS_TOKEN,
        )
        for c in sharing.team_shared_connections(team)
    ]
    members = list(roster.team_members(team))
    price_book = team.price_book or pricing.default_price_book()
    runners = roles_that_may(Capability.MANAGE_MEMBERS)
    # Team reports show other people's spend: only roles that may see them.
    reports = team_reports.team_reports(team)[:50] if can[Capability.SEE_TEAM_REPORTS] else []
    return {
        "team": team,
        "membership": membership,
        "can": can,
        "members": members,
        "admin_count": sum(1 for m in members if m.role in runners),
        "shared_connections": shared,
        "my_shared": Connection.objects.filter(owner=user, shared_with_teams=team),
        "reports": with_periods(reports),
        "price_book": price_book,
        "price_books": list(price_books.books_for_team(team))
        if can[Capability.CHOOSE_PRICE_BOOK]
        else [],
        "roles": Membership.Role.choices,
        # Pending invitations, each with "Withdraw": for those who run the team (M6).
        "invitations": list(invitations.pending_for_team(team))
        if can[Capability.MANAGE_MEMBERS]
        else [],
        # Its own price books and notes where prices changed: for those who choose its book.
        **(team_price_books(team, price_book) if can[Capability.CHOOSE_PRICE_BOOK] else {}),
        # Its saved views: one click for those who may request its reports.
        "team_views": list(links.team_views(team)) if can[Capability.REQUEST_TEAM_REPORT] else [],
    }
