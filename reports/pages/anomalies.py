"""The anomalies a person sees (N5), one selector for the Anomalies page, its CSV, the API's
`/anomalies` and `manage.py anomalies`: their own connections' anomalies priced in the default
book, or, with a team (`?team=<id>`, `--team`), those of the connections that count for the
team (M1) in the team's book, for roles that see its spend (SEE_TEAM_SPEND: admins,
viewers). Rows are reports/spend/anomalies.py `rows_of`: labels, never an OSAI account name,
token or link.

The flags where spend is shown read here too, one query each: the overview's last 30 days
(`recent`), the team page's per member (`causes_by_connection`) and a report's period.

Who may answer one ("Expected" / "Not expected", `answerable`, `anomaly_feedback_set`): the
connection's owner, and for a connection that counts for a team, the team's roles that may
ANSWER_ANOMALIES (admins). An expected anomaly stops alerting (`Anomaly.alerting`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet

from reports.access import Capability, may, teams_where
from reports.models import Anomaly, Connection, PriceBook, Team
from reports.spend import anomalies, pricing
from reports.spend.monthly import price_book_of
from reports.teams import roster

PAGE_SIZE = 50
RECENT_DAYS = 30  # the overview's block
RECENT_SHOWN = 3  # ... and the newest causes it names
KINDS = tuple(Anomaly.Kind.values)
KIND_CHOICES = tuple(Anomaly.Kind.choices)
ANSWERS = (Anomaly.Feedback.EXPECTED, Anomaly.Feedback.NOT_EXPECTED)
ANSWER_CHOICES = tuple((answer.value, answer.label) for answer in ANSWERS)


@dataclass(frozen=True)
class AnomalyScope:
    """Whose anomalies: a person's own connections, or a team's counting ones; the book that
    prices their causes; whether the viewer may answer every one of them (else only their
    own connections')."""

    user: User
    team: Team | None
    connections: QuerySet[Connection]
    book: PriceBook | None
    answers_all: bool


@dataclass(frozen=True)
class AnomalyFilter:
    kind: str | None = None  # one of KINDS
    needs_look: bool = False  # no feedback yet
    since: date | None = None  # inclusive
    until: date | None = None  # inclusive


def window_days() -> dict[str, int]:
    """The settings the page's explanation names."""
    return {
        "window": settings.OSAI_ANOMALY_WINDOW_DAYS,
        "history": settings.OSAI_ANOMALY_MIN_HISTORY_DAYS,
        "idle": settings.OSAI_ANOMALY_IDLE_DAYS,
    }


def scope_of(user: User, team_id: int | None = None) -> AnomalyScope | None:
    """The person's own connections (team_id None), or the team's if their role there may see
    its spend; None for a team they may not see (a 404)."""
    if team_id is None:
        return AnomalyScope(
            user,
            None,
            Connection.objects.filter(owner=user),
            pricing.default_price_book(),
            answers_all=True,
        )
    membership = roster.membership_for(user, team_id, Capability.SEE_TEAM_SPEND)
    if membership is None:
        return None
    team = membership.team
    return AnomalyScope(
        user,
        team,
        Connection.objects.counting_for_team(team),
        price_book_of(team),
        answers_all=may(membership.role, Capability.ANSWER_ANOMALIES),
    )


def anomalies_in(scope: AnomalyScope, filters: AnomalyFilter | None = None) -> QuerySet[Anomaly]:
    """The scope's anomalies, filtered, newest day first."""
    filters = filters or AnomalyFilter()
    found = Anomaly.objects.filter(connection__in=scope.connections)
    if filters.kind:
        found = found.filter(kind=filters.kind)
    if filters.needs_look:
        found = found.filter(feedback=Anomaly.Feedback.NONE)
    if filters.since is not None:
        found = found.filter(day__gte=filters.since)
    if filters.until is not None:
        found = found.filter(day__lte=filters.until)
    return found.select_related("connection").order_by(*anomalies.ORDER)


def rows(scope: AnomalyScope, filters: AnomalyFilter | None = None) -> list[dict[str, object]]:
    """Every row the page lists (all its pages), as `anomalies.listed` writes them: the API,
    the CSV and the command."""
    return anomalies.rows_of(anomalies_in(scope, filters), scope.book)


def page_rows(scope: AnomalyScope, found: Sequence[Anomaly]) -> list[dict[str, Any]]:
    """One page's rows, each with `may_answer`: the viewer may mark it expected or not."""
    return [
        {
            **anomalies.row_of(anomaly, scope.book),
            "kind_label": Anomaly.Kind(anomaly.kind).label,
            "feedback_label": Anomaly.Feedback(anomaly.feedback).label,
            "may_answer": scope.answers_all or anomaly.connection.owner_id == scope.user.pk,
            "answers": ANSWER_CHOICES,
        }
        for anomaly in found
    ]


# --- Answering one ------------------------------------------------------------------------------


def answerable(user: User, pk: int) -> Anomaly | None:
    """The anomaly if this person may answer it: their own connection's, or one of a
    connection that counts for a team where their role may ANSWER_ANOMALIES. Two queries."""
    if not user.is_authenticated:
        return None
    team_ids = list(teams_where(user, Capability.ANSWER_ANOMALIES).values_list("pk", flat=True))
    shared = Connection.objects.counting_for_teams(team_ids) if team_ids else None
    mine = Q(connection__owner=user)
    rule = mine | Q(connection__in=shared) if shared is not None else mine
    return Anomaly.objects.filter(rule, pk=pk).select_related("connection").first()


class FeedbackError(ValueError):
    """An answer that is not one of ANSWERS."""


def anomaly_feedback_set(*, anomaly: Anomaly, feedback: str) -> Anomaly:
    """Record the answer (expected: it no longer alerts for that series and day)."""
    if feedback not in ANSWERS:
        raise FeedbackError("Answer expected or not_expected.")
    Anomaly.objects.filter(pk=anomaly.pk).update(feedback=feedback)
    anomaly.feedback = feedback
    return anomaly


# --- Flags where spend is shown -----------------------------------------------------------------


def recent(
    connections: QuerySet[Connection] | Sequence[int],
    book: PriceBook | None,
    *,
    now: datetime,
    team: Team | None = None,
) -> dict[str, Any]:
    """The overview's block: how many anomalies in the last RECENT_DAYS days, and the newest
    few causes. One query (and the book's versions, once, if there are any)."""
    since = now.astimezone(UTC).date() - timedelta(days=RECENT_DAYS)
    found = list(
        Anomaly.objects.filter(connection__in=connections, day__gte=since)
        .select_related("connection")
        .order_by(*anomalies.ORDER)
    )
    return {
        "count": len(found),
        "days": RECENT_DAYS,
        "needs_look": sum(1 for a in found if not a.feedback),
        "newest": items(found[:RECENT_SHOWN], book),
        "team": team,
    }


def between(connection_ids: Sequence[int], start: datetime, end: datetime) -> list[Anomaly]:
    """The anomalies of these connections on the days of [start, end), newest first: the
    team page's flags and a report's. One query."""
    if not connection_ids:
        return []
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    return list(
        Anomaly.objects.filter(
            connection_id__in=list(connection_ids),
            day__gte=start.astimezone(UTC).date(),
            day__lte=last,
        )
        .select_related("connection")
        .order_by(*anomalies.ORDER)
    )


def items(found: Sequence[Anomaly], book: PriceBook | None) -> list[dict[str, Any]]:
    """Day, cause (priced in `book`) and answer of each: the overview's and a report's list."""
    return [
        {"day": a.day, "cause": anomalies.cause(a, book), "feedback": a.feedback} for a in found
    ]


def causes_by_connection(found: Sequence[Anomaly], book: PriceBook | None) -> dict[int, list[str]]:
    """Their causes by connection, each after its day ("02 Dec: training on …"), priced in
    `book` (its versions read once)."""
    causes: dict[int, list[str]] = defaultdict(list)
    for anomaly in found:
        text = anomalies.cause(anomaly, book)
        causes[anomaly.connection_id].append(f"{anomaly.day:%d %b}: {text}")
    return dict(causes)
