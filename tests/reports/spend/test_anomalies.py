"""The anomaly detector (reports/spend/anomalies.py, N1-N4): usage spikes on closed held days,
judged once from the usual range of the held days before them, and paid storage left idle.

Held day buckets are written directly (tests/factories.py `held_bucket`); every detection is
given its `now`, so nothing here depends on the day the suite runs.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from osai.sandbox.server import account_id_for_token
from osai.sandbox.usage import account_totals
from reports import tasks
from reports.metrics import KB_MIN_PER_GB_MONTH, OSAI_FIELD_TO_COLUMN
from reports.models import Anomaly, Bucket, Connection, Membership, PriceBookVersion
from reports.spend import anomalies
from tests.factories import (
    ensure_example_price_book,
    held_bucket,
    make_anomaly,
    make_connection,
    make_team,
    make_user,
    share_with,
)
from tests.support.figures import figure

pytestmark = pytest.mark.django_db

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday, long closed
HOUR = 3600
TRAINING_16 = "training_seconds_16gb"
# A plausible month of 16 GB training: 0.5 to 1.5 hours a day, never the same.
NORMAL = [{TRAINING_16: HOUR * (0.5 + (n * 7 % 11) / 10)} for n in range(28)]


def held_days(
    connection: Connection, start: datetime, days: Sequence[Mapping[str, float]]
) -> list[Bucket]:
    """One closed held day bucket per entry of `days` (its usage columns, the rest 0)."""
    return Bucket.objects.bulk_create(
        held_bucket(connection, start + timedelta(days=i), start + timedelta(days=i + 1), totals=t)
        for i, t in enumerate(days)
    )


def at(n: int) -> datetime:
    """The moment day `n` after START ends (a detection then sees days 0 to n closed)."""
    return START + timedelta(days=n + 1)


@pytest.fixture
def book() -> Any:
    return ensure_example_price_book()


@pytest.fixture
def lab(book: Any) -> Connection:
    return make_connection(make_user("dana"), "Dana's lab")


def test_a_100x_day_is_flagged_and_a_normal_day_is_not(lab: Connection) -> None:
    spike = {TRAINING_16: 100 * HOUR}  # 100 x the usual hour
    held_days(lab, START, [*NORMAL, spike, NORMAL[0]])
    found = anomalies.detect(lab, now=at(29))
    assert found.judged == 30
    (anomaly,) = Anomaly.objects.all()
    assert (anomaly.kind, anomaly.column, anomaly.day) == ("spike", TRAINING_16, date(2025, 3, 31))
    assert anomaly.actual == 100 * HOUR
    assert 0 <= anomaly.expected_low < anomaly.expected_high < 5 * HOUR
    assert [(a.column, a.day) for a in found.new] == [(TRAINING_16, anomaly.day)]
    assert anomaly.alerting
    text = anomalies.cause(anomaly, anomalies.pricing.default_price_book())
    assert text.startswith(
        "training on 16 GB workers on Dana's lab: EUR 210.00 against a usual EUR"
    )


def test_a_metric_that_had_not_run_reads_as_usually_nothing(lab: Connection) -> None:
    """The first day a metric runs has the usual range 0-0: the cause says so in words."""
    anomaly = make_anomaly(lab, date(2025, 3, 31), actual=10 * HOUR, high=0.0)
    text = anomalies.cause(anomaly, anomalies.pricing.default_price_book())
    assert (
        text == "training on 16 GB workers on Dana's lab: EUR 21.00 where it usually costs nothing"
    )


def test_an_excess_below_the_minimum_amount_is_not_flagged(lab: Connection, settings: Any) -> None:
    # Prediction on 8 GB workers at EUR 0.40 an hour: 100 x a minute a day is EUR 0.67.
    days = [{"prediction_seconds_8gb": 60 + n % 5} for n in range(28)]
    held_days(lab, START, [*days, {"prediction_seconds_8gb": 6000}])
    assert anomalies.detect(lab, now=at(28)).new == []
    settings.OSAI_ANOMALY_MIN_AMOUNT = "0.50"
    Connection.objects.filter(pk=lab.pk).update(anomalies_checked_through=None)
    lab.refresh_from_db()
    assert [a.column for a in anomalies.detect(lab, now=at(28)).new] == ["prediction_seconds_8gb"]


def test_the_open_day_never_alerts(lab: Connection) -> None:
    held_days(lab, START, NORMAL)
    today = START + timedelta(days=28)
    held_bucket(
        lab, today, today + timedelta(hours=20), closed=False, totals={TRAINING_16: 500 * HOUR}
    ).save()
    found = anomalies.detect(lab, now=today + timedelta(hours=20))
    assert found.judged == 28 and found.new == []
    assert lab.anomalies_checked_through == date(2025, 3, 30)


def test_no_flag_before_the_minimum_history(lab: Connection) -> None:
    held_days(lab, START, [*NORMAL[:6], {TRAINING_16: 100 * HOUR}])
    assert anomalies.detect(lab, now=at(6)).new == []  # 6 held days before it
    other = make_connection(lab.owner, "Seven days")
    held_days(other, START, [*NORMAL[:7], {TRAINING_16: 100 * HOUR}])
    assert len(anomalies.detect(other, now=at(7)).new) == 1


def test_a_repricing_changes_what_is_shown_never_what_was_flagged(
    lab: Connection, book: Any
) -> None:
    held_days(lab, START, [*NORMAL, {TRAINING_16: 100 * HOUR}, *NORMAL[:3]])
    anomalies.detect(lab, now=at(31))
    before = list(Anomaly.objects.values())
    shown = anomalies.cause(Anomaly.objects.get(), book)
    # A back-dated version ten times dearer, and one a hundred times cheaper.
    current = book.versions.order_by("-effective_from").first()
    for factor, when in ((10, START - timedelta(days=40)), (Decimal("0.01"), START)):
        current.pk = None
        current.effective_from = when
        current.training_16gb_per_hour = Decimal("2.10") * factor
        current.save()
    book.refresh_from_db()
    assert anomalies.detect(lab, now=at(31)).new == []
    assert list(Anomaly.objects.values()) == before  # usage, not money: nothing rewritten
    assert anomalies.cause(Anomaly.objects.get(), book) != shown  # priced when shown
    # Judged again from scratch, the usage finds the same day (far above any minimum).
    Anomaly.objects.all().delete()
    Connection.objects.filter(pk=lab.pk).update(anomalies_checked_through=None)
    lab.refresh_from_db()
    PriceBookVersion.objects.filter(price_book=book, effective_from=START).delete()
    again = anomalies.detect(lab, now=at(31))  # the default book, read afresh
    assert [(a.column, a.day, a.actual) for a in again.new] == [
        (row["column"], row["day"], row["actual"]) for row in before
    ]


def test_detection_is_idempotent_and_judges_each_day_once(lab: Connection) -> None:
    held_days(lab, START, [*NORMAL, {TRAINING_16: 100 * HOUR}])
    assert len(anomalies.detect(lab, now=at(28)).new) == 1
    repeat = anomalies.detect(lab, now=at(28))
    assert (repeat.judged, repeat.new) == (0, [])
    # The next closed day is judged alone; another spike is a second anomaly, once.
    held_days(lab, START + timedelta(days=29), [{TRAINING_16: 120 * HOUR}])
    later = anomalies.detect(lab, now=at(29))
    assert later.judged == 1 and [a.day for a in later.new] == [date(2025, 4, 1)]
    assert anomalies.detect(lab, now=at(29)).new == []
    assert Anomaly.objects.count() == 2


def test_nothing_is_judged_while_the_history_is_still_fetched(lab: Connection) -> None:
    held_days(lab, START, [*NORMAL, {TRAINING_16: 100 * HOUR}])
    fetching = held_bucket(lab, START - timedelta(days=1), START)
    fetching.state = Bucket.State.POLLING
    fetching.save()
    found = anomalies.detect(lab, now=at(28))
    assert found.waiting and found.judged == 0 and lab.anomalies_checked_through is None
    Bucket.objects.filter(pk=fetching.pk).update(state=Bucket.State.DONE)
    assert len(anomalies.detect(lab, now=at(28)).new) == 1


def test_storage_paid_for_while_nothing_ran_for_14_days_is_found_once(lab: Connection) -> None:
    stored = 60 * KB_MIN_PER_GB_MONTH / 30  # 60 GB of models for a day: EUR 6.00 a month
    busy = [{**day, "models_kb_min": stored, "images_kb_min": 1e6} for day in NORMAL[:10]]
    idle = [{"models_kb_min": stored, "images_kb_min": 1e6}] * 20  # images: pennies
    held_days(lab, START, [*busy, *idle])
    anomalies.detect(lab, now=at(29))
    (finding,) = Anomaly.objects.filter(kind=Anomaly.Kind.IDLE_STORAGE)
    assert (finding.column, finding.day) == ("models_kb_min", date(2025, 3, 26))  # its 14th day
    assert anomalies.cause(finding, anomalies.pricing.default_price_book()) == (
        "model storage on Dana's lab: EUR 6.00 a month while no training, conversion or "
        "prediction ran for 14 days"
    )
    assert not Anomaly.objects.filter(kind=Anomaly.Kind.SPIKE).exists()


def test_the_tracking_hook_records_anomalies_once(
    lab: Connection, monkeypatch: Any, settings: Any
) -> None:
    held_days(lab, START, [*NORMAL, {TRAINING_16: 100 * HOUR}])
    monkeypatch.setattr(
        anomalies,
        "detect",
        lambda c, now=None, book=None, **more: DETECT(c, now=at(28), book=book, **more),
    )
    settings.OSAI_ANOMALIES = False
    assert tasks.tracking_bucket_done(lab.pk).endswith(", 0 new anomalies")
    assert not Anomaly.objects.exists()
    settings.OSAI_ANOMALIES = True
    assert tasks.tracking_bucket_done(lab.pk).endswith(", 1 new anomalies")
    assert tasks.tracking_bucket_done(lab.pk).endswith(", 0 new anomalies")


DETECT = anomalies.detect


# --- manage.py anomalies ------------------------------------------------------------------------


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("anomalies", *args, stdout=out)
    return out.getvalue()


def test_the_command_lists_a_persons_own_and_a_teams_for_those_who_see_its_spend(
    lab: Connection,
) -> None:
    held_days(lab, START, [*NORMAL, {TRAINING_16: 100 * HOUR}])
    anomalies.detect(lab, now=at(28))
    team = make_team("Vision", admins=[lab.owner])
    share_with(team, lab)
    viewer, member = make_user("finance"), make_user("member")
    Membership.objects.create(team=team, user=viewer, role=Membership.Role.VIEWER)
    Membership.objects.create(team=team, user=member, role=Membership.Role.MEMBER)

    own = _command("--user", "dana")
    assert own.startswith("2025-03-31  spike  training on 16 GB workers on Dana's lab: EUR 210.00")
    assert _command("--user", "finance") == "No anomalies.\n"  # not their connection
    (row,) = json.loads(_command("--user", "finance", "--team", "Vision", "--json"))
    assert row["connection"] == "Dana's lab" and row["metric"] == TRAINING_16
    assert row["day"] == "2025-03-31" and row["alerting"] is True and row["currency"] == "EUR"
    with pytest.raises(CommandError, match="not an admin or viewer"):
        _command("--user", "member", "--team", "Vision")
    Anomaly.objects.update(feedback=Anomaly.Feedback.EXPECTED)
    assert _command("--user", "dana").rstrip().endswith("(expected)")
    assert json.loads(_command("--user", "dana", "--json"))[0]["alerting"] is False


# --- False positives over the sandbox's own history ---------------------------------------------

ACCOUNTS = 20
FIRST = datetime(2025, 1, 1, tzinfo=UTC)
MONTHS = 6
WARM_UP = 92  # held days before the first judged month: a quarter, as tracking holds at least


def _sandbox_days(token: str, start: datetime, count: int) -> list[dict[str, float]]:
    account = account_id_for_token(token)
    days = []
    for n in range(count):
        day = start + timedelta(days=n)
        totals = account_totals(account, day, day + timedelta(days=1))
        days.append({OSAI_FIELD_TO_COLUMN[name]: value for name, value in totals.items()})
    return days


def test_the_sandboxs_seeded_history_makes_at_most_one_anomaly_per_account_and_month(
    book: Any,
) -> None:
    started = time.monotonic()
    owner = make_user("fp")
    start = FIRST - timedelta(days=WARM_UP)
    end = datetime(2025, 1 + MONTHS, 1, tzinfo=UTC)
    per_month: Counter[tuple[int, str]] = Counter()
    for n in range(ACCOUNTS):
        connection = make_connection(owner, f"Account {n}", token=f"osai-sandbox-fp-{n}")
        held_days(
            connection, start, _sandbox_days(f"osai-sandbox-fp-{n}", start, (end - start).days)
        )
        anomalies.detect(connection, now=end)
        for anomaly in Anomaly.objects.filter(connection=connection, day__gte=FIRST.date()):
            per_month[(n, f"{anomaly.day:%Y-%m}")] += 1
    total = sum(per_month.values())
    rate = total / (ACCOUNTS * MONTHS)
    figure("N3 anomalies in 20 sandbox accounts x 6 months (default settings)", total)
    figure("N3 anomalies per account-month, mean", round(rate, 3))
    figure("N3 anomalies per account-month, most", max(per_month.values(), default=0))
    print(
        f"\nN3: {total} anomalies over {ACCOUNTS} accounts x {MONTHS} months ({rate:.3f} per "
        f"account-month, at most {max(per_month.values(), default=0)}) in "
        f"{time.monotonic() - started:.1f} s"
    )
    assert max(per_month.values(), default=0) <= 1
