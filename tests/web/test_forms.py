"""Report and connection forms: periods in UTC with an inclusive "to" day, tokens never echoed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from reports.views.forms import ConnectionCreateForm, ConnectionTokenForm, ReportForm
from tests.factories import make_connection, make_user

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 30, 45, 123456, tzinfo=UTC)
FLAGS_ON = dict.fromkeys(
    [
        "include_datasets",
        "include_manipulations",
        "include_models",
        "include_rented_devices",
        "include_predictions",
    ],
    "on",
)


def report_form(owner: Any, flags: dict[str, str] = FLAGS_ON, **data: Any) -> ReportForm:
    """The report form as `owner` posts it: by default over a new connection of theirs with
    every category ticked (`flags` are the ticked boxes; the others are not sent)."""
    if "connections" not in data:
        data["connections"] = [make_connection(owner).pk]
    return ReportForm({**flags, **data}, owner=owner, now=NOW)


@pytest.mark.parametrize(
    ("date_from", "date_to", "period"),
    [
        (
            "2026-01-01",
            "2026-01-31",
            (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        ),
        # A range ending today ends now, to the second.
        (
            "2026-03-14",
            "2026-03-15",
            (datetime(2026, 3, 14, tzinfo=UTC), NOW.replace(microsecond=0)),
        ),
    ],
    ids=["the to day is included", "today ends now"],
)
def test_a_custom_range_runs_to_the_end_of_the_to_day_or_now(
    date_from: str, date_to: str, period: tuple[datetime, datetime]
) -> None:
    form = report_form(
        make_user(), preset="custom", date_from=date_from, date_to=date_to, granularity="day"
    )
    assert form.is_valid(), form.errors
    assert (form.cleaned_data["period_start"], form.cleaned_data["period_end"]) == period


def test_a_preset_sets_the_period_and_ignores_the_dates() -> None:
    user = make_user()
    form = report_form(user, preset="last_7_days", date_from="garbage", granularity="day")
    assert not form.is_valid()  # a malformed date is still reported ...
    form = report_form(user, preset="last_7_days", granularity="day")
    assert form.is_valid(), form.errors  # ... but an empty one is fine with a preset
    assert form.cleaned_data["period_start"] == datetime(2026, 3, 8, tzinfo=UTC)
    assert form.cleaned_data["period_end"] == datetime(2026, 3, 15, tzinfo=UTC)


def test_flags_default_on_and_unchecked_means_off() -> None:
    user = make_user()
    assert all(ReportForm(owner=user, now=NOW)[name].initial for name in FLAGS_ON)
    form = report_form(
        user, flags={"include_models": "on"}, preset="last_month", granularity="total"
    )
    assert form.is_valid(), form.errors
    assert form.flags() == {
        "include_datasets": False,
        "include_manipulations": False,
        "include_models": True,
        "include_rented_devices": False,
        "include_predictions": False,
    }


def test_only_the_owners_connections_are_offered() -> None:
    user, other = make_user(), make_user()
    mine, theirs = make_connection(user), make_connection(other)
    field = ReportForm(owner=user, now=NOW).fields["connections"]
    assert list(field.queryset) == [mine]  # type: ignore[attr-defined]
    form = report_form(user, connections=[theirs.pk], preset="last_month", granularity="total")
    assert "connections" in form.errors


@pytest.mark.parametrize("form_class", [ConnectionCreateForm, ConnectionTokenForm])
def test_a_token_is_never_rendered_back(form_class: type) -> None:
    token = "osai-sandbox-never-echoed-1234"
    form = form_class({"label": "", "region": "nowhere", "access_token": token})
    assert not form.is_valid() or form_class is ConnectionTokenForm
    html = str(form)
    assert token not in html
    assert 'type="password"' in html


def test_regions_come_from_the_server_settings() -> None:
    choices = dict(ConnectionCreateForm().fields["region"].choices)  # type: ignore[attr-defined]
    assert "sandbox" in choices and "eu" in choices


@pytest.mark.parametrize(
    "bad", ["Lab\nBcc: x@example.com", "La\rb", "Lab\tA", "Lab\x00b", "Lab\x7fb", "Lab\u2028B"]
)
def test_names_and_labels_with_control_characters_are_refused_at_the_form_the_cli_and_the_api(
    bad: str,
) -> None:
    """A7: a label or name reaches email subjects: a line break there made every attempt to
    send fail the same way. The forms, the services behind the commands, and the API's
    tokens (named on their page and by `api_token --name`) refuse it; nothing is saved."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from reports.integrations import api_tokens
    from reports.models import ApiToken, Connection, Team
    from reports.pipeline import connections
    from reports.teams import TeamError, roster
    from reports.views.account import ApiTokenForm
    from reports.views.forms import ConnectionEditForm, TeamCreateForm

    owner = make_user()
    token = {"region": "sandbox", "access_token": "osai-sandbox-x"}
    assert "label" in ConnectionCreateForm({"label": bad, **token}).errors
    assert "label" in ConnectionEditForm({"label": bad}, owner=owner).errors
    assert "name" in TeamCreateForm({"name": bad}).errors
    assert "name" in ApiTokenForm({"name": bad}).errors
    with pytest.raises(connections.ConnectionCheckError, match="one line"):
        connections.connection_create(owner=owner, label=bad, **token)
    with pytest.raises(connections.ConnectionCheckError, match="one line"):
        connections.connection_relabel(connection=make_connection(owner, "Fine"), label=bad)
    with pytest.raises(TeamError, match="one line"):
        roster.team_create(name=bad, admin=owner)
    with pytest.raises(api_tokens.ApiTokenError, match="one line"):
        api_tokens.api_token_create(user=owner, name=bad)
    with pytest.raises(CommandError, match="one line"):
        call_command("teams", "create", bad, "--admin", owner.username)
    with pytest.raises(CommandError, match="one line"):
        call_command("api_token", "--user", owner.username, "--name", bad)
    assert list(Connection.objects.values_list("label", flat=True)) == ["Fine"]
    assert not Team.objects.exists() and not ApiToken.objects.exists()


def test_add_connection_refuses_a_label_with_a_line_break(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A7, the command line: the label is refused before the token is checked with OSAI."""
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from reports.models import Connection

    owner = make_user()
    monkeypatch.setattr("sys.stdin", io.StringIO("osai-sandbox-x\n"))
    with pytest.raises(CommandError, match="one line"):
        call_command(
            "add_connection", "--user", owner.username, "--label", "A\nB", "--region", "sandbox"
        )
    assert not Connection.objects.exists()
