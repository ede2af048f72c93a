"""Who may see what. Views scope every object lookup through these (404 for everyone else).

- A person sees their own connections and reports.
- In a team, what a role may see and do is written once, in the capability table below
  (`CAPABILITIES`): pages, views, the API, CSV exports, the commands, budget alerts and
  digests ask it (`may`, `teams_where`, `roles_that_may`), never the role itself.
- A team report shows other people's spend, so it is visible only while one holds a role of
  its team that may see team reports, even to the admin who requested it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from types import MappingProxyType

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.db.models.functions import Lower

from reports.models import Bucket, Membership, Report, ReportBucket, Team

Role = Membership.Role


class Capability(StrEnum):
    """What a role of a team may see or do in that team."""

    SEE_TEAM = "see_team"  # the team page: the names of its members, shared connections' labels
    SHARE_OWN_CONNECTIONS = "share_own_connections"  # choose which of one's own count (M1)
    SEE_TEAM_SPEND = "see_team_spend"  # the team's month, forecast and budgets
    SEE_TEAM_REPORTS = "see_team_reports"  # team reports: pages, per-member spend, raw files
    DOWNLOAD_CSV = "download_csv"  # every team CSV: team reports and the team's daily spend
    SEE_ACCOUNT_NAMES = "see_account_names"  # others' OSAI account names and token endings
    REQUEST_TEAM_REPORT = "request_team_report"  # and cancel or retry one
    MANAGE_MEMBERS = "manage_members"  # add, remove, change roles (M4)
    MANAGE_BUDGETS = "manage_budgets"  # set, change and remove the team's budgets
    MANAGE_CHANNELS = "manage_channels"  # add, remove and test the team's channels
    ANSWER_ANOMALIES = "answer_anomalies"  # mark a shared connection's anomaly expected or not
    CHOOSE_PRICE_BOOK = "choose_price_book"  # the rates the team's reports are priced with
    RECEIVE_ALERTS = "receive_alerts"  # the team's budget alerts
    RECEIVE_TEAM_DIGEST = "receive_team_digest"  # the team's weekly and monthly digests
    OPT_INTO_TEAM_DIGEST = "opt_into_team_digest"  # ... only if one asks for them


C = Capability
# The one capability table: role -> what it may see and do. Nothing else in the code compares
# a role with a role name (tests/reports/teams/test_capabilities.py reads every cell).
CAPABILITIES: MappingProxyType[str, frozenset[Capability]] = MappingProxyType(
    {
        Role.ADMIN: frozenset(
            {
                C.SEE_TEAM,
                C.SHARE_OWN_CONNECTIONS,
                C.SEE_TEAM_SPEND,
                C.SEE_TEAM_REPORTS,
                C.DOWNLOAD_CSV,
                C.SEE_ACCOUNT_NAMES,
                C.REQUEST_TEAM_REPORT,
                C.MANAGE_MEMBERS,
                C.MANAGE_BUDGETS,
                C.MANAGE_CHANNELS,
                C.ANSWER_ANOMALIES,
                C.CHOOSE_PRICE_BOOK,
                C.RECEIVE_ALERTS,
                C.RECEIVE_TEAM_DIGEST,
            }
        ),
        # Finance: reads everything about the team's spend, changes nothing, shares nothing,
        # and is never shown another person's OSAI account or token ending.
        Role.VIEWER: frozenset(
            {
                C.SEE_TEAM,
                C.SEE_TEAM_SPEND,
                C.SEE_TEAM_REPORTS,
                C.DOWNLOAD_CSV,
                C.OPT_INTO_TEAM_DIGEST,
            }
        ),
        # Sees who is in the team and chooses which of their own connections count.
        Role.MEMBER: frozenset({C.SEE_TEAM, C.SHARE_OWN_CONNECTIONS}),
    }
)
del C


def may(role: str, capability: Capability) -> bool:
    """Whether a role of a team may do `capability` in it."""
    return capability in CAPABILITIES.get(role, frozenset())


def capabilities_of(role: str) -> dict[str, bool]:
    """Every capability by name, True where the role has it (templates: `can.manage_members`)."""
    return {capability.value: may(role, capability) for capability in Capability}


def roles_that_may(*capabilities: Capability) -> list[str]:
    """The roles that have every one of `capabilities`, in the order of `Membership.Role`."""
    return [role for role in Role.values if all(may(role, c) for c in capabilities)]


def teams_where(user: User, capability: Capability) -> QuerySet[Team]:
    """The teams in which the user holds a role that may do `capability`."""
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(
        memberships__user=user, memberships__role__in=roles_that_may(capability)
    )


def team_digest_teams(user: User) -> QuerySet[Team]:
    """The teams whose digests the user gets: those where their role always receives them,
    and those where it may opt in and they did (`Membership.team_digest`)."""
    return Team.objects.filter(
        Q(memberships__role__in=roles_that_may(Capability.RECEIVE_TEAM_DIGEST))
        | Q(
            memberships__role__in=roles_that_may(Capability.OPT_INTO_TEAM_DIGEST),
            memberships__team_digest=True,
        ),
        memberships__user=user,
    )


def may_in_team(user_id: int | None, team: Team | int, capability: Capability) -> bool:
    """Whether the person (by id) holds a role in the team that may do `capability`, now."""
    if user_id is None:
        return False
    return Membership.objects.filter(
        team=team, user_id=user_id, role__in=roles_that_may(capability)
    ).exists()


def team_emails(team: Team | int, capability: Capability) -> list[str]:
    """The email addresses of the team's people whose role may do `capability`, by username:
    only those each has shown are theirs (`verified_emails_of`), so a team's alerts never go
    to an address single sign-on brought in unverified. Two queries."""
    rows = (
        Membership.objects.filter(team=team, role__in=roles_that_may(capability))
        .exclude(user__email="")
        .order_by("user__username")
        .values_list("user_id", "user__email")
    )
    people = dict(rows)  # in username order
    verified = verified_emails_of(people)
    return list(dict.fromkeys(email for user_id in people for email in verified[user_id]))


def team_addresses_allowed(
    team: Team | int, capability: Capability, addresses: Iterable[str]
) -> list[str]:
    """Those of `addresses` the team's messages of `capability` (its alerts) may go to now:
    the addresses of its people whose role may, and addresses of no account here at all (a
    shared mailbox); never the address of an account whose holder may not, whether another
    role of the team or no longer in it (A8). Case does not matter."""
    addresses = list(addresses)
    allowed = {email.lower() for email in team_emails(team, capability)}
    accounts = {
        email.lower()
        for email in get_user_model()
        .objects.annotate(email_lower=Lower("email"))
        .filter(email_lower__in={a.lower() for a in addresses})
        .values_list("email", flat=True)
    }
    return [a for a in addresses if a.lower() in allowed or a.lower() not in accounts]


def team_addresses_refused(
    team: Team | int, capability: Capability, addresses: Iterable[str]
) -> list[str]:
    """Those of `addresses` that `team_addresses_allowed` leaves out, in their order: the ones
    a form names back to whoever typed them."""
    addresses = list(addresses)
    allowed = team_addresses_allowed(team, capability, addresses)
    return [a for a in addresses if a not in allowed]


def verified_emails_of(email_by_user: dict[int, str]) -> dict[int, list[str]]:
    """The addresses each person has shown are theirs, for people given as {user id: their
    `User.email`}: the one rule for whose invitations a teams page offers (M6), whose account
    a single sign-on's verified email may enter (S14), and whose opt-out stops an address's
    anomaly emails (A12).

    The rule: allauth's EmailAddress rows of the account that are verified. An account with
    no EmailAddress row at all counts its `User.email`: no row means allauth never managed its
    addresses, and every other way an account is made sets that field by someone trusted or
    with proof (`createsuperuser` and staff in the admin, the demo seed, the sign-up on an
    invitation's page, whose link was mailed to that address), while nobody changes their
    own (allauth's email pages, /accounts/email/, are not served, and password sign-up is
    closed). Single sign-on's first sign-in makes rows, verified only where the provider says
    so; from then on only those count, never the field alone. One query."""
    managed: dict[int, list[str]] = {}
    rows = EmailAddress.objects.filter(user_id__in=list(email_by_user)).values_list(
        "user_id", "email", "verified"
    )
    for user_id, email, verified in rows:
        managed.setdefault(user_id, [])
        if verified and email:
            managed[user_id].append(email)
    return {
        user_id: managed.get(user_id, [email] if email else [])
        for user_id, email in email_by_user.items()
    }


def verified_emails(user: User) -> list[str]:
    """One person's addresses by `verified_emails_of`'s rule."""
    return verified_emails_of({user.pk: user.email})[user.pk]


def reports_visible_to(user: User) -> QuerySet[Report]:
    """A user's own reports and the team reports of teams where they may see them."""
    if not user.is_authenticated:
        return Report.objects.none()
    return Report.objects.filter(_visible(user, Capability.SEE_TEAM_REPORTS)).distinct()


def recent_reports_visible_to(user: User, limit: int) -> list[Report]:
    """The newest reports a user may see, newest first.

    Two queries that each walk an index and stop at `limit`, instead of one OR over a join
    with DISTINCT, which scans every user's reports once there are many.
    """
    if not user.is_authenticated:
        return []
    order = ("-requested_at", "-id")
    own = Report.objects.filter(owner=user, team__isnull=True).order_by(*order)[:limit]
    teams = teams_where(user, Capability.SEE_TEAM_REPORTS)
    team = Report.objects.filter(team__in=teams).order_by(*order)[:limit]
    merged = sorted([*own, *team], key=lambda r: (r.requested_at, r.pk), reverse=True)
    return merged[:limit]


def report_visible_to(
    user: User, pk: int, capability: Capability = Capability.SEE_TEAM_REPORTS
) -> Report | None:
    """One report by id if the user may see it, in one query: their own personal report, or
    a team report of a team where their role may do `capability` (see it by default; download
    its CSV, cancel or retry it)."""
    if not user.is_authenticated:
        return None
    return Report.objects.filter(pk=pk).filter(_visible(user, capability)).first()


def _visible(user: User, capability: Capability) -> Q:
    return Q(owner=user, team__isnull=True) | Q(
        team__memberships__user=user, team__memberships__role__in=roles_that_may(capability)
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
