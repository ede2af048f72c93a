"""Report forms opened from their URL: links, "run again" and saved views.

Every report form (personal: /reports/new/, a team's: /teams/<id>/reports/new/) opens
pre-filled from its query string. The parameters, all optional:

- `preset`: a period preset (reports/periods.py `PRESETS`; `this_quarter` is read as
  `quarter_to_date`), or `custom` with `date_from` and `date_to` (YYYY-MM-DD, UTC, "to"
  included). Without it, a custom range if the link gives days, else the form's default.
- `granularity`: day, week, month or total.
- `categories`: the kinds of usage, comma-separated (datasets, manipulations, models,
  rented_devices, predictions: `manage.py request_report --flags` spells them so too);
  without it, all of them.
- `connections`: ids of the person's own connections, comma-separated (the personal form);
  without it, all of them.

A preset stays relative ("last quarter" is always the last quarter, whenever the link is
opened); a custom range stays fixed. The form checks what a link says as it checks what a
person types: a bad parameter is a form error, never a server error, and opening a link
requests nothing (GET changes nothing, S4).

A saved view (`SavedView`) is those parameters under a name: a person's own (listed on their
overview and their report form) or a team's (saved by one of its admins, listed on the team
page for its admins). Opening one opens the pre-filled form rather than requesting at once:
the person sees what will be asked of OSAI, and a stale part (a connection since deleted)
shows as a form error instead of a failed request.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.urls import reverse

from reports.access import Capability
from reports.metrics import FLAG_BY_CLI_NAME, FLAGS
from reports.models import Granularity, Report, SavedView, Team
from reports.periods import PRESETS
from reports.teams import TeamError, clean_name, roster

CUSTOM = "custom"
PARAMS = ("preset", "date_from", "date_to", "granularity", "categories", "connections")
PRESET_ALIASES = {"this_quarter": "quarter_to_date"}
NAME_MAX_LENGTH = SavedView._meta.get_field("name").max_length or 80


def has_params(query: Mapping[str, Any]) -> bool:
    """True if a request's query string asks for a pre-filled form."""
    return any(name in query for name in PARAMS)


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def form_data(
    query: Mapping[str, Any], *, defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The data to bind a report form to from a link's parameters (the form's `defaults` for
    what the link leaves out), and messages about parameters no form field can show."""
    problems: list[str] = []
    dates = query.get("date_from") or query.get("date_to")
    default = CUSTOM if dates else defaults.get("preset")  # days alone mean a custom range
    preset = str(query.get("preset") or default or "").strip()
    preset = PRESET_ALIASES.get(preset, preset)
    data: dict[str, Any] = {
        "preset": preset,
        "date_from": str(query.get("date_from") or "").strip(),
        "date_to": str(query.get("date_to") or "").strip(),
        "granularity": str(query.get("granularity") or defaults.get("granularity") or ""),
    }
    categories = query.get("categories")
    if categories is None:
        chosen = {flag.field for flag in FLAGS}
    else:
        chosen = set()
        for name in _ids(str(categories)):
            flag = FLAG_BY_CLI_NAME.get(name.lower())
            if flag is None:
                known = ", ".join(FLAG_BY_CLI_NAME)
                problems.append(f"Unknown category “{name[:40]}” in the link: choose from {known}.")
            else:
                chosen.add(flag.field)
    for flag in FLAGS:
        if flag.field in chosen:
            data[flag.field] = "on"
    connections = query.get("connections")
    if connections is not None:
        data["connections"] = _ids(str(connections))
    elif "connections" in defaults:
        data["connections"] = [str(pk) for pk in defaults["connections"]]
    return data, problems


def params_of(cleaned: Mapping[str, Any], *, all_connections: bool = True) -> dict[str, str]:
    """A valid report form's choices as link parameters (what a saved view keeps): the
    preset, or the fixed days of a custom range; the granularity; the categories and the
    connections only when not all of them are chosen."""
    preset = cleaned.get("preset") or CUSTOM
    params = {"preset": preset}
    if preset == CUSTOM:
        params["date_from"] = cleaned["date_from"].isoformat()
        params["date_to"] = cleaned["date_to"].isoformat()
    params["granularity"] = cleaned["granularity"]
    chosen = [flag.cli_name for flag in FLAGS if cleaned.get(flag.field)]
    if len(chosen) < len(FLAGS):
        params["categories"] = ",".join(chosen)
    if not all_connections and cleaned.get("connections") is not None:
        params["connections"] = ",".join(str(c.pk) for c in cleaned["connections"])
    return params


def params_of_data(data: Any) -> dict[str, str]:
    """A report form's fields as they were sent (a QueryDict, valid or not) as link
    parameters, so the form can be opened again as it was."""
    params = {name: str(data.get(name) or "") for name in PARAMS[:4]}
    params["categories"] = ",".join(flag.cli_name for flag in FLAGS if data.get(flag.field))
    if "connections" in data:
        params["connections"] = ",".join(str(pk) for pk in data.getlist("connections"))
    return params


def params_of_report(report: Report) -> dict[str, str]:
    """A report's own parameters, to run it again: its preset if it had one (relative, as it
    was asked), else its fixed range of days; a personal report's connections."""
    params: dict[str, str] = {}
    if report.preset in PRESETS:
        params["preset"] = report.preset
    else:
        last = report.period_end - timedelta(microseconds=1)  # "to" is included
        params.update(
            preset=CUSTOM,
            date_from=report.period_start.date().isoformat(),
            date_to=last.date().isoformat(),
        )
    params["granularity"] = report.granularity
    chosen = [flag.cli_name for flag in FLAGS if getattr(report, flag.field)]
    if len(chosen) < len(FLAGS):
        params["categories"] = ",".join(chosen)
    if report.team_id is None:
        params["connections"] = ",".join(str(c.pk) for c in report.connections.all())
    return params


def form_url(params: Mapping[str, str], team_id: int | None = None) -> str:
    """The report form (a team's, or the personal one) pre-filled with these parameters."""
    args = [] if team_id is None else [team_id]
    base = reverse("report_new" if team_id is None else "team_report_new", args=args)
    # An empty list of categories is kept: it means none (a form error), not all. The query
    # follows PARAMS' order, not the mapping's: PostgreSQL's jsonb keeps its own key order.
    query = urlencode(
        [
            (name, params[name])
            for name in PARAMS
            if name in params and (params[name] != "" or name == "categories")
        ]
    )
    return f"{base}?{query}#request" if query else f"{base}#request"


def run_again_url(report: Report) -> str:
    """The form its report was asked with, pre-filled with the report's parameters."""
    return form_url(params_of_report(report), report.team_id)


def describe_params(params: Mapping[str, str]) -> str:
    """A saved view in words: "Last quarter, weekly, datasets and models"."""
    preset = params.get("preset", "")
    if preset == CUSTOM:
        period = f"{params.get('date_from', '?')} to {params.get('date_to', '?')}"
    else:
        period = PRESETS.get(PRESET_ALIASES.get(preset, preset), preset)
    parts = [period]
    granularity = params.get("granularity")
    if granularity in Granularity.values:
        parts.append(Granularity(granularity).label.lower())
    if params.get("categories"):
        labels = [
            FLAG_BY_CLI_NAME[name].label.lower()
            for name in params["categories"].split(",")
            if name in FLAG_BY_CLI_NAME
        ]
        parts.append(", ".join(labels) or "no category")
    if params.get("connections"):
        count = len(_ids(params["connections"]))
        parts.append(f"{count} connection{'s' if count != 1 else ''}")
    return ", ".join(parts)


# --- Saved views -----------------------------------------------------------------------------


def personal_views(user: User) -> QuerySet[SavedView]:
    """A person's own saved views, by name."""
    return SavedView.objects.filter(owner=user, team__isnull=True).order_by("name", "pk")


def team_views(team: Team) -> QuerySet[SavedView]:
    """A team's saved views, by name."""
    return SavedView.objects.filter(team=team).select_related("owner").order_by("name", "pk")


def view_url(view: SavedView) -> str:
    return form_url(view.params, view.team_id)


@transaction.atomic
def saved_view_save(
    *, owner: User, name: str, params: Mapping[str, str], team: Team | None = None
) -> tuple[SavedView, bool]:
    """Save a form's parameters by name, for its owner or (one of its admins) for a team. The
    same name again replaces that view's parameters. Returns the view and whether it is new."""
    name = clean_name(name, noun="view", max_length=NAME_MAX_LENGTH)
    params = {k: str(v) for k, v in params.items() if k in PARAMS}
    may_save = team is None or roster.membership_for(owner, team.pk, Capability.REQUEST_TEAM_REPORT)
    if not may_save:
        raise TeamError("Only the team's admins can save its views.")
    lookup: dict[str, Any] = (
        {"team": team} if team is not None else {"owner": owner, "team__isnull": True}
    )
    try:
        with transaction.atomic():
            view = SavedView.objects.select_for_update().filter(name=name, **lookup).first()
            if view is None:
                return SavedView.objects.create(
                    owner=owner, team=team, name=name, params=params
                ), True
    except IntegrityError:  # saved at the same moment by someone else: update theirs
        view = SavedView.objects.get(name=name, **lookup)
    view.params = params
    view.save(update_fields=["params"])
    return view, False


def saved_view_for(user: User, pk: int) -> SavedView | None:
    """A saved view the user may open and delete: their own, or a team's they administer."""
    view = SavedView.objects.filter(pk=pk).select_related("team").first()
    if view is None:
        return None
    if view.team_id is None:
        return view if view.owner_id == user.pk else None
    allowed = roster.membership_for(user, view.team_id, Capability.REQUEST_TEAM_REPORT)
    return view if allowed is not None else None


def saved_view_delete(*, view: SavedView) -> None:
    SavedView.objects.filter(pk=view.pk).delete()
