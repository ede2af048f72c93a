"""Teams: membership and roles, which connections members share, team reports and their spend.

Rules (S2, S3):
- A member sees the team, its members and the labels of the connections shared with it, and
  chooses which of their *own* connections the team may report on.
- A team admin also requests and reads team reports: spend per member on the shared
  connections. Nobody sees another person's token beyond its last four characters.
- A connection counts for a team only while its owner is still a member and still shares it:
  leaving the team or un-sharing withdraws it from every team report page and export,
  including reports made before.

Per-member sums are SQL aggregates over the report's finished buckets; Python only prices the
aggregated (member, period) rows.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import reduce
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, QuerySet, Sum

from reports import pricing, services
from reports.access import counted_buckets
from reports.metrics import METRIC_BY_COLUMN, PRICED, USAGE_COLUMNS
from reports.models import Bucket, Connection, Membership, PriceBook, Report, Team
from reports.periods import previous_period, split_period

# The metrics a team page shows per member (the priced ones, in display units).
TEAM_METRICS = PRICED


class TeamError(Exception):
    """A team action that cannot be done; the message is for the page."""


# --- Membership and scoping -------------------------------------------------------------------


def memberships_of(user: Any) -> QuerySet[Membership]:
    """The user's memberships with their teams, by team name."""
    return Membership.objects.filter(user=user).select_related("team").order_by("team__name")


def membership_for(user: Any, team_pk: int, *, admin: bool = False) -> Membership | None:
    """The user's membership of the team (an admin one if `admin`), or None. One query."""
    if not user.is_authenticated:
        return None
    memberships = Membership.objects.filter(user=user, team_id=team_pk).select_related("team")
    if admin:
        memberships = memberships.filter(role=Membership.Role.ADMIN)
    return memberships.first()


def team_members(team: Team) -> QuerySet[Membership]:
    """The team's memberships, admins first, then by username."""
    return (
        Membership.objects.filter(team=team)
        .select_related("user")
        .order_by("role", "user__username")  # "admin" < "member"
    )


def team_shared_connections(team: Team) -> QuerySet[Connection]:
    """Connections shared with the team by people who are still its members."""
    return (
        Connection.objects.filter(shared_with_teams=team, owner__memberships__team=team)
        .select_related("owner")
        .order_by("owner__username", "label")
    )


@transaction.atomic
def team_sharing_set(*, team: Team, user: Any, connections: Iterable[Connection]) -> list[str]:
    """Share exactly `connections` (the user's own) with the team; un-share the user's others.

    Returns the labels now shared. Raises TeamError for a connection the user does not own or
    a user who is not a member.
    """
    if not Membership.objects.filter(team=team, user=user).exists():
        raise TeamError("Only members of the team can share connections with it.")
    chosen = {c.pk for c in connections}
    own = list(Connection.objects.filter(owner=user))
    if chosen - {c.pk for c in own}:
        raise TeamError("You can only share your own connections.")
    for connection in own:
        if connection.pk in chosen:
            connection.shared_with_teams.add(team)
        else:
            connection.shared_with_teams.remove(team)
    return sorted(c.label for c in own if c.pk in chosen)


@transaction.atomic
def connection_teams_set(*, connection: Connection, teams: Iterable[Team]) -> None:
    """Share a connection with exactly `teams` among its owner's current teams.

    Sharing with teams the owner has left is left alone here (the connection page only offers
    the owner's current teams); leaving a team withdraws the sharing from its reports anyway.
    """
    own_teams = set(
        Team.objects.filter(memberships__user=connection.owner).values_list("pk", flat=True)
    )
    chosen = {team.pk for team in teams} & own_teams
    current = set(connection.shared_with_teams.values_list("pk", flat=True)) & own_teams
    if chosen - current:
        connection.shared_with_teams.add(*(chosen - current))
    if current - chosen:
        connection.shared_with_teams.remove(*(current - chosen))


def team_report_request(
    *,
    team: Team,
    admin: Any,
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    flags: Mapping[str, bool],
    preset: str = "",
    price_book: PriceBook | None = None,
) -> Report:
    """Ask for a team report over every connection members share with the team.

    The worker builds it, reusing finished buckets. Raises services.ReportRequestError (for
    the form) if no member shares a connection or the request is unreasonable.
    """
    if not Membership.objects.filter(team=team, user=admin, role=Membership.Role.ADMIN).exists():
        raise services.ReportRequestError("Only team admins can request team reports.")
    connections = list(team_shared_connections(team))
    if not connections:
        raise services.ReportRequestError(
            "No member shares a connection with this team yet: members choose theirs on the "
            "team's sharing page."
        )
    return services.report_request(
        owner=admin,
        team=team,
        connections=connections,
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        flags=flags,
        preset=preset,
        price_book=price_book,
    )


def team_reports(team: Team) -> QuerySet[Report]:
    """The team's reports, newest first."""
    return Report.objects.filter(team=team).select_related("owner").order_by("-requested_at", "-id")


def team_report_for(team: Team, report_pk: int) -> Report | None:
    return Report.objects.filter(pk=report_pk, team=team).select_related("price_book").first()


# --- Spend per member -------------------------------------------------------------------------

_SUMS = {column: Sum(column) for column in USAGE_COLUMNS}


@dataclass
class MemberPeriod:
    """One member's usage (raw units, summed in SQL) and cost in one period."""

    member: str
    period_start: datetime
    period_end: datetime
    preliminary: bool
    totals: dict[str, float]
    costs: pricing.Costs


@dataclass
class MemberSpend:
    member: str
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE_COLUMNS, 0.0))
    costs: pricing.Costs = field(default_factory=lambda: pricing.sum_costs([]))

    def display(self, column: str) -> float:
        return self.totals[column] / METRIC_BY_COLUMN[column].divisor

    @property
    def stages(self) -> dict[str, Decimal]:
        return pricing.stage_costs(self.costs)


@dataclass
class TeamSpend:
    """A team report's spend: per member, per period, and the team's totals."""

    price_book: PriceBook | None
    periods: list[tuple[datetime, datetime]]
    cells: list[MemberPeriod]
    members: list[MemberSpend]
    team: MemberSpend
    previous_total: Decimal | None = None  # the team's cost in the previous period, if known
    notice: str | None = None

    @property
    def currency(self) -> str:
        return self.price_book.currency if self.price_book else ""

    @property
    def change(self) -> Decimal | None:
        """Change of the team's total cost against the previous period, as a fraction."""
        if not self.previous_total:
            return None
        return (self.team.costs["total"] - self.previous_total) / self.previous_total


def _member_period_cells(
    buckets: QuerySet[Bucket], price_book: PriceBook | None
) -> list[MemberPeriod]:
    grouped = (
        buckets.filter(state=Bucket.State.DONE)
        .values("connection__owner__username", "period_start", "period_end")
        .annotate(open_buckets=Count("pk", filter=Q(is_closed=False)), **_SUMS)
        .order_by("period_start", "period_end", "connection__owner__username")
    )
    cells = []
    for row in grouped:
        totals = {column: float(row[column] or 0.0) for column in USAGE_COLUMNS}
        cells.append(
            MemberPeriod(
                member=row["connection__owner__username"],
                period_start=row["period_start"],
                period_end=row["period_end"],
                preliminary=row["open_buckets"] > 0,
                totals=totals,
                costs=pricing.period_costs(
                    totals, row["period_start"], row["period_end"], price_book
                ),
            )
        )
    return cells


def _add(spend: MemberSpend, cell: MemberPeriod) -> None:
    for column in USAGE_COLUMNS:
        spend.totals[column] += cell.totals[column]
    spend.costs = pricing.sum_costs([spend.costs, cell.costs])


def team_spend(report: Report, *, previous: bool = True) -> TeamSpend:
    """Spend per member (a connection's owner) per period, and the team's totals.

    The team's totals are the sum of the members' (exact: costs share one quantum). The
    previous period of equal length is included when every one of its buckets is already
    finished in the database (no OSAI call is made for it).
    """
    price_book = pricing.price_book_for(report)
    cells = _member_period_cells(counted_buckets(report), price_book)
    members: dict[str, MemberSpend] = {}
    team_total = MemberSpend(member="Team")
    for cell in cells:
        _add(members.setdefault(cell.member, MemberSpend(member=cell.member)), cell)
        _add(team_total, cell)
    periods = sorted({(c.period_start, c.period_end) for c in cells})
    unpriced_from = [c.period_start for c in cells if c.costs.unpriced]
    notice = None
    if price_book is None and cells:
        notice = "No price book is set up, so costs are shown as 0."
    elif unpriced_from:
        notice = (
            f"No prices in force for part of this report (from {min(unpriced_from):%Y-%m-%d}, "
            f"UTC) in the price book “{price_book.name if price_book else ''}”: that usage is "
            "costed at 0."
        )
    return TeamSpend(
        price_book=price_book,
        periods=periods,
        cells=cells,
        members=sorted(members.values(), key=lambda m: m.member),
        team=team_total,
        previous_total=previous_period_cost(report, price_book) if previous else None,
        notice=notice,
    )


def previous_period_cost(report: Report, price_book: PriceBook | None) -> Decimal | None:
    """The team's cost in the period of equal length before the report's, if fully known.

    Known means: a finished, closed bucket with the report's flags exists for every shared
    connection and every period of the previous span. Two queries, no OSAI call.
    """
    if report.team_id is None:
        return None
    start, end = previous_period(report.period_start, report.period_end)
    periods = split_period(start, end, report.granularity)
    connection_ids = list(
        Connection.objects.filter(
            shared_with_teams=report.team_id, owner__memberships__team=report.team_id
        ).values_list("pk", flat=True)
    )
    if not periods or not connection_ids or len(periods) > 400:
        return None
    exact_periods = reduce(operator.or_, (Q(period_start=s, period_end=e) for s, e in periods))
    rows = list(
        Bucket.objects.filter(
            exact_periods,
            connection_id__in=connection_ids,
            state=Bucket.State.DONE,
            is_closed=True,
            **report.flags(),
        )
        # Grouped like team_spend (member x period), so a report and its successor's
        # "previous period" price the same buckets to the same 10^-10.
        .values("connection__owner__username", "period_start", "period_end")
        .annotate(n=Count("pk"), **_SUMS)
    )
    if sum(row["n"] for row in rows) != len(periods) * len(connection_ids):
        return None
    total = Decimal(0)
    for row in rows:
        totals = {column: row[column] or 0.0 for column in USAGE_COLUMNS}
        total += pricing.period_costs(totals, row["period_start"], row["period_end"], price_book)[
            "total"
        ]
    return total
