"""The cast that page, API and team tests share: two teams, their people, their connections and
finished reports (the `world` fixture in tests/conftest.py builds one per test).

- `owner`: a member of the team "Vision". Owns the connection "Main" (`OWNER_TOKEN`, a JWT, an
  OSAI webhook delivery whose body carries a signed link), shares it with the team, and has a
  personal report over it (Oct-Dec 2025).
- `team_admin`: admin of "Vision"; shares a connection of their own ("Admin lab") and requested
  the team report over both shared connections (Jan-Mar 2026).
- `team_member`: a member of "Vision" who shares nothing.
- `team_viewer`: a viewer (finance) of "Vision": reads its spend, reports and CSVs, changes
  nothing, shares nothing and sees no one else's OSAI account name or token ending.
- `other_admin`: admin of the team "Elsewhere", with a team report over a connection of theirs.
- `stranger`: a member of "Elsewhere" only: related to nothing above.

Every one of them has an API token (`tokens`). The first bucket of each report has an archived
raw file; every bucket's stored OSAI answer carries `SIGNED_LINK`. Rows are written directly, as
the factories write them: no sandbox is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reports import crypto
from reports.integrations import api_tokens, webhooks
from reports.models import Bucket, Connection, Report, Team
from tests.factories import (
    ensure_example_price_book,
    make_bucket_file,
    make_connection,
    make_done_report,
    make_team,
    make_user,
    share_with,
)

ROLES = ("owner", "team_admin", "team_member", "team_viewer", "other_admin", "stranger")
# Pages and answers are searched for every part of these: none may carry one.
OWNER_TOKEN = "osai-sandbox-CANARY-owner-main-9f2c"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ"
SIGNED_LINK = "https://storage.example/r.json?AWSAccessKeyId=YXBw&Expires=1&Signature=Q0FOQVJZ"


@dataclass
class World:
    owner: Any
    team_admin: Any
    team_member: Any
    team_viewer: Any
    other_admin: Any
    stranger: Any
    team: Team
    other_team: Team
    connection: Connection  # the owner's "Main"
    admin_connection: Connection
    other_connection: Connection
    team_report: Report
    personal_report: Report
    other_report: Report  # the other team's
    tokens: dict[str, str]  # an API token per role

    def user(self, role: str) -> Any:
        """The user playing `role` (one of ROLES), or None for "anonymous"."""
        return None if role == "anonymous" else getattr(self, role)


def build_world() -> World:
    ensure_example_price_book()
    owner, team_admin, team_member = make_user("owner"), make_user("admin"), make_user("member")
    team_viewer = make_user("viewer", email="finance@example.com")
    other_admin, stranger = make_user("otheradmin"), make_user("stranger")
    team = make_team(
        "Vision", admins=[team_admin], members=[owner, team_member], viewers=[team_viewer]
    )
    other_team = make_team("Elsewhere", admins=[other_admin], members=[stranger])
    connection = make_connection(owner, "Main", token=OWNER_TOKEN)
    Connection.objects.filter(pk=connection.pk).update(jwt_encrypted=crypto.encrypt_secret(JWT))
    connection.refresh_from_db()
    admin_connection = make_connection(team_admin, "Admin lab")
    other_connection = make_connection(other_admin, "Other lab")
    share_with(team, connection, admin_connection)
    share_with(other_team, other_connection)
    # Team reports are requested by a team admin over the connections members share.
    team_report = make_done_report(team_admin, [connection, admin_connection], team=team)
    personal_report = make_done_report(
        owner,
        [connection],
        start=datetime(2025, 10, 1, tzinfo=UTC),
        end=datetime(2026, 1, 1, tzinfo=UTC),
    )
    other_report = make_done_report(other_admin, [other_connection], team=other_team)
    for report in (team_report, personal_report, other_report):
        first = Bucket.objects.filter(report_buckets__report=report).order_by("pk").first()
        assert first is not None
        make_bucket_file(first, b'{"status": 0}')
    # What OSAI answered, with a signed link in it: no answer of ours may carry it.
    for bucket in Bucket.objects.all():
        bucket.osai_response = {**(bucket.osai_response or {}), "path": SIGNED_LINK}
        bucket.save(update_fields=["osai_response"])
    webhooks.webhook_receive(
        connection=connection,
        body=json.dumps(
            {"taskType": "Training", "success": True, "workerMemoryGB": 16, "link": SIGNED_LINK}
        ).encode(),
        content_type="application/json",
    )
    people = (owner, team_admin, team_member, team_viewer, other_admin, stranger)
    tokens = {
        role: api_tokens.api_token_create(user=user, name=role)[1]
        for role, user in zip(ROLES, people, strict=True)
    }
    return World(
        owner=owner,
        team_admin=team_admin,
        team_member=team_member,
        team_viewer=team_viewer,
        other_admin=other_admin,
        stranger=stranger,
        team=team,
        other_team=other_team,
        connection=connection,
        admin_connection=admin_connection,
        other_connection=other_connection,
        team_report=team_report,
        personal_report=personal_report,
        other_report=other_report,
        tokens=tokens,
    )
