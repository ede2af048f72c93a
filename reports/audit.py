"""The audit log (M7): who changed what, when, from where, with the values before and after.

Services call `record()` where they make a change (several change rows with `.update()`,
which no signal sees), so every path (a page, the command line, the API, the worker) is
covered by the same call. Where a change came from is set by the caller around it:
`with acting(AuditEntry.Via.CLI):` in a command; pages and the API get it from
`reports.views.middleware.audit_source`, which also gives the client's address. Without it a
change is the system's.

What an entry never holds: a token, a JWT, a webhook secret, a URL (a Slack or Teams URL is
its own secret), a password. Callers record "token replaced (…last4)" instead; `record()`
also drops any key that names a secret, as a second line of defence.

Entries are never edited or deleted by the app (the admin shows them read-only) and never
pruned by reports/retention.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from reports.models import AuditEntry, Team, one_line

Via = AuditEntry.Via

# Keys of `before`/`after` never written, whatever a caller passes.
SECRET_WORDS = ("secret", "password", "jwt", "token_encrypted", "url", "raw_token")


@dataclass(frozen=True)
class Source:
    via: str = Via.SYSTEM
    client_ip: str | None = None


_SYSTEM = Source()
_source: ContextVar[Source | None] = ContextVar("audit_source", default=None)


@contextmanager
def acting(via: str, client_ip: str | None = None) -> Iterator[None]:
    """Changes recorded inside come from `via` (page, cli, api, system), from `client_ip`."""
    token = _source.set(Source(via=via, client_ip=client_ip))
    try:
        yield
    finally:
        _source.reset(token)


def _clean(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {
        key: value
        for key, value in values.items()
        if not any(word in key.lower() for word in SECRET_WORDS)
    }


def record(
    action: str,
    *,
    actor: User | AnonymousUser | None,
    object_type: str,
    object_id: Any = "",
    label: str = "",
    team: Team | int | None = None,
    owner: User | int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one entry, in the caller's transaction (so a change rolled back leaves none)."""
    source = _source.get() or _SYSTEM
    person = actor if isinstance(actor, User) else None
    return AuditEntry.objects.create(
        actor=person,
        actor_name=person.get_username() if person else "",
        action=action,
        object_type=object_type,
        object_id="" if object_id is None else str(object_id),
        label=one_line(str(label))[:300],
        team_id=team.pk if isinstance(team, Team) else team,
        owner_id=owner.pk if isinstance(owner, User) else owner,
        before=_clean(before),
        after=_clean(after),
        via=source.via,
        client_ip=source.client_ip if source.via in (Via.PAGE, Via.API) else None,
    )


# --- Who reads what -----------------------------------------------------------------------------


def entries_of_person(user: User) -> QuerySet[AuditEntry]:
    """A person's own entries: what they did, and what was done to what is theirs."""
    return AuditEntry.objects.filter(Q(actor=user) | Q(owner=user)).select_related("team")


def entries_of_team(team: Team) -> QuerySet[AuditEntry]:
    """A team's entries (for its admins)."""
    return AuditEntry.objects.filter(team=team).select_related("team")


def entries_all() -> QuerySet[AuditEntry]:
    """Every entry (Django staff)."""
    return AuditEntry.objects.select_related("team")


def filtered(
    entries: QuerySet[AuditEntry],
    *,
    action: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEntry]:
    """`action` (a code, or its family: "budget" matches "budget.create"), from `since`
    (inclusive) to `until` (exclusive); newest first."""
    if action:
        entries = entries.filter(Q(action=action) | Q(action__startswith=action + "."))
    if since is not None:
        entries = entries.filter(at__gte=since)
    if until is not None:
        entries = entries.filter(at__lt=until)
    return entries.order_by("-at", "-pk")


def action_codes(entries: QuerySet[AuditEntry]) -> list[str]:
    """The action codes these entries use, for the filter's choices."""
    return sorted(set(entries.order_by().values_list("action", flat=True).distinct()))
