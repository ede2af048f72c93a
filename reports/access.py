"""Who may see what. Views scope every object lookup through these (404 for everyone else).

- A person sees their own connections and reports.
- A team admin also sees the team's reports (built from connections members share with the
  team) and the shared connections' labels, never their tokens. A team report shows other
  people's spend, so it is visible only while one is an admin of its team, even to the admin
  who requested it.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from reports.models import Bucket, Membership, Report, ReportBucket, Team


def teams_administered_by(user: Any) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user=user, memberships__role=Membership.Role.ADMIN)


def reports_visible_to(user: Any) -> QuerySet[Report]:
    """A user's own reports and the team reports of teams they administer."""
    if not user.is_authenticated:
        return Report.objects.none()
    return Report.objects.filter(_visible(user)).distinct()


def recent_reports_visible_to(user: Any, limit: int) -> list[Report]:
    """The newest reports a user may see, newest first.

    Two queries that each walk an index and stop at `limit`, instead of one OR over a join
    with DISTINCT, which scans every user's reports once there are many.
    """
    if not user.is_authenticated:
        return []
    order = ("-requested_at", "-id")
    own = Report.objects.filter(owner=user, team__isnull=True).order_by(*order)[:limit]
    team = Report.objects.filter(team__in=teams_administered_by(user)).order_by(*order)[:limit]
    merged = sorted([*own, *team], key=lambda r: (r.requested_at, r.pk), reverse=True)
    return merged[:limit]


def report_visible_to(user: Any, pk: int) -> Report | None:
    """One report by id if the user may see it, in one query."""
    if not user.is_authenticated:
        return None
    return Report.objects.filter(pk=pk).filter(_visible(user)).first()


def _visible(user: Any) -> Q:
    return Q(owner=user, team__isnull=True) | Q(
        team__memberships__user=user, team__memberships__role=Membership.Role.ADMIN
    )


def _counting(report: Report, purpose: str) -> QuerySet[Bucket]:
    buckets = Bucket.objects.filter(report_buckets__report=report, report_buckets__purpose=purpose)
    if report.team_id is None:
        return buckets
    return buckets.counting_for_team(report.team_id)


def counted_buckets(report: Report) -> QuerySet[Bucket]:
    """The buckets that count for a report: all of a personal report's; of a team report, only
    those on connections still shared with the team by people who are still its members."""
    return _counting(report, ReportBucket.Purpose.MAIN)


def comparison_buckets_of(report: Report) -> QuerySet[Bucket]:
    """The buckets fetched for the period a report is compared with, by the same rule."""
    return _counting(report, ReportBucket.Purpose.COMPARISON)


def bucket_is_wanted(bucket: Bucket) -> bool:
    """True while something still needs this bucket fetched: tracking; an unfinished report
    that counts it; or a report comparing with its period (that fetch outlives the report's
    own). For a team report "counts" means its owner is in the team and shares the connection.

    The pipeline asks this before every step, so a member who leaves a team, or stops
    sharing, never has their token used for that team again (M1).
    """
    if bucket.tracked:
        return True
    teams_counting_it = Team.objects.filter(
        shared_connections=bucket.connection_id, memberships__user=bucket.connection.owner_id
    )
    return (
        ReportBucket.objects.filter(bucket_id=bucket.pk)
        .filter(
            Q(purpose=ReportBucket.Purpose.COMPARISON)
            | ~Q(report__state__in=Report.TERMINAL_STATES)
        )
        .filter(Q(report__team__isnull=True) | Q(report__team__in=teams_counting_it))
        .exists()
    )
