"""H6 and I2 as properties: arbitrary JSON (and bytes, and headers) into every OSAI parser.

Only the client's own errors (OsaiError) may escape; a well-formed finished report keeps
every total exactly as sent. The number of examples per parser is printed at the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osai import contract
from osai.client import OsaiClient
from osai.errors import OsaiError
from osai.parse import (
    OsaiUser,
    ReportCreated,
    ReportStatus,
    jwt_expiry,
    parse_json,
    parse_jwt_text,
    parse_osai_time,
    parse_report_created,
    parse_report_status,
    parse_retry_after,
    parse_user,
    redact_url,
)
from tests.support import figures

EXAMPLES = 300
PROPERTY = settings(
    max_examples=EXAMPLES,
    database=None,  # no .hypothesis/ directory in the tree
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BASE = "https://osai.test/api"
FILE_URL = "https://onestepai.storage.onestepcloud.pl/s3/r.json?Expires=1&Signature=CANARY-SIG"

# --- Strategies --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Values that sit on the edges of what the parsers check.
edge_values: st.SearchStrategy[Any] = st.sampled_from(
    [-1, 0, 1, 2, 16718, 2**63, 2**2000, -0.0, 1e308, 1.4956327299571348e18, True, False,
     None, "", "0", "-1", "NaN", "2023-02-10T14:33:33.7629037Z", "9999-99-99", FILE_URL,
     "https://[::1/x?y", [], {}]
)  # fmt: skip
field_values = edge_values | json_values
REPORT_FIELDS = [
    "id",
    "status",
    "creationTime",
    "path",
    "periodFrom",
    "periodTo",
    "read",
    *contract.TOTAL_FIELDS,
    *contract.FLAGS,
]
report_shaped = st.fixed_dictionaries(
    {}, optional={name: field_values for name in REPORT_FIELDS}
) | st.fixed_dictionaries(
    {"id": st.integers(min_value=1, max_value=10**6), "status": st.sampled_from([-1, 0, 1])},
    optional={name: field_values for name in REPORT_FIELDS[2:]},
)
user_shaped = st.fixed_dictionaries(
    {},
    optional={
        name: field_values for name in ("userName", "email", "name", "id", "apiToken", "teams")
    },
)
anything = json_values | report_shaped | user_shaped

exact_numbers = st.integers(min_value=-(2**63), max_value=2**63) | st.floats(
    allow_nan=False, allow_infinity=False
)
finished_reports = st.fixed_dictionaries(
    {
        "id": st.integers(min_value=1, max_value=2**62),
        "status": st.just(0),
        "creationTime": st.just("2023-02-10T14:33:33.7629037Z"),
        "path": st.just(FILE_URL),
        **{name: exact_numbers for name in contract.TOTAL_FIELDS},
    },
    optional={str(name): st.booleans() for name in contract.FLAGS},
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
bodies = (
    st.binary(max_size=200)
    | anything.map(lambda value: json.dumps(value).encode())
    | finished_reports.map(lambda value: json.dumps(value).encode())
)
statuses = st.sampled_from([200, 201, 204, 301, 302, 400, 401, 403, 404, 418, 429, 500, 502, 503])


def count_example(parser: str) -> None:
    figures.figure(f"H6 {parser} examples", 1)


def survives(name: str, parse: Callable[[Any], object], value: object) -> object | None:
    """Run one parser on one value: an OsaiError is fine, anything else fails the test."""
    count_example(name)
    try:
        return parse(value)
    except OsaiError:
        return None


# --- The parsers -------------------------------------------------------------------------------


@PROPERTY
@given(anything)
def test_parse_report_status_raises_only_osai_errors(data: object) -> None:
    result = survives("parse_report_status", parse_report_status, data)
    if isinstance(result, ReportStatus):
        assert result.status in (-1, 0, 1)
        assert (result.status == 0) == bool(result.totals)
        assert "path=" not in repr(result)  # the signed link is a secret
        assert isinstance(data, dict)
        if isinstance(data.get("path"), str):
            assert result.raw["path"] == redact_url(data["path"])


@PROPERTY
@given(anything)
def test_parse_report_created_raises_only_osai_errors(data: object) -> None:
    result = survives("parse_report_created", parse_report_created, data)
    if isinstance(result, ReportCreated):
        assert result.id > 0 and result.status in (-1, 0, 1)


@PROPERTY
@given(anything)
def test_parse_user_raises_only_osai_errors(data: object) -> None:
    result = survives("parse_user", parse_user, data)
    if isinstance(result, OsaiUser):
        assert isinstance(result.account_name, str) and len(result.account_name) <= 200


@PROPERTY
@given(st.text(max_size=80) | anything.map(json.dumps))
def test_parse_jwt_text_raises_only_osai_errors(text: str) -> None:
    result = survives("parse_jwt_text", parse_jwt_text, text)
    if result is not None:
        assert isinstance(result, str) and result and " " not in result


@PROPERTY
@given(bodies)
def test_parse_json_raises_only_osai_errors(body: bytes) -> None:
    result = survives("parse_json", parse_json, body)
    for number in _numbers_in(result):
        assert not (isinstance(number, float) and not math.isfinite(number))


@PROPERTY
@given(finished_reports)
def test_a_finished_report_keeps_every_total_exactly_through_json(data: dict[str, Any]) -> None:
    count_example("parse_report_status (finished, I2)")
    status = parse_report_status(parse_json(json.dumps(data).encode()))
    for name in contract.TOTAL_FIELDS:
        assert type(status.totals[name]) is type(data[name])
        assert repr(status.totals[name]) == repr(data[name])
        # ...and through what a JSONField stores.
        assert repr(json.loads(json.dumps(status.raw))[name]) == repr(data[name])


@PROPERTY
@given(field_values | header_text)
def test_the_small_parsers_never_raise(value: object) -> None:
    count_example("parse_osai_time / parse_retry_after / jwt_expiry / redact_url")
    parse_osai_time(value)
    seconds = parse_retry_after(value if isinstance(value, str) else None)
    assert seconds is None or 0 <= seconds <= 86_400
    if isinstance(value, str):
        jwt_expiry(value)
        redacted = redact_url(value)
        # A query string never survives redaction.
        assert "?" not in redacted or (
            redacted.count("?") == 1 and redacted.endswith("?<redacted>")
        )


# --- The whole client, with arbitrary answers --------------------------------------------------


@PROPERTY
@given(
    status=statuses,
    body=bodies,
    retry_after=st.none() | header_text,
    sign_in_status=statuses,
    sign_in_body=st.binary(max_size=60) | st.text(max_size=60).map(str.encode),
)
def test_get_report_raises_only_osai_errors_whatever_osai_answers(
    status: int, body: bytes, retry_after: str | None, sign_in_status: int, sign_in_body: bytes
) -> None:
    count_example("OsaiClient.get_report (arbitrary answers)")
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    client = OsaiClient(
        BASE, "token", jwt="old.jwt.x", timeout=5.0, get_retries=1, sleep=lambda _: None
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{BASE}/Reports/1", status=status, body=body, headers=headers)
        mock.add(responses.POST, f"{BASE}/Users/SignIn", status=sign_in_status, body=sign_in_body)
        try:
            result = client.get_report(1)
        except OsaiError:
            return
    assert isinstance(result, ReportStatus) and result.id == 1


@PROPERTY
@given(status=statuses, body=st.binary(max_size=300), content_length=st.booleans())
def test_download_raises_only_osai_errors_whatever_the_storage_answers(
    status: int, body: bytes, content_length: bool
) -> None:
    count_example("OsaiClient.download_report_file (arbitrary answers)")
    client = OsaiClient(
        BASE, "token", jwt="a.b.c", timeout=5.0, max_download_bytes=200, sleep=lambda _: None
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.GET,
            FILE_URL,
            status=status,
            body=body,
            auto_calculate_content_length=content_length,
        )
        try:
            content = client.download_report_file(FILE_URL)
        except OsaiError:
            return
    assert content == body and len(content) <= 200


links = (
    st.text(max_size=60)
    | st.builds(lambda tail: FILE_URL + tail, st.text(max_size=20))
    | st.builds(lambda head: head + FILE_URL.split("://", 1)[1], st.text(max_size=12))
    | st.from_regex(r"\Ahttps?://[a-z0-9.:\[\]@%-]{0,30}/[ -~]{0,20}\Z")
)


@PROPERTY
@given(links)
def test_download_raises_only_osai_errors_whatever_the_link(link: str) -> None:
    count_example("OsaiClient.download_report_file (arbitrary links)")
    client = OsaiClient(BASE, "token", jwt="a.b.c", timeout=5.0, sleep=lambda _: None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        try:
            client.download_report_file(link)
        except OsaiError as exc:
            assert "Signature" not in str(exc)
        else:
            raise AssertionError("nothing is registered: no link can succeed")
        for call in mock.calls:  # only allow-listed https links were even tried
            assert (call.request.url or "").startswith("https://onestepai.storage.onestepcloud.pl")


def _numbers_in(value: object) -> Iterator[int | float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers_in(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value
