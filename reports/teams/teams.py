"""Teams: run by their admins; members share connections; team reports and spend per member.

Rules (S2, S3, M1-M4):
- A team's admins run it without Django staff rights: they add people (by username or
  email), change roles, remove people and choose its price book. A team always keeps at
  least one admin. Anyone can create a team and becomes its admin; anyone can leave.
- A member sees the team and the names of its members, and chooses which of their *own*
  connections the team may report on; they never see other members' OSAI account names or
  token endings (M2).
- A team admin also requests and reads team reports: spend per member on the shared
  connections. Nobody sees another person's token beyond its last four characters.
- A connection counts for a team only while its owner is a member and shares it. Leaving
  (or being removed) ends the sharing; un-sharing or leaving takes effect at once, in every
  team report page, export and retry, and stops the team's buckets in flight on that
  connection (M1). Being added again shares nothing by itself.
- A shared connection that needs a new token is skipped by a new team report and named on
  its page; it does not block the others (M3).

Per-member sums are SQL aggregates over the report's finished buckets; Python only prices the
aggregated (member, period) rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet, Sum

from reports.access import counted_buckets
from reports.metrics import METRIC_BY_COLUMN, USAGE_COLUMNS
from reports.models import Bucket, Connection, Membership, PriceBook, Report, Team
from reports.pipeline import pipeline, progress, report_requests
from reports.spend import pricing

Role = Membership.Role


class TeamError(Exception):
    """A team action that cannot be done; the message is for the page or the command."""


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
        memberships = memberships.filter(role=Role.ADMIN)
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


# --- Running a team ---------------------------------------------------------------------------


def _require_admin(team: Team, actor: Any | None) -> None:
    """`actor` must be one of the team's admins; None is the operator (the command line)."""
    if (
        actor is not None
        and not Membership.objects.filter(team=team, user=actor, role=Role.ADMIN).exists()
    ):
        raise TeamError("Only the team's admins can do that.")


def _keep_an_admin(team: Team) -> None:
    """Raise (and so roll back the change) if the team would be left without an admin."""
    if not Membership.objects.filter(team=team, role=Role.ADMIN).exists():
        raise TeamError(
            f"{team.name} must keep at least one admin: make someone else an admin first."
        )


def find_user(who: str) -> Any:
    """A user by username or email address (case-insensitive for the email)."""
    who = (who or "").strip()
    if not who:
        raise TeamError("Give a username or an email address.")
    users = get_user_model().objects
    user = users.filter(username=who).first()
    if user is None and "@" in who:
        matches = list(users.filter(email__iexact=who)[:2])
        if len(matches) > 1:
            raise TeamError(f"Several accounts use {who}: give the username instead.")
        user = matches[0] if matches else None
    if user is None:
        raise TeamError(f"Nobody here has the username or email {who!r}.")
    return user


@transaction.atomic
def team_create(*, name: str, admin: Any) -> Team:
    """A new team with `admin` as its first admin."""
    name = " ".join((name or "").split())
    if not name:
        raise TeamError("Give the team a name.")
    if len(name) > Team._meta.get_field("name").max_length:  # type: ignore[operator]
        raise TeamError("That name is too long.")
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name)
    except IntegrityError:
        raise TeamError(f"There is already a team called {name!r}.") from None
    Membership.objects.create(team=team, user=admin, role=Role.ADMIN)
    return team


@transaction.atomic
def team_member_add(*, team: Team, actor: Any | None, who: str, role: str = Role.MEMBER) -> Any:
    """Add a person (by username or email) to the team. Shares nothing of theirs (M1)."""
    _require_admin(team, actor)
    if role not in Role.values:
        raise TeamError("Choose a role: admin or member.")
    user = find_user(who)
    if Membership.objects.filter(team=team, user=user).exists():
        raise TeamError(f"{user.get_username()} is already in {team.name}.")
    Membership.objects.create(team=team, user=user, role=role)
    return user


@transaction.atomic
def team_member_set_role(*, team: Team, actor: Any | None, user: Any, role: str) -> None:
    _require_admin(team, actor)
    if role not in Role.values:
        raise TeamError("Choose a role: admin or member.")
    if not Membership.objects.filter(team=team, user=user).update(role=role):
        raise TeamError(f"{user.get_username()} is not in {team.name}.")
    _keep_an_admin(team)


@transaction.atomic
def team_member_remove(*, team: Team, actor: Any | None, user: Any) -> None:
    """Remove a person from the team (an admin's act), or leave it (`actor` is `user`).

    Their sharing with the team ends with their membership, at once (M1).
    """
    if actor is None or actor.pk != user.pk:
        _require_admin(team, actor)
    if not Membership.objects.filter(team=team, user=user).delete()[0]:
        raise TeamError(f"{user.get_username()} is not in {team.name}.")
    _keep_an_admin(team)
    for connection in Connection.objects.filter(owner=user, shared_with_teams=team):
        connection.shared_with_teams.remove(team)
    transaction.on_commit(functools.partial(_withdraw, team))


@transaction.atomic
def team_price_book_set(*, team: Team, actor: Any | None, price_book: PriceBook | None) -> None:
    """The rates the team's reports are priced with (all of them, earlier ones included)."""
    _require_admin(team, actor)
    Team.objects.filter(pk=team.pk).update(price_book=price_book)
    team.price_book = price_book


# --- Sharing ----------------------------------------------------------------------------------


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
    transaction.on_commit(functools.partial(_withdraw, team))
    return sorted(c.label for c in own if c.pk in chosen)


@transaction.atomic
def connection_teams_set(*, connection: Connection, teams: Iterable[Team]) -> None:
    """Share a connection with exactly `teams` among the owner's teams; un-share the others.

    A connection can only be shared with teams its owner is in; sharing with any other team
    is withdrawn here too.
    """
    own_teams = set(
        Team.objects.filter(memberships__user=connection.owner).values_list("pk", flat=True)
    )
    chosen = {team.pk for team in teams} & own_teams
    current = set(connection.shared_with_teams.values_list("pk", flat=True))
    if chosen - current:
        connection.shared_with_teams.add(*(chosen - current))
    withdrawn = current - chosen
    if withdrawn:
        connection.shared_with_teams.remove(*withdrawn)
        for team in Team.objects.filter(pk__in=withdrawn):
            transaction.on_commit(functools.partial(_withdraw, team))


def _withdraw(team: Team) -> None:
    """After a change of sharing or membership: stop the team's buckets in flight that no
    live report wants any more, and recount every team report (M1)."""
    reports = Report.objects.filter(team=team)
    in_flight = Bucket.objects.filter(
        report_buckets__report__in=reports.exclude(state__in=Report.TERMINAL_STATES)
    ).exclude(state__in=Bucket.TERMINAL_STATES)
    pipeline.buckets_release_unwanted(in_flight.values_list("pk", flat=True).distinct())
    for report_pk in reports.values_list("pk", flat=True):
        progress.report_refresh(report_pk)


# --- Team reports -----------------------------------------------------------------------------


def team_report_request(
    *,
    team: Team,
    admin: Any,
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    flags: Mapping[str, bool],
    preset: str = "",
    compare: bool = False,
    now: datetime | None = None,
) -> Report:
    """Ask for a team report over every connection members share with the team.

    Connections that need a new token are skipped and named on the report (M3). The worker
    builds the rest, reusing finished buckets. Raises report_requests.ReportRequestError (for the
    form) if no member shares a working connection or the request is unreasonable.
    """
    if not Membership.objects.filter(team=team, user=admin, role=Role.ADMIN).exists():
        raise report_requests.ReportRequestError("Only team admins can request team reports.")
    shared = list(team_shared_connections(team))
    if not shared:
        raise report_requests.ReportRequestError(
            "No member shares a connection with this team yet: members choose theirs on the "
            "team's sharing page."
        )
    working = [c for c in shared if c.status == Connection.Status.OK]
    skipped = [
        {"owner": c.owner.get_username(), "label": c.label, "reason": c.get_status_display()}
        for c in shared
        if c.status != Connection.Status.OK
    ]
    if not working:
        names = ", ".join(f"“{s['label']}” of {s['owner']}" for s in skipped)
        raise report_requests.ReportRequestError(
            f"Every connection shared with this team needs a new token first: {names}."
        )
    return report_requests.report_request(
        owner=admin,
        team=team,
        connections=working,
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        flags=flags,
        preset=preset,
        skipped_connections=skipped,
        compare=compare,
        now=now,
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
    notice: str | None = None

    @property
    def currency(self) -> str:
        return self.price_book.currency if self.price_book else ""


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


def team_spend(report: Report) -> TeamSpend:
    """Spend per member (a connection's owner) per period, and the team's totals.

    The team's totals are the sum of the members' (exact: costs share one quantum).
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
        notice=notice,
    )
