"""Forms: parse and check what people type; the services (reports/pipeline/report_requests.py,
reports/pipeline/connections.py, reports/teams/) act on it.

Access tokens are typed into password inputs that never render their value back, so a
form shown again after an error never carries the token (T2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from reports.access import Capability, teams_where
from reports.metrics import FLAG_FIELDS, FLAGS, PRICED, RATE_FIELDS, Metric
from reports.models import (
    MAX_RATE,
    Budget,
    Channel,
    Connection,
    Granularity,
    Membership,
    PriceBook,
    Team,
    validate_one_line,
)
from reports.pages import links
from reports.pages.price_book import rate_unit
from reports.periods import PRESETS, preset_period, utc_midnight
from reports.pipeline import connections
from reports.teams import price_books
from reports.views.http import MAX_ID

CUSTOM = "custom"


def channel_label(channel: Channel) -> str:
    """A channel as a choice: whose, its name, its kind and where (never a URL in full)."""
    whose = f"team {channel.team.name}" if channel.team_id and channel.team else "yours"
    where = channel.url_hint or ", ".join(channel.emails)
    if channel.to_team_admins:
        where = ", ".join(filter(None, ["the team's admins", where]))
    return f"{channel.name} ({channel.get_kind_display()}, {whose}: {where})"


def _choices_from(form: forms.Form, name: str, queryset: QuerySet[Any]) -> None:
    """Offer only these rows in a model choice field (those the person may choose)."""
    field = form.fields[name]
    assert isinstance(field, forms.ModelChoiceField)  # ModelMultipleChoiceField is one too
    field.queryset = queryset


class IdsChoiceField(forms.ModelMultipleChoiceField):
    """A ModelMultipleChoiceField whose ids must fit a database column: a number larger than
    any id is "not one of the available choices", as any other id not offered is, instead of
    an `id__in` query SQLite cannot run (OverflowError, a 500; Django guards `pk=` lookups
    from it, not `pk__in=`) (I4)."""

    def _check_values(self, value: Any) -> QuerySet[Any]:
        assert self.queryset is not None and self.to_field_name is None
        pk = self.queryset.model._meta.pk
        assert pk is not None
        for raw in value:
            try:
                number = pk.to_python(raw)
            except forms.ValidationError:
                continue  # not a number: Django says so
            if isinstance(number, int) and not -MAX_ID - 1 <= number <= MAX_ID:
                raise forms.ValidationError(
                    self.error_messages["invalid_choice"],
                    code="invalid_choice",
                    params={"value": raw},
                )
        return super()._check_values(value)  # type: ignore[misc]  # not in django-stubs


def _token_field() -> forms.CharField:
    return forms.CharField(
        label="Access token",
        max_length=connections.MAX_TOKEN_LENGTH,
        strip=True,
        # render_value=False: the token is never sent back to the browser, even on errors.
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}
        ),
        help_text="Generate one in OSAI under your account settings. It is checked by "
        "signing in to OSAI, stored encrypted, and never shown again (only its last 4 "
        "characters).",
    )


class ConnectionCreateForm(forms.Form):
    label = forms.CharField(
        max_length=80,
        help_text="A name for you, such as “Production” or “Lab”.",
        validators=[validate_one_line],
    )
    region = forms.ChoiceField(choices=())
    access_token = _token_field()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        region_field = self.fields["region"]
        assert isinstance(region_field, forms.ChoiceField)
        region_field.choices = connections.region_choices()


class ConnectionTokenForm(forms.Form):
    access_token = _token_field()


def _optional_checkboxes(
    model: type[Model],
    *,
    label: str,
    help_text: str = "",
    field: type[IdsChoiceField] = IdsChoiceField,
) -> IdsChoiceField:
    """None or more of `model`'s rows, as checkboxes. Offers nothing until the form's __init__
    sets the rows the user may choose (`_choices_from`), so a form never offers another's."""
    return field(
        queryset=model._default_manager.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label=label,
        help_text=help_text,
    )


class ConnectionEditForm(forms.Form):
    label = forms.CharField(max_length=80, validators=[validate_one_line])
    shared_with_teams = _optional_checkboxes(
        Team,
        label="Share with teams",
        help_text="Admins and viewers of these teams see this connection's usage and spend in "
        "team reports, never its token.",
    )

    def __init__(self, *args: Any, owner: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        teams = teams_where(owner, Capability.SHARE_OWN_CONNECTIONS).order_by("name")
        _choices_from(self, "shared_with_teams", teams)


class PeriodForm(forms.Form):
    """A period (a preset, or a custom range of UTC days with "to" included), the five
    flags and a granularity: what every report request, personal or team, asks for."""

    preset = forms.ChoiceField(
        label="Period",
        choices=[*PRESETS.items(), (CUSTOM, "Custom range (below)")],
        initial="last_12_months",
    )
    date_from = forms.DateField(
        label="From (UTC)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The first day, from 00:00 UTC.",
    )
    date_to = forms.DateField(
        label="To (UTC, inclusive)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The last day, included up to 24:00 UTC (up to now if it is today).",
    )
    include_datasets = forms.BooleanField(required=False, initial=True)
    include_manipulations = forms.BooleanField(required=False, initial=True)
    include_models = forms.BooleanField(required=False, initial=True)
    include_rented_devices = forms.BooleanField(required=False, initial=True)
    include_predictions = forms.BooleanField(required=False, initial=True)
    granularity = forms.ChoiceField(choices=Granularity.choices, initial=Granularity.MONTH)

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now or timezone.now()
        for flag in FLAGS:
            self.fields[flag.field].label = flag.label
            self.fields[flag.field].help_text = flag.help_text

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        preset = data.get("preset")
        if preset == CUSTOM:
            data["period_start"], data["period_end"] = self._custom_period(data)
        elif preset:
            data["period_start"], data["period_end"] = preset_period(preset, self.now)
        if not any(data.get(name) for name in FLAG_FIELDS):
            raise forms.ValidationError("Choose at least one category of usage.")
        return data

    def _custom_period(self, data: dict[str, Any]) -> tuple[datetime, datetime]:
        date_from: date | None = data.get("date_from")
        date_to: date | None = data.get("date_to")
        errors = {}
        if date_from is None and "date_from" not in self.errors:
            errors["date_from"] = "Enter the first day of the custom range."
        if date_to is None and "date_to" not in self.errors:
            errors["date_to"] = "Enter the last day of the custom range."
        if errors:
            raise forms.ValidationError(errors)
        if date_from is None or date_to is None:  # malformed: the field already says why
            raise forms.ValidationError("Correct the dates of the custom range.")
        today = self.now.date()
        if date_from > date_to:
            raise forms.ValidationError({"date_to": "“To” must be on or after “From”."})
        if date_to > today:
            raise forms.ValidationError(
                {"date_to": f"“To” cannot be in the future (today is {today:%Y-%m-%d} UTC)."}
            )
        start = utc_midnight(date_from)
        # Inclusive "to": the service's end is exclusive, the next midnight, or now for today.
        end = min(utc_midnight(date_to) + timedelta(days=1), self.now.replace(microsecond=0))
        if end <= start:
            raise forms.ValidationError(
                {"date_from": "Today has only just begun (UTC): choose an earlier “From”."}
            )
        return start, end

    def flags(self) -> dict[str, bool]:
        return {name: bool(self.cleaned_data.get(name)) for name in FLAG_FIELDS}

    def preset_name(self) -> str:
        """The preset chosen, or "" for a custom range (as Report.preset stores it)."""
        preset = self.cleaned_data.get("preset", "")
        return "" if preset == CUSTOM else preset

    def request_kwargs(self) -> dict[str, Any]:
        """What a valid form asks for, as the keyword arguments of a report request (personal
        or team): the period, granularity, flags and preset, compared with the period before."""
        data = self.cleaned_data
        return {
            "period_start": data["period_start"],
            "period_end": data["period_end"],
            "granularity": data["granularity"],
            "flags": self.flags(),
            "preset": self.preset_name(),
            "compare": True,
            "now": self.now,
        }

    def flag_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in FLAG_FIELDS]


class ReportForm(PeriodForm):
    """A report request on one or more of the owner's connections."""

    connections = IdsChoiceField(
        queryset=Connection.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one connection."},
        help_text="Several connections are combined into one report.",
    )
    field_order = ["connections", "preset", "date_from", "date_to"]

    def __init__(self, *args: Any, owner: User, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, now=now, **kwargs)
        # Scoped to the owner: a tampered id is "not one of the available choices".
        own = Connection.objects.filter(owner=owner).order_by("label")
        _choices_from(self, "connections", own)
        if not self.is_bound:
            self.initial.setdefault("connections", list(own))

    def request_kwargs(self) -> dict[str, Any]:
        return {**super().request_kwargs(), "connections": self.cleaned_data["connections"]}

    def all_connections_chosen(self) -> bool:
        """Every one of the owner's connections is chosen (a saved view then keeps "all")."""
        field = self.fields["connections"]
        assert isinstance(field, forms.ModelMultipleChoiceField) and field.queryset is not None
        return set(self.cleaned_data["connections"]) == set(field.queryset)


class TeamReportForm(PeriodForm):
    """A team report request: the connections are those the team's members share with it."""

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, now=now, **kwargs)
        self.fields["preset"].initial = "last_month"


AnyPeriodForm = TypeVar("AnyPeriodForm", bound=PeriodForm)


def prefilled(
    form_class: type[AnyPeriodForm], query: Mapping[str, Any], **kwargs: Any
) -> AnyPeriodForm:
    """A report form (personal or a team's) filled in from a link's parameters and checked
    as if it were sent, without requesting anything: a bad parameter is a form error
    (reports/pages/links.py)."""
    blank = form_class(**kwargs)
    defaults: dict[str, Any] = {
        "preset": blank.fields["preset"].initial,
        "granularity": blank.fields["granularity"].initial,
    }
    if "connections" in blank.fields:
        defaults["connections"] = [c.pk for c in blank.initial.get("connections", [])]
    data, problems = links.form_data(query, defaults=defaults)
    form = form_class(data, **kwargs)
    form.is_valid()
    for problem in problems:
        form.add_error(None, problem)
    return form


class SharedConnectionsField(IdsChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        # The label and OSAI account only: a token is shown as its last 4 characters at most.
        return f"{obj.label} ({obj.account_name or obj.region}, {obj.token_hint})"


class SharingForm(forms.Form):
    """Which of a member's own connections a team may report on."""

    connections = _optional_checkboxes(
        Connection, label="Connections this team may report on", field=SharedConnectionsField
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices_from(self, "connections", Connection.objects.filter(owner=user).order_by("label"))


class TeamCreateForm(forms.Form):
    name = forms.CharField(max_length=120, label="Team name", validators=[validate_one_line])


class MemberAddForm(forms.Form):
    """Invite someone by email address (M6): they join by accepting, with any account."""

    who = forms.CharField(
        max_length=254,
        label="Email address",
        widget=forms.EmailInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class TeamPriceBookForm(forms.Form):
    """The team's price book: a shared one, or (given the team) one of its own; another
    team's book is "not one of the available choices"."""

    price_book = forms.ModelChoiceField(
        queryset=PriceBook.objects.filter(team__isnull=True).order_by("name"),
        required=False,
        empty_label="The default price book",
        label="Price book",
        help_text="Every report of this team, earlier ones included, is priced with it.",
    )

    def __init__(self, *args: Any, team: Team | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if team is not None:
            _choices_from(self, "price_book", price_books.books_for_team(team))


class PriceBookCopyForm(forms.Form):
    """Make a team's own book: a copy of a book it may see, under a new name."""

    source = forms.ModelChoiceField(
        queryset=PriceBook.objects.none(),
        label="Copy of",
        empty_label=None,
        help_text="Its currency and every version of its rates are copied.",
    )
    name = forms.CharField(max_length=price_books.NAME_MAX_LENGTH, label="Name")

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices_from(self, "source", price_books.books_for_team(team))
        if not self.is_bound:
            self.initial.setdefault("name", f"{team.name} prices")
            self.initial.setdefault("source", team.price_book_id or _default_book_id())


def _default_book_id() -> int | None:
    return (
        PriceBook.objects.filter(is_default=True).order_by("pk").values_list("pk", flat=True)
    ).first()


class PriceBookVersionForm(forms.Form):
    """Rates from a UTC day on: one per priced metric and worker class, 0 to 1,000 per hour or
    per GB-month; the day no earlier than today for anyone but staff (`earliest`)."""

    effective = forms.DateField(
        label="In force from (UTC)",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="From 00:00 UTC that day until the next version.",
    )
    note = forms.CharField(max_length=200, required=False, label="Note")

    def __init__(self, *args: Any, earliest: date | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.earliest = earliest
        if earliest is not None:
            self.fields["effective"].widget.attrs["min"] = earliest.isoformat()
            self.fields["effective"].help_text += " Today or later: only staff back-date."
        for metric in PRICED:
            assert metric.rate_field is not None
            unit = rate_unit(metric)
            self.fields[metric.rate_field] = forms.DecimalField(
                label=f"{metric.label} (per {unit})",
                min_value=Decimal(0),
                max_value=MAX_RATE,
                max_digits=14,
                decimal_places=6,
                error_messages={
                    "required": f"{metric.label}: enter a rate (0 if it is free).",
                    "min_value": f"{metric.label}: a rate cannot be negative.",
                    "max_value": f"{metric.label}: a rate is at most 1,000 per {unit}.",
                    "invalid": f"{metric.label}: enter a number, such as 1.20.",
                },
                widget=forms.NumberInput(attrs={"step": "any", "min": "0", "max": "1000"}),
            )
        self.metrics = [(metric, self[metric.rate_field or ""]) for metric in PRICED]

    def clean_effective(self) -> date:
        effective: date = self.cleaned_data["effective"]
        if self.earliest is not None and effective < self.earliest:
            raise forms.ValidationError(
                f"Rates apply from today ({self.earliest:%Y-%m-%d} UTC) or later: what reports "
                "already showed keeps its prices. Only staff can back-date a version."
            )
        return effective

    def rates(self) -> dict[str, Decimal]:
        return {field: self.cleaned_data[field] for field in RATE_FIELDS}

    def rate_fields(self) -> list[tuple[Metric, forms.BoundField]]:
        return self.metrics


class PriceBookSettingsForm(forms.Form):
    name = forms.CharField(max_length=price_books.NAME_MAX_LENGTH, label="Name")
    currency = forms.CharField(
        min_length=3,
        max_length=3,
        label="Currency",
        help_text="Three letters, such as EUR. Fixed once a budget uses this book.",
    )

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        if not price_books.CURRENCY.fullmatch(currency):
            raise forms.ValidationError("A currency is three letters, such as EUR or USD.")
        return currency


class SavedViewForm(forms.Form):
    """The name a report form's choices are saved under."""

    view_name = forms.CharField(
        max_length=links.NAME_MAX_LENGTH,
        label="Save as",
        error_messages={"required": "Give the view a name."},
        widget=forms.TextInput(attrs={"placeholder": "such as “Quarterly review”"}),
    )


class BudgetForm(forms.Form):
    """A monthly budget: for you, one of your connections, or a team you administer."""

    scope = forms.ChoiceField(
        choices=Budget.Scope.choices,
        label="Budget for",
        widget=forms.RadioSelect,
        initial=Budget.Scope.PERSON,
    )
    connection = forms.ModelChoiceField(
        queryset=Connection.objects.none(), required=False, label="Connection"
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False, label="Team")
    amount = forms.DecimalField(
        label="Monthly amount",
        min_value=Decimal("0.01"),
        max_digits=14,
        decimal_places=2,
        help_text="In the currency of the price book that prices it.",
    )
    thresholds = forms.CharField(
        initial="50, 80, 100",
        help_text="Percentages of the amount; each one alerts once a month.",
    )
    on_forecast = forms.BooleanField(
        required=False,
        label="Also alert when the month-end forecast crosses a threshold",
    )
    channels = _optional_checkboxes(
        Channel,
        label="Send alerts to these channels",
        help_text="Your own channels for your budgets; a team's for its budget. Add Slack, "
        "Microsoft Teams or a signed webhook on the Channels page.",
    )
    emails = forms.CharField(
        required=False,
        label="Also email these addresses",
        help_text="Addresses, separated by commas: they become an email channel.",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices_from(self, "connection", Connection.objects.filter(owner=user).order_by("label"))
        managed = teams_where(user, Capability.MANAGE_BUDGETS)
        _choices_from(
            self,
            "channels",
            Channel.objects.filter(Q(owner=user) | Q(team__in=managed))
            .select_related("team")
            .order_by("team__name", "name", "pk"),
        )
        self.fields["channels"].label_from_instance = channel_label  # type: ignore[attr-defined]
        _choices_from(self, "team", managed.order_by("name"))


class ChannelForm(forms.Form):
    """A channel to add: email addresses, or a webhook URL (and a signed webhook's secret).
    Neither the URL nor the secret is ever sent back to the browser."""

    name = forms.CharField(max_length=120, label="Name", validators=[validate_one_line])
    kind = forms.ChoiceField(choices=Channel.Kind.choices, label="Kind", widget=forms.RadioSelect)
    emails = forms.CharField(
        required=False,
        label="Email addresses",
        help_text="For an email channel: addresses, separated by commas.",
    )
    url = forms.CharField(
        required=False,
        max_length=2000,
        label="Webhook URL",
        # render_value=False: a Slack or Teams URL is a secret; never shown again, even on errors.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="For Slack, Microsoft Teams or a signed webhook: https only. Never shown "
        "again in full.",
    )
    secret = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        label="Signing secret",
        help_text="For a signed webhook: signs each message (X-OSAI-Usage-Signature). Never "
        "shown again.",
    )

    def __init__(self, *args: Any, team: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if team:
            self.fields["to_team_admins"] = forms.BooleanField(
                required=False,
                label="Email the team's admins (as they are when each message is sent)",
            )


class InvitationSignUpForm(UserCreationForm):
    """A new account from an invitation's page: a username and a password typed twice,
    checked by Django's password validators; its email address is the invitation's."""

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]
        fields = ("username",)

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.email = email  # the password validators compare with it
        self.fields["username"].widget.attrs["autocomplete"] = "username"
