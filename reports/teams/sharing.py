"""Which connections count for a team: those its current members share with it (M1).

Un-sharing or leaving takes effect at once: the team's buckets in flight that no live report
wants any more stop, and every team report is recounted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet

from reports import audit
from reports.access import Capability, teams_where
from reports.models import Bucket, Connection, Report, Team
from reports.pipeline import buckets, progress
from reports.teams import TeamError


def team_shared_connections(team: Team) -> QuerySet[Connection]:
    """Connections shared with the team by people who are still its members."""
    return (
        Connection.objects.counting_for_team(team)
        .select_related("owner")
        .order_by("owner__username", "label")
    )


@transaction.atomic
def team_sharing_set(*, team: Team, user: User, connections: Iterable[Connection]) -> list[str]:
    """Share exactly `connections` (the user's own) with the team; un-share the user's others.

    Returns the labels now shared. Raises TeamError for a connection the user does not own or
    a user whose role in the team shares nothing (not in it, or a viewer).
    """
    if not teams_where(user, Capability.SHARE_OWN_CONNECTIONS).filter(pk=team.pk).exists():
        raise TeamError("Only members and admins of the team can share connections with it.")
    chosen = {c.pk for c in connections}
    own = list(Connection.objects.filter(owner=user))
    if chosen - {c.pk for c in own}:
        raise TeamError("You can only share your own connections.")
    before = sorted(c.label for c in own if c.shared_with_teams.filter(pk=team.pk).exists())
    for connection in own:
        if connection.pk in chosen:
            connection.shared_with_teams.add(team)
        else:
            connection.shared_with_teams.remove(team)
    transaction.on_commit(functools.partial(_withdraw, team))
    after = sorted(c.label for c in own if c.pk in chosen)
    if before != after:
        audit.record(
            "sharing.set",
            actor=user,
            object_type="team",
            object_id=team.pk,
            label=f"{user.get_username()}'s connections shared with {team.name}",
            team=team,
            owner=user,
            before={"connections": before},
            after={"connections": after},
        )
    return after


@transaction.atomic
def connection_teams_set(*, connection: Connection, teams: Iterable[Team]) -> None:
    """Share a connection with exactly `teams` among the owner's teams; un-share the others.

    A connection can only be shared with teams where its owner's role shares connections;
    sharing with any other team is withdrawn here too.
    """
    own_teams = set(
        teams_where(connection.owner, Capability.SHARE_OWN_CONNECTIONS).values_list("pk", flat=True)
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
    names = dict(Team.objects.filter(pk__in=current | chosen).values_list("pk", "name"))
    for pk in current ^ chosen:
        shared = pk in chosen
        audit.record(
            "sharing.set",
            actor=connection.owner,
            object_type="connection",
            object_id=connection.pk,
            label=f"{connection.label} {'shared with' if shared else 'no longer shared with'} "
            f"{names.get(pk, pk)}",
            team=pk,
            owner=connection.owner_id,
            before={"shared": not shared},
            after={"shared": shared},
        )


def _withdraw(team: Team) -> None:
    """After a change of sharing or membership: stop the team's buckets in flight that no
    live report wants any more, and recount every team report (M1)."""
    reports = Report.objects.filter(team=team)
    in_flight = Bucket.objects.filter(
        report_buckets__report__in=reports.exclude(state__in=Report.TERMINAL_STATES)
    ).exclude(state__in=Bucket.TERMINAL_STATES)
    buckets.buckets_release_unwanted(in_flight.values_list("pk", flat=True).distinct())
    for report_pk in reports.values_list("pk", flat=True):
        progress.report_refresh(report_pk)


def sharing_end(*, team: Team, user: User) -> None:
    """A person left the team (or was removed): their sharing with it ends with them (M1)."""
    for connection in Connection.objects.filter(owner=user, shared_with_teams=team):
        connection.shared_with_teams.remove(team)
    transaction.on_commit(functools.partial(_withdraw, team))
