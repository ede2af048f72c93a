"""The OSAI client (osai/client.py): every error path, H1-H5, T5, I2, no secrets.

Unit tests fake OSAI with `responses`; the timeout tests (H3) and a few wire-level checks
use tiny real servers on 127.0.0.1. Nothing sleeps for real except those servers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import pickle
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
import time_machine

from osai import contract, errors
from osai.client import (
    DEFAULT_DOWNLOAD_HOSTS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_RETRY_AFTER_CAP_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    OsaiClient,
)
from osai.parse import (
    format_osai_time,
    jwt_expiry,
    osai_flags,
    parse_osai_time,
    parse_retry_after,
    redact_url,
)
from tests.support import figures

BASE = "https://osai.test/api"
STORAGE_HOST = "onestepai.storage.onestepcloud.pl"
TOKEN = "osai-sandbox-CANARY-1234567890"
SIGNATURE = "CANARY-SIG-1R8DE2QHsA0pnwDKvD44d7od9Ng"
FILE_URL = (
    f"https://{STORAGE_HOST}/s3/d4ae333b/Reports/9c54caed.json"
    f"?AWSAccessKeyId=YXBw&Expires=1676041416&Signature={SIGNATURE}"
)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


JWT_EXP = datetime(2030, 1, 1, tzinfo=UTC)
JWT = (
    f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({'sub': '7', 'exp': int(JWT_EXP.timestamp())})}"
    ".osai-CANARY-JWT-signature"
)
NEW_JWT = f"{_b64({'alg': 'HS256'})}.{_b64({'sub': '7'})}.osai-CANARY-JWT-second"
CANARIES = (TOKEN, "CANARY-1234567890", JWT, "CANARY-JWT", SIGNATURE, "CANARY-SIG")

PERIOD_FROM = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD_TO = datetime(2026, 2, 1, tzinfo=UTC)
ALL_FLAGS = {
    "includeDatasets": True,
    "includeManipulations": True,
    "includeModels": True,
    "includeRentedDevices": True,
    "includePredictions": True,
}
CREATED = {"id": 16718, "creationTime": "2023-02-10T14:33:33.7629037Z", "status": -1}
# OSAI's own example (tests/osai/data/), byte for byte where the numbers matter (I2).
DONE_BODY = (
    '{"id": 16718, "path": "' + FILE_URL + '", '
    '"totalExistingImagesNum": 20356, "totalDeletedImagesNum": 94853, '
    '"totalImagesKBMin": 1.4956327299571348e+18, "totalModelsKBMin": 722292409625.8818, '
    '"totalManipulationSeconds": 11080535, "totalTrainingSeconds8GB": 72631905, '
    '"totalTrainingSeconds16GB": 0, "totalConversionSeconds8GB": 251529937, '
    '"totalConversionSeconds16GB": 0, "totalDeviceRentalSeconds": 2392872, '
    '"totalPredictionSeconds8GB": 146, "totalPredictionSeconds16GB": 0, '
    '"includeDatasets": true, "includeManipulations": true, "includeModels": true, '
    '"includeRentedDevices": true, "includePredictions": true, '
    '"creationTime": "2023-02-10T14:33:33.762903Z", "periodFrom": "2022-01-01T00:00:00Z", '
    '"periodTo": "2023-01-01T00:00:00Z", "read": false, "status": 0}'
)

# The slowest H3 failure, reported once the module is done (tests/support/figures.py).
SLOWEST_TIMEOUT_SECONDS: list[float] = [0.0]


@pytest.fixture(scope="module", autouse=True)
def _report_slowest_timeout() -> Iterator[None]:
    yield
    figures.figure("H3 slowest timeout failure (s)", round(SLOWEST_TIMEOUT_SECONDS[0], 2))


# --- Helpers -----------------------------------------------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def new_jwts() -> list[str]:
    return []


@pytest.fixture
def make_client(sleeps: list[float], new_jwts: list[str]) -> Callable[..., OsaiClient]:
    def make(**overrides: Any) -> OsaiClient:
        options: dict[str, Any] = {
            "jwt": JWT,
            "on_new_jwt": new_jwts.append,
            "timeout": 5.0,
            "download_hosts": [STORAGE_HOST],
            "retry_after_cap": 10.0,
            "max_download_bytes": 1_000_000,
            "sleep": sleeps.append,
        }
        options.update(overrides)
        base = options.pop("base_url", BASE)
        return OsaiClient(base, TOKEN, **options)

    return make


@pytest.fixture
def client(make_client: Callable[..., OsaiClient]) -> OsaiClient:
    """An OSAI client (in this module it stands in for pytest-django's test `client`)."""
    return make_client()


def calls_to(mock: responses.RequestsMock, method: str, url: str) -> list[responses.Call]:
    return [c for c in mock.calls if c.request.method == method and c.request.url == url]


def add_sign_in(mock: responses.RequestsMock, body: str = NEW_JWT, status: int = 200) -> None:
    mock.add(responses.POST, f"{BASE}/Users/SignIn", body=body, status=status)


def assert_no_canary(*texts: str) -> None:
    for text in texts:
        leaked = [canary for canary in CANARIES if canary in text]
        figures.figure("client canary checks", 1)
        figures.figure("canary hits", len(leaked))
        assert not leaked, f"a secret leaked: {leaked[0]!r} in {text!r}"


def everything_about(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


# --- Sign-in -----------------------------------------------------------------------------------


def test_sign_in_posts_the_token_as_a_json_string_and_reads_a_plain_text_jwt(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient], new_jwts: list[str]
) -> None:
    add_sign_in(rsps, body=NEW_JWT)
    client = make_client(jwt=None)

    assert client.sign_in() == NEW_JWT

    request = rsps.calls[0].request
    assert request.body == json.dumps(TOKEN).encode()
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers
    assert client.jwt == NEW_JWT
    assert new_jwts == [NEW_JWT]


@pytest.mark.parametrize(
    "body", [json.dumps(NEW_JWT), f"  {json.dumps(NEW_JWT)}\n", f"{NEW_JWT}\n"]
)
def test_sign_in_accepts_a_json_quoted_or_padded_jwt(
    rsps: responses.RequestsMock, client: OsaiClient, body: str
) -> None:
    add_sign_in(rsps, body=body)
    assert client.sign_in() == NEW_JWT


@pytest.mark.parametrize("status", [400, 401, 403])
def test_sign_in_refused_raises_a_permanent_auth_error(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient], status: int
) -> None:
    add_sign_in(rsps, body=f'{{"title": "bad token {TOKEN}"}}', status=status)
    client = make_client(jwt=None)

    with pytest.raises(errors.OsaiAuthError, match="OSAI refused the access token") as caught:
        client.sign_in()

    assert caught.value.permanent is True
    assert caught.value.status_code == status
    assert client.jwt is None
    assert_no_canary(everything_about(caught.value))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty body"),
        ("   \n", "empty body"),
        ('""', "empty body"),
        ("<!DOCTYPE html><html><body>Maintenance</body></html>", "HTML page"),
        ('{"token": "abc"}', "not a token"),
        ('"unterminated', "malformed JSON"),
        ("two words", "not a token"),
    ],
)
def test_sign_in_without_a_usable_token_raises_bad_response(
    rsps: responses.RequestsMock, client: OsaiClient, body: str, message: str
) -> None:
    add_sign_in(rsps, body=body)
    with pytest.raises(errors.OsaiBadResponse, match=message) as caught:
        client.sign_in()
    assert caught.value.permanent is False


def test_jwt_expiry_reads_the_unverified_exp_claim_and_never_raises() -> None:
    assert jwt_expiry(JWT) == JWT_EXP
    assert jwt_expiry(NEW_JWT) is None  # no exp
    for garbage in ["", "abc", "a.b.c", "a.!!!.c", f"x.{_b64({'exp': 'soon'})}.y", "x.bnVsbA.y"]:
        assert jwt_expiry(garbage) is None
    assert jwt_expiry(f"x.{_b64({'exp': 10**30})}.y") is None


# --- 401 handling (T5) -------------------------------------------------------------------------


def test_a_call_without_a_jwt_signs_in_first(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient]
) -> None:
    add_sign_in(rsps)
    rsps.add(responses.GET, f"{BASE}/Users", json={"userName": "ada@example.com", "id": 7})
    client = make_client(jwt=None)

    user = client.user_info()

    assert user.account_name == "ada@example.com"
    assert [c.request.method for c in rsps.calls] == ["POST", "GET"]
    assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {NEW_JWT}"


def test_a_401_signs_in_once_more_and_repeats_the_call_with_the_new_jwt(
    rsps: responses.RequestsMock, client: OsaiClient, new_jwts: list[str]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/16718", status=401)
    rsps.add(responses.GET, f"{BASE}/Reports/16718", json=CREATED)
    add_sign_in(rsps)

    status = client.get_report(16718)

    assert status.is_pending
    gets = calls_to(rsps, "GET", f"{BASE}/Reports/16718")
    assert [c.request.headers["Authorization"] for c in gets] == [
        f"Bearer {JWT}",
        f"Bearer {NEW_JWT}",
    ]
    assert len(calls_to(rsps, "POST", f"{BASE}/Users/SignIn")) == 1
    assert new_jwts == [NEW_JWT]


@pytest.mark.parametrize(("initial_jwt", "sign_ins"), [(JWT, 1), (None, 2)])
def test_a_second_401_raises_auth_error_after_exactly_one_re_sign_in(
    rsps: responses.RequestsMock,
    make_client: Callable[..., OsaiClient],
    initial_jwt: str | None,
    sign_ins: int,
) -> None:
    rsps.add(responses.GET, f"{BASE}/Users", status=401)
    add_sign_in(rsps)
    client = make_client(jwt=initial_jwt)

    with pytest.raises(
        errors.OsaiAuthError, match="no longer accepts this connection's access token"
    ):
        client.user_info()

    assert len(calls_to(rsps, "POST", f"{BASE}/Users/SignIn")) == sign_ins
    assert len(calls_to(rsps, "GET", f"{BASE}/Users")) == 2


def test_a_refused_re_sign_in_raises_auth_error(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    rsps.add(responses.GET, f"{BASE}/Users", status=401)
    add_sign_in(rsps, body="", status=401)

    with pytest.raises(errors.OsaiAuthError, match="OSAI refused the access token"):
        client.user_info()
    assert len(calls_to(rsps, "GET", f"{BASE}/Users")) == 1


def test_create_report_rejected_with_401_is_sent_again_after_signing_in(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    rsps.add(responses.POST, f"{BASE}/Reports", status=401)
    rsps.add(responses.POST, f"{BASE}/Reports", json=CREATED)
    add_sign_in(rsps)

    assert client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS).id == 16718
    assert len(calls_to(rsps, "POST", f"{BASE}/Reports")) == 2


# --- User info ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"userName": "ada", "email": "ada@example.com"}, "ada"),
        ({"email": "ada@example.com", "name": "Ada"}, "ada@example.com"),
        ({"name": "  Ada  "}, "Ada"),
        ({"id": 7}, "OSAI user 7"),
        ({"userName": None, "id": True}, ""),
    ],
)
def test_user_info_names_the_account_best_effort(
    rsps: responses.RequestsMock, client: OsaiClient, body: dict[str, Any], name: str
) -> None:
    rsps.add(responses.GET, f"{BASE}/Users", json=body)
    assert client.user_info().account_name == name


def test_user_info_redacts_secret_looking_fields(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    body = {"userName": "ada", "apiTokens": [TOKEN], "settings": {"password": "x", "theme": "dark"}}
    rsps.add(responses.GET, f"{BASE}/Users", json=body)

    raw = client.user_info().raw

    assert raw == {
        "userName": "ada",
        "apiTokens": "<redacted>",
        "settings": {"password": "<redacted>", "theme": "dark"},
    }


# --- Create report -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        {flag: flag != contract.Flag.MODELS for flag in contract.FLAGS},  # enum keys
        {
            "includeDatasets": True,
            "includeManipulations": True,
            "includeModels": False,
            "includeRentedDevices": True,
            "includePredictions": True,
        },
    ],
)
def test_create_report_sends_utc_periods_with_z_and_the_five_flags(
    rsps: responses.RequestsMock, client: OsaiClient, flags: dict[str, bool]
) -> None:
    rsps.add(responses.POST, f"{BASE}/Reports", json=CREATED)
    local = datetime(2026, 2, 1, 1, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Warsaw")
    )

    created = client.create_report(PERIOD_FROM, local, flags)

    request = rsps.calls[0].request
    assert json.loads(request.body or b"") == {
        "periodFrom": "2026-01-01T00:00:00.000Z",
        "periodTo": "2026-02-01T01:00:00.000Z",
        "includeDatasets": True,
        "includeManipulations": True,
        "includeModels": False,
        "includeRentedDevices": True,
        "includePredictions": True,
    }
    assert request.headers["Authorization"] == f"Bearer {JWT}"
    assert created.id == 16718
    assert created.status == -1
    # I2: OSAI's 7 fractional digits parse, truncated to microseconds; the raw text is kept.
    assert created.creation_time == datetime(2023, 2, 10, 14, 33, 33, 762903, tzinfo=UTC)
    assert created.creation_time_raw == "2023-02-10T14:33:33.7629037Z"


@pytest.mark.parametrize(
    ("period_from", "flags", "error"),
    [
        (datetime(2026, 1, 1), ALL_FLAGS, ValueError),  # naive: ambiguous
        (PERIOD_FROM, {k: v for k, v in ALL_FLAGS.items() if k != "includeModels"}, ValueError),
        (PERIOD_FROM, ALL_FLAGS | {"includeEverything": True}, ValueError),
        (PERIOD_FROM, ALL_FLAGS | {"includeModels": 1}, TypeError),
        (PERIOD_FROM, ALL_FLAGS | {"include_models": True}, ValueError),  # the app's name
    ],
)
def test_create_report_with_bad_arguments_raises_before_sending(
    rsps: responses.RequestsMock,
    client: OsaiClient,
    period_from: datetime,
    flags: dict[str, Any],
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        client.create_report(period_from, PERIOD_TO, flags)
    assert len(rsps.calls) == 0


def test_create_report_400_raises_a_permanent_request_error_with_osai_s_reason(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    problem = {"title": "One or more validation errors occurred.", "status": 400}
    rsps.add(responses.POST, f"{BASE}/Reports", json=problem, status=400)

    with pytest.raises(errors.OsaiRequestError) as caught:
        client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)

    assert caught.value.permanent is True
    assert caught.value.status_code == 400
    assert str(caught.value) == (
        "OSAI refused the request (HTTP 400): One or more validation errors occurred."
    )
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (500, {}, errors.OsaiUnavailable),
        (502, {}, errors.OsaiUnavailable),
        (503, {}, errors.OsaiUnavailable),
        (504, {}, errors.OsaiUnavailable),
        (429, {"Retry-After": "1"}, errors.OsaiRateLimited),
        (503, {"Retry-After": "1"}, errors.OsaiRateLimited),
    ],
)
def test_create_report_is_never_retried_on_5xx_or_429(
    rsps: responses.RequestsMock,
    client: OsaiClient,
    sleeps: list[float],
    status: int,
    headers: dict[str, str],
    error: type[errors.OsaiError],
) -> None:
    rsps.add(responses.POST, f"{BASE}/Reports", status=status, headers=headers)
    rsps.add(responses.POST, f"{BASE}/Reports", json=CREATED)

    with pytest.raises(error) as caught:
        client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)

    assert type(caught.value) is error
    assert caught.value.permanent is False
    assert len(rsps.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            requests.ReadTimeout("read timed out"),
            "OSAI did not answer within 5 s; whether OSAI created the report is unknown",
        ),
        (
            requests.ConnectionError("Connection aborted: RemoteDisconnected"),
            "The connection to OSAI broke before the answer was complete; "
            "whether OSAI created the report is unknown",
        ),
        (requests.ConnectTimeout("connect timed out"), "OSAI could not be reached within 5 s"),
    ],
)
def test_create_report_is_never_retried_on_connection_errors_and_says_what_is_known(
    rsps: responses.RequestsMock,
    client: OsaiClient,
    sleeps: list[float],
    failure: Exception,
    message: str,
) -> None:
    rsps.add(responses.POST, f"{BASE}/Reports", body=failure)

    with pytest.raises(errors.OsaiUnavailable) as caught:
        client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)

    assert str(caught.value) == message
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_create_report_tolerates_an_odd_status_once_it_has_an_id(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    rsps.add(responses.POST, f"{BASE}/Reports", json={"id": 5, "status": "queued"})
    created = client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)
    assert (created.id, created.status, created.creation_time, created.creation_time_raw) == (
        5,
        -1,
        None,
        "",
    )


@pytest.mark.parametrize("body", [{}, {"id": "16718"}, {"id": True}, {"id": 0}, [CREATED]])
def test_create_report_without_a_usable_id_raises_bad_response(
    rsps: responses.RequestsMock, client: OsaiClient, body: object
) -> None:
    rsps.add(responses.POST, f"{BASE}/Reports", json=body)
    with pytest.raises(errors.OsaiBadResponse):
        client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)


# --- Get report --------------------------------------------------------------------------------


def test_get_report_done_keeps_numbers_exactly_as_received(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/16718", body=DONE_BODY)

    status = client.get_report(16718)

    assert status.is_done and not status.is_pending and not status.is_error
    assert set(status.totals) == set(contract.TOTAL_FIELDS)
    # I2: 1.4956327299571348e+18 round-trips; ints stay ints.
    assert status.totals["totalImagesKBMin"] == 1.4956327299571348e18
    assert repr(status.totals["totalImagesKBMin"]) == "1.4956327299571348e+18"
    assert repr(status.totals["totalModelsKBMin"]) == "722292409625.8818"
    assert status.totals["totalExistingImagesNum"] == 20356
    assert type(status.totals["totalExistingImagesNum"]) is int
    stored = json.loads(json.dumps(status.raw))  # what a JSONField keeps
    assert stored["totalImagesKBMin"] == status.totals["totalImagesKBMin"]
    assert status.flags == {
        "includeDatasets": True,
        "includeManipulations": True,
        "includeModels": True,
        "includeRentedDevices": True,
        "includePredictions": True,
    }
    assert (status.period_from, status.period_to, status.read) == (
        "2022-01-01T00:00:00Z",
        "2023-01-01T00:00:00Z",
        False,
    )
    assert status.creation_time == datetime(2023, 2, 10, 14, 33, 33, 762903, tzinfo=UTC)


def test_the_signed_path_stays_out_of_repr_and_raw(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/16718", body=DONE_BODY)

    status = client.get_report(16718)

    assert status.path == FILE_URL
    assert (
        status.raw["path"] == f"https://{STORAGE_HOST}/s3/d4ae333b/Reports/9c54caed.json?<redacted>"
    )
    assert_no_canary(repr(status), str(status), json.dumps(status.raw))


@pytest.mark.parametrize("status_value", [-1, 1])
def test_a_pending_or_failed_report_has_no_totals(
    rsps: responses.RequestsMock, client: OsaiClient, status_value: int
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/9", json={"id": 9, "status": status_value})
    status = client.get_report(9)
    assert (status.totals, status.path, status.is_error) == ({}, None, status_value == 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": 9}, "no status"),
        ({"id": 9, "status": None}, "no status"),
        ({"id": 9, "status": 2}, r"unknown report status \(2\)"),
        ({"id": 9, "status": -2}, "unknown report status"),
        ({"id": 9, "status": 10**100}, r"unknown report status \(out of range\)"),
        ({"id": 9, "status": "0"}, "not a whole number"),
        ({"id": 9, "status": True}, "not a whole number"),
        ({"id": 9, "status": 0.0}, "not a whole number"),
        ({"status": 0}, "no usable report id"),
        ({"id": 10, "status": -1}, "report 10 when asked for report 9"),
        ([{"id": 9, "status": 0}], "not a JSON object"),
        (17, "not a JSON object"),
    ],
)
def test_an_unknown_or_missing_status_raises_bad_response(
    rsps: responses.RequestsMock, client: OsaiClient, body: object, message: str
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/9", json=body)
    with pytest.raises(errors.OsaiBadResponse, match=message) as caught:
        client.get_report(9)
    assert caught.value.permanent is False


@pytest.mark.parametrize("value", ["missing", None, "11080535", True, [1], {"v": 1}])
def test_a_finished_report_with_a_missing_or_non_number_total_raises_bad_response(
    rsps: responses.RequestsMock, client: OsaiClient, value: object
) -> None:
    body = json.loads(DONE_BODY)
    if value == "missing":
        del body["totalManipulationSeconds"]
    else:
        body["totalManipulationSeconds"] = value
    rsps.add(responses.GET, f"{BASE}/Reports/16718", json=body)

    with pytest.raises(errors.OsaiBadResponse, match="totalManipulationSeconds"):
        client.get_report(16718)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("<html><body>Bad gateway</body></html>", "text/html", "HTML page instead of JSON"),
        ('{"id": 9, "status": 0', "application/json", "not JSON"),
        ('{"id": 9, "status": NaN}', "application/json", "not JSON"),
        ('{"id": 9, "status": -1, "x": 1e999}', "application/json", "not JSON"),
        ("", "application/json", "empty body"),
        (b"\xff\xfe{}", "application/json", "not JSON"),
    ],
)
def test_a_non_json_or_html_body_raises_bad_response_naming_the_problem(
    rsps: responses.RequestsMock,
    client: OsaiClient,
    body: str | bytes,
    content_type: str,
    message: str,
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/9", body=body, content_type=content_type)
    with pytest.raises(errors.OsaiBadResponse, match=message) as caught:
        client.get_report(9)
    assert "(HTTP 200)" in str(caught.value)


def test_a_huge_api_body_is_refused(rsps: responses.RequestsMock, client: OsaiClient) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/9", body=b" " * (2 * 1024 * 1024 + 1))
    with pytest.raises(errors.OsaiBadResponse, match="larger than 2 MB"):
        client.get_report(9)


@pytest.mark.parametrize(
    ("status", "error"), [(404, errors.OsaiRequestError), (409, errors.OsaiRequestError)]
)
def test_other_4xx_answers_raise_permanent_request_errors_without_retrying(
    rsps: responses.RequestsMock, client: OsaiClient, status: int, error: type[errors.OsaiError]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/9", status=status)
    with pytest.raises(error) as caught:
        client.get_report(9)
    assert caught.value.permanent is True
    assert len(rsps.calls) == 1


def test_a_502_html_page_is_named_after_retries(
    rsps: responses.RequestsMock, client: OsaiClient, sleeps: list[float]
) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/Reports/9",
        body="<html>Bad Gateway</html>",
        status=502,
        content_type="text/html",
    )
    with pytest.raises(errors.OsaiUnavailable) as caught:
        client.get_report(9)
    assert str(caught.value) == "OSAI answered with an HTML page instead of JSON (HTTP 502)"
    assert len(rsps.calls) == 3
    assert sleeps == [0.5, 1.0]


# --- Retries (H4) ------------------------------------------------------------------------------


def test_a_get_is_retried_after_a_503_then_succeeds(
    rsps: responses.RequestsMock, client: OsaiClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Reports/9", status=503)
    rsps.add(responses.GET, f"{BASE}/Reports/9", json={"id": 9, "status": -1})

    assert client.get_report(9).is_pending
    assert len(rsps.calls) == 2
    assert sleeps == [0.5]


def test_get_retries_are_bounded(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient], sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Users", body=requests.ConnectionError("reset"))
    client = make_client(get_retries=3)

    with pytest.raises(errors.OsaiUnavailable, match="connection to OSAI broke"):
        client.user_info()
    assert len(rsps.calls) == 4
    assert sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("retry_after", "expected_sleep"),
    [
        ("3", 3.0),
        (" 0 ", None),  # "now": retried at once (a zero wait is no wait)
        ("Thu, 01 Jan 2026 00:00:04 GMT", 4.0),
        ("Wed, 31 Dec 2025 23:00:00 GMT", None),  # in the past
        ("soon", 0.5),  # malformed: our own back-off
        ("1.5", 0.5),  # not an integer: malformed too
        ("", 0.5),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_within_the_cap_is_waited_for(
    rsps: responses.RequestsMock,
    client: OsaiClient,
    sleeps: list[float],
    status: int,
    retry_after: str,
    expected_sleep: float | None,
) -> None:
    figures.figure("H4 Retry-After scenarios", 1)
    rsps.add(
        responses.GET, f"{BASE}/Reports/9", status=status, headers={"Retry-After": retry_after}
    )
    rsps.add(responses.GET, f"{BASE}/Reports/9", json={"id": 9, "status": -1})

    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        assert client.get_report(9).is_pending

    assert sleeps == ([0.0] if expected_sleep is None else [expected_sleep])
    assert len(rsps.calls) == 2


@pytest.mark.parametrize(
    ("retry_after", "parsed"),
    [
        ("3600", 3600.0),
        ("11", 11.0),
        ("99999999999999999999999", 86400.0),
        ("Fri, 02 Jan 2026 00:00:00 GMT", 86400.0),
        ("Thu, 01 Jan 2026 00:05:00 GMT", 300.0),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_beyond_the_cap_raises_rate_limited_at_once(
    rsps: responses.RequestsMock,
    client: OsaiClient,
    sleeps: list[float],
    status: int,
    retry_after: str,
    parsed: float,
) -> None:
    figures.figure("H4 Retry-After scenarios", 1)
    rsps.add(
        responses.GET, f"{BASE}/Reports/9", status=status, headers={"Retry-After": retry_after}
    )

    with (
        time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False),
        pytest.raises(errors.OsaiRateLimited) as caught,
    ):
        client.get_report(9)

    assert caught.value.retry_after == parsed
    assert caught.value.status_code == status
    assert caught.value.permanent is False
    assert isinstance(caught.value, errors.OsaiUnavailable)
    assert f"rate limiting requests (HTTP {status}); retry after {parsed:g} s" in str(caught.value)
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_retry_after_that_does_not_fit_the_deadline_raises_rate_limited(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient], sleeps: list[float]
) -> None:
    figures.figure("H4 Retry-After scenarios", 1)
    rsps.add(responses.GET, f"{BASE}/Reports/9", status=429, headers={"Retry-After": "5"})
    client = make_client(timeout=2.0)

    with pytest.raises(errors.OsaiRateLimited) as caught:
        client.get_report(9)
    assert caught.value.retry_after == 5.0
    assert sleeps == []


def test_a_429_without_retry_after_raises_rate_limited_after_the_retries(
    rsps: responses.RequestsMock, client: OsaiClient, sleeps: list[float]
) -> None:
    figures.figure("H4 Retry-After scenarios", 1)
    rsps.add(responses.GET, f"{BASE}/Reports/9", status=429)

    with pytest.raises(errors.OsaiRateLimited) as caught:
        client.get_report(9)
    assert caught.value.retry_after is None
    assert str(caught.value) == "OSAI is rate limiting requests (HTTP 429)"
    assert len(rsps.calls) == 3
    assert sleeps == [0.5, 1.0]


def test_parse_retry_after_handles_seconds_dates_and_garbage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 -0000", now=now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 1990 00:00:00 GMT", now=now) == 0.0
    for garbage in [None, "", "-1", "1e3", "30 s", "Thu, 99 Foo", "\x00", "٣٠"]:
        assert parse_retry_after(garbage, now=now) is None


# --- Redirects (H1) ----------------------------------------------------------------------------

ELSEWHERE = "https://elsewhere.example/steal"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    "call", ["sign_in", "user_info", "create_report", "get_report", "download"]
)
def test_redirects_are_never_followed(
    rsps: responses.RequestsMock, client: OsaiClient, status: int, call: str
) -> None:
    figures.figure("H1 redirect scenarios", 1)
    location = {"Location": ELSEWHERE}
    rsps.add(responses.POST, f"{BASE}/Users/SignIn", status=status, headers=location)
    rsps.add(responses.GET, f"{BASE}/Users", status=status, headers=location)
    rsps.add(responses.POST, f"{BASE}/Reports", status=status, headers=location)
    rsps.add(responses.GET, f"{BASE}/Reports/9", status=status, headers=location)
    rsps.add(responses.GET, FILE_URL, status=status, headers=location)
    target = rsps.add(responses.GET, ELSEWHERE, body="stolen")
    target_post = rsps.add(responses.POST, ELSEWHERE, body="stolen")
    actions: dict[str, Callable[[], object]] = {
        "sign_in": client.sign_in,
        "user_info": client.user_info,
        "create_report": lambda: client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS),
        "get_report": lambda: client.get_report(9),
        "download": lambda: client.download_report_file(FILE_URL),
    }

    with pytest.raises(errors.OsaiRedirectRefused, match=f"redirect \\(HTTP {status}\\)") as caught:
        actions[call]()

    figures.figure(
        "H1 requests reaching a redirect target", target.call_count + target_post.call_count
    )
    assert target.call_count == target_post.call_count == 0
    assert len(rsps.calls) == 1
    assert caught.value.permanent is True
    assert caught.value.status_code == status


# --- Download (H2, H5) -------------------------------------------------------------------------


def test_the_download_carries_no_authorization_header_cookie_or_token(
    rsps: responses.RequestsMock, client: OsaiClient
) -> None:
    content = b'{"usage": [1, 2, 3]}'
    rsps.add(responses.GET, FILE_URL, body=content, headers={"Set-Cookie": "s=1; Path=/"})
    rsps.add(responses.GET, f"{BASE}/Users", json={"userName": "ada"})
    client.user_info()  # the session has now talked to OSAI with the JWT

    assert client.download_report_file(FILE_URL) == content
    assert client.download_report_file(FILE_URL) == content

    for call in calls_to(rsps, "GET", FILE_URL):
        headers = call.request.headers
        assert "Authorization" not in headers
        assert "Cookie" not in headers
        assert_no_canary(*[f"{k}: {v}" for k, v in headers.items() if k != "Host"])
    assert len(calls_to(rsps, "GET", FILE_URL)) == 2


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        (FILE_URL.replace("https://", "http://"), "it is not https"),
        (FILE_URL.replace(STORAGE_HOST, "evil.example"), "evil.example is not an allowed"),
        (FILE_URL.replace(STORAGE_HOST, f"{STORAGE_HOST}.evil.example"), "is not an allowed"),
        (FILE_URL.replace(STORAGE_HOST, f"user:pw@{STORAGE_HOST}"), "carries credentials"),
        (FILE_URL.replace("https://", "ftp://"), "not an http"),
        ("/s3/relative.json?Signature=x", "not an http"),
        ("", "empty"),
        ("https://[::1/x?Signature=x", "not a valid URL"),
        ("http://osai.test/api/file.json?Signature=x", "it is not https"),  # base host, no sandbox
    ],
)
def test_a_link_that_is_not_allowed_is_refused_without_connecting(
    rsps: responses.RequestsMock, client: OsaiClient, link: str, reason: str
) -> None:
    with pytest.raises(errors.OsaiLinkError, match=reason) as caught:
        client.download_report_file(link)
    assert len(rsps.calls) == 0
    assert caught.value.permanent is True
    assert_no_canary(everything_about(caught.value))


def test_sandbox_mode_allows_http_and_https_to_the_base_host_and_port_only(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient]
) -> None:
    client = make_client(base_url="http://127.0.0.1:8765/api", sandbox=True)
    for link in [
        "http://127.0.0.1:8765/files/r.json?Signature=x",
        "https://127.0.0.1:8765/files/r.json?Signature=x",
    ]:
        rsps.add(responses.GET, link, body=b"{}")
        assert client.download_report_file(link) == b"{}"
    for link in ["http://127.0.0.1:9999/files/r.json", "http://localhost:8765/files/r.json"]:
        with pytest.raises(errors.OsaiLinkError):
            client.download_report_file(link)
    rsps.add(responses.GET, FILE_URL, body=b"[]")  # the allow-list still applies
    assert client.download_report_file(FILE_URL) == b"[]"
    assert len(rsps.calls) == 3


def test_an_expired_link_403_raises_link_error_without_retrying(
    rsps: responses.RequestsMock, client: OsaiClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, FILE_URL, status=403, body="<Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(errors.OsaiLinkError, match="The report file link has expired") as caught:
        client.download_report_file(FILE_URL)
    assert caught.value.permanent is True
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_a_download_is_retried_after_a_503(
    rsps: responses.RequestsMock, client: OsaiClient, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, FILE_URL, status=503)
    rsps.add(responses.GET, FILE_URL, body=b"{}")
    assert client.download_report_file(FILE_URL) == b"{}"
    assert sleeps == [0.5]


@pytest.mark.parametrize("declared", [True, False])
def test_a_file_beyond_the_size_cap_is_refused(
    rsps: responses.RequestsMock,
    make_client: Callable[..., OsaiClient],
    declared: bool,
) -> None:
    client = make_client(max_download_bytes=1024 * 1024)
    body = b"x" * (1024 * 1024 + 1)
    if declared:
        rsps.add(responses.GET, FILE_URL, body=body)
    else:
        rsps.add(responses.GET, FILE_URL, body=body, auto_calculate_content_length=False)
    with pytest.raises(errors.OsaiLinkError, match="larger than 1 MB") as caught:
        client.download_report_file(FILE_URL)
    assert caught.value.permanent is True


def test_a_file_at_the_size_cap_is_accepted(
    rsps: responses.RequestsMock, make_client: Callable[..., OsaiClient]
) -> None:
    client = make_client(max_download_bytes=1000)
    rsps.add(responses.GET, FILE_URL, body=b"x" * 1000)
    assert len(client.download_report_file(FILE_URL)) == 1000


# --- Secrets -----------------------------------------------------------------------------------


def test_no_secret_reaches_messages_reprs_tracebacks_or_logs(
    rsps: responses.RequestsMock,
    make_client: Callable[..., OsaiClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"token {TOKEN} jwt {JWT} link {FILE_URL}"
    client = make_client(get_retries=0)
    failures: list[errors.OsaiError] = []

    def attempt(action: Callable[[], object]) -> None:
        try:
            action()
        except errors.OsaiError as exc:
            failures.append(exc)

    rsps.add(responses.POST, f"{BASE}/Users/SignIn", json={"title": echo}, status=401)
    attempt(client.sign_in)
    rsps.add(responses.POST, f"{BASE}/Reports", json={"title": echo, "detail": echo}, status=400)
    attempt(lambda: client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS))
    rsps.add(responses.GET, f"{BASE}/Reports/1", json={"message": echo}, status=418)
    attempt(lambda: client.get_report(1))
    rsps.add(responses.GET, f"{BASE}/Reports/2", body=f"<html>{echo}</html>", status=502)
    attempt(lambda: client.get_report(2))
    rsps.add(responses.GET, f"{BASE}/Reports/3", body=f"{{{echo}")
    attempt(lambda: client.get_report(3))
    rsps.add(
        responses.GET, FILE_URL, body=requests.ConnectionError(f"Max retries exceeded: {FILE_URL}")
    )
    attempt(lambda: client.download_report_file(FILE_URL))
    rsps.replace(responses.GET, FILE_URL, body=requests.ReadTimeout(f"timed out: {FILE_URL}"))
    attempt(lambda: client.download_report_file(FILE_URL))
    rsps.replace(responses.GET, FILE_URL, status=403, body=echo)
    attempt(lambda: client.download_report_file(FILE_URL))
    rsps.replace(responses.GET, FILE_URL, status=302, headers={"Location": FILE_URL})
    attempt(lambda: client.download_report_file(FILE_URL))
    attempt(lambda: client.download_report_file(FILE_URL.replace("https", "http")))
    attempt(lambda: client.download_report_file(FILE_URL.replace(STORAGE_HOST, "evil.example")))

    assert len(failures) == 11
    for exc in failures:
        assert_no_canary(everything_about(exc))
        assert exc.__context__ is None or not isinstance(exc.__context__, requests.RequestException)
    assert_no_canary(caplog.text, *[str(r.args) for r in caplog.records])
    assert "OSAI POST /Reports -> HTTP 400" in caplog.text  # what is logged: route and status


def test_client_repr_shows_no_secret(make_client: Callable[..., OsaiClient]) -> None:
    assert_no_canary(repr(make_client()))


# --- Errors and helpers ------------------------------------------------------------------------


def test_errors_keep_their_attributes_through_pickle() -> None:
    error = errors.OsaiRateLimited("slow down", retry_after=30.0, status_code=429)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (django-q pickles results)
    assert (type(copy), copy.message, copy.retry_after, copy.status_code, copy.permanent) == (
        errors.OsaiRateLimited,
        "slow down",
        30.0,
        429,
        False,
    )
    assert errors.OsaiAuthError("x").permanent is True
    assert errors.OsaiRequestError("x").permanent is True
    assert errors.OsaiLinkError("x").permanent is True
    assert errors.OsaiRedirectRefused("x").permanent is True
    assert errors.OsaiUnavailable("x").permanent is False
    assert errors.OsaiBadResponse("x").permanent is False
    assert errors.OsaiBadResponse("x", permanent=True).permanent is True


def test_redact_url_keeps_scheme_host_and_path_only() -> None:
    assert redact_url(FILE_URL) == (
        f"https://{STORAGE_HOST}/s3/d4ae333b/Reports/9c54caed.json?<redacted>"
    )
    assert redact_url("https://u:p@h.example:8443/a#frag") == "https://h.example:8443/a"
    assert redact_url("http://[::1]:8765/f?x=1") == "http://[::1]:8765/f?<redacted>"
    assert redact_url("https://[::1/x?Signature=s") == "<unparseable URL>"


def test_osai_times_parse_seven_digits_and_format_with_z() -> None:
    assert parse_osai_time("2023-02-10T14:33:33.7629037Z") == datetime(
        2023, 2, 10, 14, 33, 33, 762903, tzinfo=UTC
    )
    assert parse_osai_time("2023-01-01T00:00:00.000") == datetime(2023, 1, 1, tzinfo=UTC)
    assert parse_osai_time("2023-02-10T16:33:33+02:00") == datetime(
        2023, 2, 10, 14, 33, 33, tzinfo=UTC
    )
    for garbage in [None, 17, "", "yesterday", "2023-13-01T00:00:00Z"]:
        assert parse_osai_time(garbage) is None
    moment = datetime(2026, 1, 1, 12, 30, 15, 123999, tzinfo=UTC)
    assert format_osai_time(moment) == "2026-01-01T12:30:15.123Z"
    assert format_osai_time(moment + timedelta(days=-365 * 2000)).endswith("Z")


def test_osai_flags_come_in_request_order_under_osai_names() -> None:
    expected = {
        "includeDatasets": True,
        "includeManipulations": True,
        "includeModels": False,
        "includeRentedDevices": True,
        "includePredictions": True,
    }
    backwards = dict(reversed(list(expected.items())))
    assert list(osai_flags(backwards).items()) == list(expected.items())
    assert osai_flags({contract.Flag(k): v for k, v in expected.items()}) == expected
    with pytest.raises(ValueError, match="include_models"):
        osai_flags({**expected, "include_models": True})


def test_defaults_are_the_modules_own() -> None:
    client = OsaiClient(BASE + "/", TOKEN)

    assert (client.base_url, client.timeout, client.retry_after_cap) == (
        BASE,
        DEFAULT_TIMEOUT_SECONDS,
        DEFAULT_RETRY_AFTER_CAP_SECONDS,
    )
    assert (client.download_hosts, client.max_download_bytes) == (
        frozenset(DEFAULT_DOWNLOAD_HOSTS),
        DEFAULT_MAX_DOWNLOAD_BYTES,
    )
    assert (client.jwt, client.sandbox, client.get_retries) == (None, False, 2)


# --- Real sockets: deadlines (H3) and the wire -------------------------------------------------


class RawServer:
    """A TCP server on 127.0.0.1 that runs `handle(server, conn)` per connection, in threads."""

    def __init__(self, handle: Callable[[RawServer, socket.socket], None]) -> None:
        self.handle = handle
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/api"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):  # the client hung up, as these tests provoke
                self.handle(self, conn)

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                while len(body) < length:
                    body += conn.recv(4096)
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        self._thread.join(timeout=2)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[RawServer, socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[RawServer, socket.socket], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def never_answers(server: RawServer, conn: socket.socket) -> None:
    server.read_request(conn)
    server.stop.wait(20)


def trickles_the_body(server: RawServer, conn: socket.socket) -> None:
    server.read_request(conn)
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    conn.sendall(b'{"id": 1, "status": -1, "pad": "')
    while not server.stop.wait(0.2):
        conn.sendall(b"x")


def trickles_the_status_line(server: RawServer, conn: socket.socket) -> None:
    server.read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
        if server.stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def answers(
    status_line: str, body: bytes, *headers: str
) -> Callable[[RawServer, socket.socket], None]:
    def handle(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        head = [f"HTTP/1.1 {status_line}", f"Content-Length: {len(body)}", "Connection: close"]
        conn.sendall(("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body)

    return handle


def timed_failure(action: Callable[[], object]) -> tuple[errors.OsaiError, float]:
    started = time.monotonic()
    with pytest.raises(errors.OsaiError) as caught:
        action()
    elapsed = time.monotonic() - started
    figures.figure("H3 timeout scenarios", 1)
    SLOWEST_TIMEOUT_SECONDS[0] = max(SLOWEST_TIMEOUT_SECONDS[0], elapsed)
    return caught.value, elapsed


@pytest.mark.parametrize("handler", [never_answers, trickles_the_body, trickles_the_status_line])
def test_a_silent_or_trickling_server_fails_within_the_deadline(
    serve: Callable[..., RawServer], handler: Callable[[RawServer, socket.socket], None]
) -> None:
    server = serve(handler)
    client = OsaiClient(server.base_url, TOKEN, jwt=JWT, timeout=1.0, sleep=time.sleep)

    error, elapsed = timed_failure(lambda: client.get_report(1))

    assert type(error) is errors.OsaiUnavailable
    assert str(error) == "OSAI did not answer within 1 s"
    assert elapsed < 2.0
    assert server.connections == 1  # no retry once the deadline has passed


@pytest.mark.parametrize("handler", [never_answers, trickles_the_status_line])
def test_a_create_report_that_times_out_says_the_outcome_is_unknown(
    serve: Callable[..., RawServer], handler: Callable[[RawServer, socket.socket], None]
) -> None:
    server = serve(handler)
    client = OsaiClient(server.base_url, TOKEN, jwt=JWT, timeout=1.0)

    error, elapsed = timed_failure(lambda: client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS))

    assert str(error) == (
        "OSAI did not answer within 1 s; whether OSAI created the report is unknown"
    )
    assert elapsed < 2.0


def test_a_sign_in_that_never_answers_fails_within_the_deadline(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(never_answers)
    client = OsaiClient(server.base_url, TOKEN, timeout=1.0)

    error, elapsed = timed_failure(client.user_info)

    assert isinstance(error, errors.OsaiUnavailable)
    assert elapsed < 2.0


def test_a_trickled_download_fails_within_the_deadline_without_leaking_the_link(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(trickles_the_body)
    client = OsaiClient(server.base_url, TOKEN, jwt=JWT, timeout=1.0, sandbox=True)
    link = f"http://127.0.0.1:{server.port}/files/r.json?Signature={SIGNATURE}"

    error, elapsed = timed_failure(lambda: client.download_report_file(link))

    assert str(error) == "The report file storage did not answer within 1 s"
    assert elapsed < 2.0
    assert_no_canary(everything_about(error), caplog.text)


def test_the_download_on_the_wire_has_no_authorization_and_urllib3_logs_no_signature(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # settings keep urllib3 at WARNING; lower it here to prove DEBUG lines are redacted too.
    caplog.set_level(logging.DEBUG, logger="urllib3")
    server = serve(answers("200 OK", b'{"usage": []}', "Content-Type: application/json"))
    client = OsaiClient(server.base_url, TOKEN, jwt=JWT, timeout=2.0, sandbox=True)
    link = f"http://127.0.0.1:{server.port}/files/r.json?Signature={SIGNATURE}"

    assert client.download_report_file(link) == b'{"usage": []}'

    request = server.requests[0].decode()
    assert request.startswith(f"GET /files/r.json?Signature={SIGNATURE} HTTP/1.1\r\n")
    assert "authorization" not in request.lower()
    assert "cookie" not in request.lower()
    assert_no_canary(request.replace(SIGNATURE, ""))  # the link is its own credential
    assert "urllib3.connectionpool" in {r.name for r in caplog.records}
    assert_no_canary(caplog.text)


def test_a_real_redirect_sends_the_target_nothing(serve: Callable[..., RawServer]) -> None:
    target = serve(answers("200 OK", b"{}"))
    osai = serve(answers("307 Temporary Redirect", b"", f"Location: {target.base_url}/Reports"))
    client = OsaiClient(osai.base_url, TOKEN, jwt=JWT, timeout=2.0)

    with pytest.raises(errors.OsaiRedirectRefused):
        client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)

    figures.figure("H1 redirect scenarios", 1)
    figures.figure("H1 requests reaching a redirect target", target.connections)
    assert target.connections == 0
    assert osai.connections == 1


def test_a_refused_connection_is_retried_for_gets_and_known_unsent_for_posts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    sleeps: list[float] = []
    client = OsaiClient(
        f"http://127.0.0.1:{port}/api", TOKEN, jwt=JWT, timeout=2.0, sleep=sleeps.append
    )

    with pytest.raises(errors.OsaiUnavailable, match="Could not connect to OSAI") as caught:
        client.create_report(PERIOD_FROM, PERIOD_TO, ALL_FLAGS)
    assert "unknown" not in str(caught.value)  # the request never left
    assert sleeps == []

    with pytest.raises(errors.OsaiUnavailable, match="Could not connect to OSAI"):
        client.get_report(1)
    assert sleeps == [0.5, 1.0]
