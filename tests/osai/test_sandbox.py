"""The OSAI sandbox keeps OSAI's contract: over a real socket, with faults, and in its model.

Most tests talk to the session's sandbox process through the `osai_sandbox` fixture
(reset before each test). The usage model is tested as a pure function, with hypothesis.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from osai.sandbox.server import (
    FIRST_REPORT_ID,
    ROUTE_CREATE,
    ROUTE_DOWNLOAD,
    ROUTE_SIGN_IN,
    ROUTE_STATUS,
    ROUTE_USERS,
    SandboxConfig,
    account_id_for_token,
    start_in_thread,
)
from osai.sandbox.usage import (
    ADDITIVE_FIELDS,
    FLAG_FIELDS,
    FLAG_METRICS,
    TOTAL_FIELDS,
    account_totals,
    daily_breakdown,
    existing_images_at,
)
from tests.support.sandbox import REPO_ROOT, SandboxControl

TOKEN = "osai-sandbox-alice"
OTHER_TOKEN = "osai-sandbox-bob"
ALL_ON = dict.fromkeys(FLAG_FIELDS, True)
YEAR_2022 = {"periodFrom": "2022-01-01T00:00:00.000Z", "periodTo": "2023-01-01T00:00:00.000"}
# OSAI's own example of generating a report with Python, with its printed output, verbatim.
SEED_PLAYBOOK = Path(__file__).resolve().parent / "data" / "osai_report_playbook.txt"

# The seed's finished report, field by field, in OSAI's order.
FINISHED_KEYS = [
    "id",
    "path",
    *TOTAL_FIELDS,
    *FLAG_FIELDS,
    "creationTime",
    "periodFrom",
    "periodTo",
    "read",
    "status",
]
SEVEN_DIGITS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")
SIX_DIGITS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

# Sandbox traffic never goes through a proxy from the environment.
http = requests.Session()
http.trust_env = False


def sign_in(sandbox: SandboxControl, token: str = TOKEN) -> str:
    response = http.post(f"{sandbox.api_url}/Users/SignIn", json=token, timeout=5)
    assert response.status_code == 200, response.text
    return response.text


def bearer(jwt: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt}"}


def create(sandbox: SandboxControl, jwt: str, body: Any = None) -> requests.Response:
    return http.post(
        f"{sandbox.api_url}/Reports",
        headers=bearer(jwt),
        json={**YEAR_2022, **ALL_ON} if body is None else body,
        timeout=5,
    )


def get_report(sandbox: SandboxControl, jwt: str, report_id: int) -> requests.Response:
    return http.get(f"{sandbox.api_url}/Reports/{report_id}", headers=bearer(jwt), timeout=5)


def wait_finished(sandbox: SandboxControl, jwt: str, report_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data: dict[str, Any] = get_report(sandbox, jwt, report_id).json()
        if data["status"] != -1:
            return data
        time.sleep(0.05)
    raise AssertionError(f"report {report_id} still generating")


def finished_report(sandbox: SandboxControl, body: Any = None) -> tuple[str, dict[str, Any]]:
    """Sign in, create a report (no latency) and return the JWT and the finished report."""
    sandbox.set_latency(0)
    jwt = sign_in(sandbox)
    created = create(sandbox, jwt, body)
    assert created.status_code == 200, created.text
    return jwt, wait_finished(sandbox, jwt, created.json()["id"])


def jwt_claims(jwt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = jwt.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


# --- Sign-in and JWTs ---------------------------------------------------------------------------


def test_sign_in_answers_a_bare_hs256_jwt_for_the_account_as_text(osai_sandbox):
    response = http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    header, claims = jwt_claims(response.text)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["sub"] == account_id_for_token(TOKEN)
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 5


@pytest.mark.parametrize(
    "body",
    [
        b'"not-a-sandbox-token"',
        b'"osai-sandbox-"',
        b"osai-sandbox-alice",  # not JSON
        b'{"token": "osai-sandbox-alice"}',
        b"123",
        b"",
    ],
)
def test_sign_in_refuses_anything_but_a_sandbox_token_string(osai_sandbox, body):
    response = http.post(
        f"{osai_sandbox.api_url}/Users/SignIn",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 401
    assert isinstance(response.json()["message"], str)


def test_quote_jwt_makes_sign_in_answer_a_json_string(osai_sandbox):
    osai_sandbox.faults(quote_jwt=True)
    response = http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.text.startswith('"') and response.text.endswith('"')
    jwt = response.json()
    assert http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(jwt), timeout=5).ok


def test_protected_routes_refuse_missing_forged_or_foreign_jwts(osai_sandbox):
    jwt = sign_in(osai_sandbox)
    header, payload, signature = jwt.split(".")
    forged_claims = base64.urlsafe_b64encode(b'{"sub":"x","exp":9999999999}').rstrip(b"=")
    bad = {
        "none": {},
        "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "empty bearer": {"Authorization": "Bearer "},
        "garbage": bearer("not.a.jwt"),
        "bad signature": bearer(f"{header}.{payload}.{signature[::-1]}"),
        "other claims": bearer(f"{header}.{forged_claims.decode()}.{signature}"),
        "alg none": bearer(f"{header}.{payload}."),
    }
    for name, headers in bad.items():
        for method, path in [("GET", "/Users"), ("POST", "/Reports"), ("GET", "/Reports/1")]:
            response = http.request(
                method, f"{osai_sandbox.api_url}{path}", headers=headers, timeout=5
            )
            assert response.status_code == 401, (name, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), name


def test_a_jwt_stops_working_when_it_expires(osai_sandbox):
    osai_sandbox.set_jwt_ttl(1)
    jwt = sign_in(osai_sandbox)
    _, claims = jwt_claims(jwt)
    assert claims["exp"] - claims["iat"] == 1
    assert http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(jwt), timeout=5).ok
    time.sleep(1.1)
    response = http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(jwt), timeout=5)
    assert response.status_code == 401
    assert http.get(
        f"{osai_sandbox.api_url}/Users", headers=bearer(sign_in(osai_sandbox)), timeout=5
    ).ok  # signing in again helps


def test_users_describes_the_account_of_the_token(osai_sandbox):
    response = http.get(
        f"{osai_sandbox.api_url}/Users", headers=bearer(sign_in(osai_sandbox)), timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {
        "id": account_id_for_token(TOKEN),
        "email": "alice@sandbox.onestepai.local",
        "userName": "alice",
        "firstName": "Sandbox",
        "lastName": "Alice",
    }
    odd = sign_in(osai_sandbox, "osai-sandbox-Bob Smith/<x>")
    user = http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(odd), timeout=5).json()
    assert user["userName"] == "bob-smith-x"
    assert user["id"] != account_id_for_token(TOKEN)


def test_routes_ignore_case_like_asp_net_and_other_paths_are_404_or_405(osai_sandbox):
    assert http.post(f"{osai_sandbox.api_url}/users/signin", json=TOKEN, timeout=5).ok
    assert http.get(f"{osai_sandbox.api_url}/Users/SignIn", timeout=5).status_code == 405
    assert http.get(f"{osai_sandbox.api_url}/Nothing", timeout=5).status_code == 404
    assert osai_sandbox.calls("other") == 2
    assert osai_sandbox.calls(ROUTE_SIGN_IN) == 1


# --- Reports ---------------------------------------------------------------------------------


def test_create_report_answers_id_seven_digit_creation_time_and_minus_one(osai_sandbox):
    jwt = sign_in(osai_sandbox)
    first, second = create(osai_sandbox, jwt), create(osai_sandbox, jwt)
    assert first.status_code == 200
    data = first.json()
    assert list(data) == ["id", "creationTime", "status"]
    assert isinstance(data["id"], int) and data["id"] >= FIRST_REPORT_ID
    assert SEVEN_DIGITS.fullmatch(data["creationTime"])
    created = datetime.fromisoformat(data["creationTime"][:26] + "+00:00")
    assert abs(created - datetime.now(UTC)) < timedelta(seconds=5)
    assert data["status"] == -1
    assert second.json()["id"] == data["id"] + 1


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"periodTo": "2023-01-01T00:00:00Z"}, "missing periodFrom"),
        ({"periodFrom": "2022-01-01T00:00:00Z"}, "missing periodTo"),
        ({"periodFrom": "last year", "periodTo": "2023-01-01T00:00:00Z"}, "not a date"),
        ({"periodFrom": "2022-13-01T00:00:00Z", "periodTo": "2023-01-01"}, "month 13"),
        ({"periodFrom": 1640995200, "periodTo": "2023-01-01T00:00:00Z"}, "a number"),
        ({"periodFrom": "2023-01-01T00:00:00Z", "periodTo": "2023-01-01T00:00:00Z"}, "empty"),
        ({"periodFrom": "2023-01-02T00:00:00Z", "periodTo": "2023-01-01T00:00:00Z"}, "backwards"),
        ({**YEAR_2022, "includeModels": "true"}, "flag as a string"),
        ({**YEAR_2022, "includeDatasets": 1}, "flag as a number"),
        ({**YEAR_2022, "includePredictions": None}, "flag null"),
        (["2022-01-01", "2023-01-01"], "not an object"),
    ],
)
def test_create_report_refuses_bad_requests_with_400_and_a_message(osai_sandbox, body, why):
    response = create(osai_sandbox, sign_in(osai_sandbox), body)
    assert response.status_code == 400, why
    assert isinstance(response.json()["message"], str), why
    assert osai_sandbox.full_stats()["reports"] == {"-1": 0, "0": 0, "1": 0}


def test_create_report_refuses_a_period_ending_in_the_future_beyond_a_day(osai_sandbox):
    jwt = sign_in(osai_sandbox)
    now = datetime.now(UTC)
    far = {"periodFrom": "2026-01-01T00:00:00Z", "periodTo": (now + timedelta(days=2)).isoformat()}
    near = {
        "periodFrom": "2026-01-01T00:00:00Z",
        "periodTo": (now + timedelta(hours=1)).isoformat(),
    }
    assert create(osai_sandbox, jwt, far).status_code == 400
    assert create(osai_sandbox, jwt, near).status_code == 200


@pytest.mark.parametrize(
    ("period_from", "echoed"),
    [
        ("2022-01-01T00:00:00.000", "2022-01-01T00:00:00Z"),  # the seed's: no Z means UTC
        ("2022-01-01T00:00:00Z", "2022-01-01T00:00:00Z"),
        ("2022-01-01T02:00:00+02:00", "2022-01-01T00:00:00Z"),
        ("2022-01-01T00:00:00.1234567Z", "2022-01-01T00:00:00.123456Z"),
        ("2022-01-01", "2022-01-01T00:00:00Z"),
    ],
)
def test_create_report_accepts_iso_8601_variants_and_echoes_utc(osai_sandbox, period_from, echoed):
    body = {"periodFrom": period_from, "periodTo": "2023-01-01T00:00:00.000", **ALL_ON}
    _, report = finished_report(osai_sandbox, body)
    assert report["periodFrom"] == echoed
    assert report["periodTo"] == "2023-01-01T00:00:00Z"


def test_a_report_generates_for_latency_seconds_then_has_the_seed_fields_in_order(osai_sandbox):
    osai_sandbox.set_latency(0.3)
    jwt = sign_in(osai_sandbox)
    created = create(osai_sandbox, jwt).json()
    generating = get_report(osai_sandbox, jwt, created["id"]).json()
    assert generating == created  # id, 7-digit creationTime, status -1
    time.sleep(0.35)
    report = get_report(osai_sandbox, jwt, created["id"]).json()

    assert list(report) == FINISHED_KEYS
    assert report["id"] == created["id"] and report["status"] == 0
    expected = account_totals(
        account_id_for_token(TOKEN), datetime(2022, 1, 1), datetime(2023, 1, 1), ALL_ON
    )
    assert {name: report[name] for name in TOTAL_FIELDS} == expected
    for name in TOTAL_FIELDS:
        kinds = (int, float) if name.endswith("KBMin") else (int,)
        assert isinstance(report[name], kinds) and not isinstance(report[name], bool), name
    assert all(report[name] is True for name in FLAG_FIELDS)
    assert SIX_DIGITS.fullmatch(report["creationTime"])
    assert created["creationTime"].startswith(report["creationTime"][:-1])
    assert (report["periodFrom"], report["periodTo"]) == (
        "2022-01-01T00:00:00Z",
        "2023-01-01T00:00:00Z",
    )
    assert report["read"] is False
    assert get_report(osai_sandbox, jwt, created["id"]).json()["read"] is True


def test_missing_flags_are_off_and_zero_their_totals(osai_sandbox):
    _, report = finished_report(osai_sandbox, dict(YEAR_2022))
    assert all(report[name] is False for name in FLAG_FIELDS)
    assert all(report[name] == 0 for name in TOTAL_FIELDS)


def test_a_report_of_another_account_or_an_unknown_id_is_404(osai_sandbox):
    alice = sign_in(osai_sandbox, TOKEN)
    bob = sign_in(osai_sandbox, OTHER_TOKEN)
    report_id = create(osai_sandbox, alice).json()["id"]
    for jwt, unknown in [(bob, report_id), (alice, report_id + 1000), (alice, 0)]:
        response = get_report(osai_sandbox, jwt, unknown)
        assert response.status_code == 404
        assert "not found" in response.json()["message"]
    assert get_report(osai_sandbox, alice, report_id).status_code == 200


def test_a_report_covering_now_counts_usage_only_up_to_its_creation(osai_sandbox):
    now = datetime.now(UTC)
    start = now - timedelta(days=3)
    body = {"periodFrom": start.isoformat(), "periodTo": (now + timedelta(hours=12)).isoformat()}
    _, report = finished_report(osai_sandbox, {**body, **ALL_ON})
    created = datetime.fromisoformat(report["creationTime"].replace("Z", "+00:00"))
    account = account_id_for_token(TOKEN)
    expected = account_totals(account, start, now + timedelta(hours=12), ALL_ON, as_of=created)
    assert {name: report[name] for name in TOTAL_FIELDS} == expected


# --- Injected usage (POST /__sandbox__/usage) ----------------------------------------------------

SPIKE = {"totalTrainingSeconds16GB": 36000, "totalImagesKBMin": 2.5}


def _day_report(sandbox: SandboxControl, jwt: str, start: str, end: str) -> dict[str, Any]:
    created = create(sandbox, jwt, {"periodFrom": start, "periodTo": end, **ALL_ON})
    assert created.status_code == 200, created.text
    return wait_finished(sandbox, jwt, created.json()["id"])


def test_added_usage_counts_in_every_report_that_covers_its_day(osai_sandbox):
    osai_sandbox.set_latency(0)
    jwt = sign_in(osai_sandbox)
    before = _day_report(osai_sandbox, jwt, "2022-03-14T00:00:00Z", "2022-03-15T00:00:00Z")
    answer = osai_sandbox.add_usage(TOKEN, "2022-03-14", **SPIKE)
    assert answer == {
        "account_id": account_id_for_token(TOKEN),
        "day": "2022-03-14",
        "added": {"totalTrainingSeconds16GB": 36000, "totalImagesKBMin": 40},
    }  # KB-minutes in sixteenths
    osai_sandbox.add_usage(TOKEN, "2022-03-14", totalTrainingSeconds16GB=100)  # adds up
    day = _day_report(osai_sandbox, jwt, "2022-03-14T00:00:00Z", "2022-03-15T00:00:00Z")
    month = _day_report(osai_sandbox, jwt, "2022-03-01T00:00:00Z", "2022-04-01T00:00:00Z")
    other_day = _day_report(osai_sandbox, jwt, "2022-03-15T00:00:00Z", "2022-03-16T00:00:00Z")
    half = _day_report(osai_sandbox, jwt, "2022-03-14T00:00:00Z", "2022-03-14T12:00:00Z")

    training, images = "totalTrainingSeconds16GB", "totalImagesKBMin"
    assert day[training] == before[training] + 36100
    assert day[images] == before[images] + 2.5
    account = account_id_for_token(TOKEN)
    plain_month = account_totals(account, datetime(2022, 3, 1), datetime(2022, 4, 1), ALL_ON)
    assert month[training] == plain_month[training] + 36100
    plain_other = account_totals(account, datetime(2022, 3, 15), datetime(2022, 3, 16), ALL_ON)
    assert other_day[training] == plain_other[training]
    plain_half = account_totals(account, datetime(2022, 3, 14), datetime(2022, 3, 14, 12), ALL_ON)
    assert half[training] == plain_half[training] + 18050  # pro rata, like the model's own
    # Another account's reports are untouched; the report file's days say the same.
    bob = sign_in(osai_sandbox, OTHER_TOKEN)
    bobs = _day_report(osai_sandbox, bob, "2022-03-14T00:00:00Z", "2022-03-15T00:00:00Z")
    plain_bob = account_totals(
        account_id_for_token(OTHER_TOKEN), datetime(2022, 3, 14), datetime(2022, 3, 15), ALL_ON
    )
    assert bobs[training] == plain_bob[training]
    file = http.get(month["path"], timeout=5).json()
    (spiked,) = [d for d in file["days"] if d["date"] == "2022-03-14"]
    assert spiked["trainingSeconds16GB"] == day[training]
    assert file["totals"][training] == month[training]
    # A reset forgets it.
    osai_sandbox.reset()
    osai_sandbox.set_latency(0)
    jwt = sign_in(osai_sandbox)
    again = _day_report(osai_sandbox, jwt, "2022-03-14T00:00:00Z", "2022-03-15T00:00:00Z")
    assert again[training] == before[training]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"day": "2022-03-14", "add": {"totalTrainingSeconds16GB": 1}}, "token"),
        (
            {"token": "someone-else", "day": "2022-03-14", "add": {"totalTrainingSeconds16GB": 1}},
            "token",
        ),
        ({"token": TOKEN, "day": "14.03.2022", "add": {"totalTrainingSeconds16GB": 1}}, "day"),
        ({"token": TOKEN, "day": "2022-02-30", "add": {"totalTrainingSeconds16GB": 1}}, "day"),
        ({"token": TOKEN, "day": "2019-12-31", "add": {"totalTrainingSeconds16GB": 1}}, "day"),
        ({"token": TOKEN, "day": "2022-03-14", "add": {}}, "add"),
        ({"token": TOKEN, "day": "2022-03-14", "add": {"trainingSeconds": 1}}, "unknown total"),
        ({"token": TOKEN, "day": "2022-03-14", "add": {"totalExistingImagesNum": 1}}, "unknown"),
        (
            {"token": TOKEN, "day": "2022-03-14", "add": {"totalTrainingSeconds16GB": -1}},
            "non-negative",
        ),
        (
            {"token": TOKEN, "day": "2022-03-14", "add": {"totalTrainingSeconds16GB": "1"}},
            "non-negative",
        ),
        (
            {"token": TOKEN, "day": "2022-03-14", "add": {"totalTrainingSeconds16GB": True}},
            "non-negative",
        ),
        ({"token": TOKEN, "day": "2022-03-14", "add": {"totalTrainingSeconds16GB": 1.5}}, "whole"),
        ({"token": TOKEN, "day": "2022-03-14", "add": {"totalImagesKBMin": 2**41}}, "at most"),
        ([1, 2], "JSON object"),
    ],
)
def test_added_usage_refuses_bad_requests_with_400_and_changes_nothing(osai_sandbox, body, why):
    response = http.post(f"{osai_sandbox.base_url}/__sandbox__/usage", json=body, timeout=5)
    assert response.status_code == 400
    assert why in response.json()["message"]


def test_added_usage_stays_exactly_additive():
    added = {
        datetime(2022, 3, 14).date(): {"totalTrainingSeconds16GB": 36_001, "totalModelsKBMin": 7}
    }
    account = ACCOUNTS[0]
    cuts = [
        datetime(2022, 3, 13, 23),
        datetime(2022, 3, 14, 7, 13, 1),
        datetime(2022, 3, 14, 19, 59, 59),
        datetime(2022, 3, 16),
    ]
    whole = account_totals(account, cuts[0], cuts[-1], added=added)
    parts = [account_totals(account, a, b, added=added) for a, b in itertools.pairwise(cuts)]
    for name in ADDITIVE_FIELDS:
        assert whole[name] == sum(part[name] for part in parts), name
    plain = account_totals(account, cuts[0], cuts[-1])
    assert whole["totalTrainingSeconds16GB"] == plain["totalTrainingSeconds16GB"] + 36_001
    assert whole["totalModelsKBMin"] == plain["totalModelsKBMin"] + 7 / 16


# --- The signed download link -----------------------------------------------------------------


def test_the_path_serves_the_report_file_without_any_auth(osai_sandbox):
    _, report = finished_report(osai_sandbox)
    link = urlsplit(report["path"])
    assert f"{link.scheme}://{link.netloc}" == osai_sandbox.base_url
    assert re.fullmatch(r"/s3/[0-9a-f-]{36}/Reports/[0-9a-f-]{36}\.json", link.path)
    query = parse_qs(link.query)
    assert set(query) == {"AWSAccessKeyId", "Expires", "Signature"}
    assert 590 <= int(query["Expires"][0]) - time.time() <= 601  # link_ttl 600 s
    assert "%" in link.query.split("Signature=")[1]  # base64 padding, URL-encoded

    response = requests.get(report["path"], timeout=5)  # a fresh client: no headers at all
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    content = response.json()
    assert content["reportId"] == report["id"]
    assert content["totals"] == {name: report[name] for name in TOTAL_FIELDS}
    assert (content["periodFrom"], content["periodTo"]) == (
        report["periodFrom"],
        report["periodTo"],
    )
    assert all(content[name] is True for name in FLAG_FIELDS)
    days = content["days"]
    assert len(days) == 365 and days[0]["date"] == "2022-01-01" and days[-1]["date"] == "2022-12-31"
    for name in ADDITIVE_FIELDS:
        short = name.removeprefix("total")
        key = short[0].lower() + short[1:]
        assert sum(day[key] for day in days) == report[name], name
    assert days[-1]["existingImagesNum"] == report["totalExistingImagesNum"]
    assert osai_sandbox.full_stats()["auth_headers_on_downloads"] == 0


def test_a_download_that_carries_authorization_is_counted_and_refused(osai_sandbox):
    jwt, report = finished_report(osai_sandbox)
    response = http.get(report["path"], headers=bearer(jwt), timeout=5)
    assert response.status_code == 400  # S3: only one auth mechanism allowed
    assert osai_sandbox.full_stats()["auth_headers_on_downloads"] == 1


def test_a_tampered_or_incomplete_link_is_403(osai_sandbox):
    jwt, report = finished_report(osai_sandbox)
    other = wait_finished(osai_sandbox, jwt, create(osai_sandbox, jwt).json()["id"])
    link, other_link = urlsplit(report["path"]), urlsplit(other["path"])
    query = {key: values[0] for key, values in parse_qs(link.query).items()}
    base = f"{osai_sandbox.base_url}{link.path}"
    signature = query["Signature"]
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]  # always a different one
    forged = [
        f"{base}?{urlencode({**query, 'Signature': flipped})}",
        f"{base}?{urlencode({**query, 'Expires': int(query['Expires']) + 1})}",
        f"{base}?{urlencode({k: v for k, v in query.items() if k != 'Signature'})}",
        f"{osai_sandbox.base_url}{other_link.path}?{link.query}",  # another file, my signature
        base,
    ]
    for url in forged:
        response = http.get(url, timeout=5)
        assert response.status_code == 403, url
        assert response.text.startswith("<?xml") and "<Code>" in response.text
    assert http.get(report["path"], timeout=5).status_code == 200


def test_expire_links_issues_links_that_are_already_expired(osai_sandbox):
    osai_sandbox.faults(expire_links=True)
    _, report = finished_report(osai_sandbox)
    assert int(parse_qs(urlsplit(report["path"]).query)["Expires"][0]) < time.time()
    response = http.get(report["path"], timeout=5)
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code>" in response.text and "expired" in response.text


# --- Faults ------------------------------------------------------------------------------------


def test_report_error_ends_new_reports_in_status_1_with_only_id_time_and_status(osai_sandbox):
    osai_sandbox.faults(report_error=True)
    _, report = finished_report(osai_sandbox)
    assert list(report) == ["id", "creationTime", "status"]
    assert report["status"] == 1
    assert osai_sandbox.full_stats()["reports"] == {"-1": 0, "0": 0, "1": 1}


def test_report_stuck_keeps_new_reports_at_minus_one(osai_sandbox):
    osai_sandbox.faults(report_stuck=True, latency=0)
    jwt = sign_in(osai_sandbox)
    report_id = create(osai_sandbox, jwt).json()["id"]
    osai_sandbox.faults(report_stuck=False)  # only reports made while it was on are stuck
    time.sleep(0.2)
    assert get_report(osai_sandbox, jwt, report_id).json()["status"] == -1
    fresh = create(osai_sandbox, jwt).json()["id"]
    assert wait_finished(osai_sandbox, jwt, fresh)["status"] == 0


def test_fail_next_answers_503_for_the_next_n_api_requests(osai_sandbox):
    osai_sandbox.faults(fail_next=2)
    statuses = [
        http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    assert osai_sandbox.full_stats()["injected"] == {"fail": 2}


def test_error_every_fails_every_nth_request_with_500(osai_sandbox):
    osai_sandbox.faults(error_every=3)
    statuses = [
        http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5).status_code
        for _ in range(6)
    ]
    assert statuses == [200, 200, 500, 200, 200, 500]


def test_error_rate_fails_that_share_of_requests_with_500_or_503(osai_sandbox):
    osai_sandbox.faults(error_rate=1.0)
    for _ in range(5):
        response = http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5)
        assert response.status_code in (500, 503)
    osai_sandbox.faults(error_rate=0.0)
    assert http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5).ok


def test_faults_with_a_route_hit_only_that_route(osai_sandbox):
    osai_sandbox.faults(fail_next=1, route=ROUTE_STATUS)
    jwt = sign_in(osai_sandbox)
    report_id = create(osai_sandbox, jwt).json()["id"]
    assert get_report(osai_sandbox, jwt, report_id).status_code == 503
    assert get_report(osai_sandbox, jwt, report_id).status_code == 200


def test_faults_do_not_touch_downloads_unless_their_route_names_them(osai_sandbox):
    _, report = finished_report(osai_sandbox)
    osai_sandbox.faults(fail_next=1)
    assert http.get(report["path"], timeout=5).status_code == 200
    osai_sandbox.faults(route=ROUTE_DOWNLOAD)
    assert http.get(report["path"], timeout=5).status_code == 503


@pytest.mark.parametrize(
    "retry_after", ["2", "Wed, 21 Oct 2015 07:28:00 GMT", "999999999", "soon-ish!", "-5"]
)
def test_rate_limit_next_answers_429_with_the_given_retry_after(osai_sandbox, retry_after):
    osai_sandbox.faults(rate_limit_next=1, retry_after=retry_after, route=ROUTE_CREATE)
    jwt = sign_in(osai_sandbox)
    limited = create(osai_sandbox, jwt)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == retry_after
    assert create(osai_sandbox, jwt).status_code == 200
    assert osai_sandbox.full_stats()["reports"]["-1"] == 1  # the 429 created nothing


def test_hang_next_holds_the_answer_until_the_client_gives_up(osai_sandbox):
    osai_sandbox.faults(hang_next=1, hang_seconds=30, route=ROUTE_USERS)
    jwt = sign_in(osai_sandbox)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(jwt), timeout=0.5)
    assert time.monotonic() - started < 2
    # Other requests were not blocked meanwhile, and the next one is normal.
    assert http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(jwt), timeout=2).ok


def test_hang_next_with_a_short_hang_answers_late_but_normally(osai_sandbox):
    osai_sandbox.faults(hang_next=1, hang_seconds=0.4)
    started = time.monotonic()
    assert http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5).ok
    assert time.monotonic() - started >= 0.4


def test_trickle_next_sends_headers_then_one_byte_per_interval(osai_sandbox):
    osai_sandbox.faults(trickle_next=1, trickle_interval=0.2, route=ROUTE_SIGN_IN)
    started = time.monotonic()
    response = http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=2, stream=True)
    assert response.status_code == 200 and time.monotonic() - started < 1
    assert int(response.headers["Content-Length"]) > 100
    received = b"".join(response.raw.read(1) for _ in range(5))
    elapsed = time.monotonic() - started
    response.close()
    assert received == b"eyJhb"  # the start of the real JWT
    assert 0.75 <= elapsed < 2


@pytest.mark.parametrize(
    "kind", ["json", "html", "huge", "empty", "missing_status", "unknown_status"]
)
def test_malformed_next_garbles_the_next_report_status_answers(osai_sandbox, kind):
    jwt = sign_in(osai_sandbox)
    report_id = create(osai_sandbox, jwt).json()["id"]
    osai_sandbox.faults(malformed_next=1, malformed=kind)
    response = http.get(
        f"{osai_sandbox.api_url}/Reports/{report_id}", headers=bearer(jwt), timeout=5, stream=True
    )
    assert response.status_code == 200
    if kind == "huge":
        assert int(response.headers["Content-Length"]) >= 30_000_000
        assert response.raw.read(100).startswith(b'{"id":')
        response.close()
    elif kind == "json":
        with pytest.raises(ValueError):
            response.json()
    elif kind == "html":
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.text.startswith("<!DOCTYPE html>")
    elif kind == "empty":
        assert response.content == b""
    elif kind == "missing_status":
        assert "status" not in response.json() and response.json()["id"] == report_id
    else:
        assert response.json()["status"] not in (-1, 0, 1)
    assert get_report(osai_sandbox, jwt, report_id).json()["status"] in (-1, 0)  # then normal


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_next_redirects_api_requests_elsewhere(osai_sandbox, status):
    target = "http://127.0.0.1:9/somewhere-else"
    osai_sandbox.faults(redirect_next=1, redirect_to=target, redirect_status=status)
    response = http.post(
        f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5, allow_redirects=False
    )
    assert response.status_code == status
    assert response.headers["Location"] == target
    assert http.post(f"{osai_sandbox.api_url}/Users/SignIn", json=TOKEN, timeout=5).ok


def test_latency_can_change_while_running(osai_sandbox):
    osai_sandbox.set_latency(0)
    jwt = sign_in(osai_sandbox)
    report_id = create(osai_sandbox, jwt).json()["id"]
    assert get_report(osai_sandbox, jwt, report_id).json()["status"] == 0
    osai_sandbox.set_latency(60)
    slow = create(osai_sandbox, jwt).json()["id"]
    assert get_report(osai_sandbox, jwt, slow).json()["status"] == -1


def test_bad_fault_settings_are_refused_and_change_nothing(osai_sandbox):
    for bad in [
        {"fail_nxt": 1},
        {"fail_next": -1},
        {"error_rate": 2},
        {"malformed": "xml"},
        {"redirect_status": 200},
        {"route": "GET /api/Nothing"},
        {"retry_after": "1\r\nX-Evil: 1"},
    ]:
        response = http.post(f"{osai_sandbox.base_url}/__sandbox__/faults", json=bad, timeout=5)
        assert response.status_code == 400, bad
    assert osai_sandbox.full_stats()["faults"] == {}


def test_posting_no_faults_clears_them_all(osai_sandbox):
    assert osai_sandbox.faults(fail_next=3, latency=0) == {"fail_next": 3, "latency": 0.0}
    assert osai_sandbox.faults() == {}
    assert osai_sandbox.full_stats()["settings"]["latency"] == 0.5  # back to --latency


# --- Stats and reset -----------------------------------------------------------------------------


def test_stats_count_calls_per_route_and_reset_clears_everything(osai_sandbox):
    jwt = sign_in(osai_sandbox)
    sign_in(osai_sandbox, OTHER_TOKEN)
    http.get(f"{osai_sandbox.api_url}/Users", headers=bearer(jwt), timeout=5)
    osai_sandbox.set_latency(0)
    report_id = create(osai_sandbox, jwt).json()["id"]
    report = wait_finished(osai_sandbox, jwt, report_id)
    http.get(report["path"], timeout=5)
    osai_sandbox.faults(fail_next=5)

    stats = osai_sandbox.full_stats()
    assert stats["calls"] == {
        ROUTE_SIGN_IN: 2,
        ROUTE_USERS: 1,
        ROUTE_CREATE: 1,
        ROUTE_STATUS: 1,
        ROUTE_DOWNLOAD: 1,
    }
    assert osai_sandbox.stats() == stats["calls"]
    assert osai_sandbox.calls(ROUTE_SIGN_IN) == 2
    assert stats["reports"] == {"-1": 0, "0": 1, "1": 0}
    assert stats["faults"] == {"latency": 0.0, "fail_next": 5}
    assert stats["auth_headers_on_downloads"] == 0
    # Per OSAI account, for checks such as "no call with a former member's token".
    assert osai_sandbox.calls_with_token(TOKEN) == {
        ROUTE_SIGN_IN: 1,
        ROUTE_USERS: 1,
        ROUTE_CREATE: 1,
        ROUTE_STATUS: 1,
        ROUTE_DOWNLOAD: 1,
    }
    assert osai_sandbox.calls_with_token(OTHER_TOKEN) == {ROUTE_SIGN_IN: 1}
    assert osai_sandbox.calls_with_token("osai-sandbox-nobody") == {}

    osai_sandbox.reset()
    stats = osai_sandbox.full_stats()
    assert set(stats["calls"].values()) == {0}
    assert stats["calls_by_account"] == {}
    assert stats["reports"] == {"-1": 0, "0": 0, "1": 0}
    assert stats["faults"] == {} and stats["injected"] == {}
    # The JWT still works (accounts are deterministic), the old report is gone, and new
    # report ids keep counting up.
    assert get_report(osai_sandbox, jwt, report_id).status_code == 404
    assert create(osai_sandbox, jwt).json()["id"] > report_id


def test_health_answers_ok(osai_sandbox):
    response = http.get(f"{osai_sandbox.base_url}/__sandbox__/health", timeout=5)
    assert (response.status_code, response.text) == (200, "ok")


# --- Processes ---------------------------------------------------------------------------------


@pytest.fixture
def second_sandbox(tmp_path: Path) -> Iterator[SandboxControl]:
    # Started by the Django command; the session's sandbox runs as `python -m osai.sandbox`.
    control = SandboxControl.start(latency=0, log_path=tmp_path / "second.log", via_manage=True)
    yield control
    control.stop()


def test_a_second_sandbox_process_has_its_own_secret_and_stops_cleanly(
    osai_sandbox, second_sandbox
):
    jwt = sign_in(osai_sandbox)
    response = http.get(f"{second_sandbox.api_url}/Users", headers=bearer(jwt), timeout=5)
    assert response.status_code == 401
    port = urlsplit(second_sandbox.base_url).port
    assert f"OSAI sandbox listening on http://127.0.0.1:{port}/api" in second_sandbox.log_tail()
    assert second_sandbox.stop() == 0  # SIGTERM: a clean exit
    assert "Traceback" not in second_sandbox.log_tail()


def test_the_app_also_serves_from_a_thread_in_this_process():
    with start_in_thread(SandboxConfig(latency=0)) as running:
        jwt = http.post(f"{running.api_url}/Users/SignIn", json=TOKEN, timeout=5).text
        response = http.post(
            f"{running.api_url}/Reports", headers=bearer(jwt), json=YEAR_2022, timeout=5
        )
        report_id = response.json()["id"]
        report = http.get(f"{running.api_url}/Reports/{report_id}", headers=bearer(jwt), timeout=5)
        assert report.json()["status"] == 0
        assert running.app.stats()["calls"][ROUTE_STATUS] == 1


# --- The usage model ------------------------------------------------------------------------------

ACCOUNTS = [account_id_for_token(f"osai-sandbox-{name}") for name in ("alice", "bob", "carol")]
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
flag_sets = st.fixed_dictionaries({name: st.booleans() for name in FLAG_FIELDS})


@settings(max_examples=300, deadline=None)
@given(
    account=st.sampled_from(ACCOUNTS),
    instants=st.lists(moments, min_size=3, max_size=3, unique=True).map(sorted),
    flags=flag_sets,
)
def test_totals_are_exactly_additive_over_adjacent_periods(account, instants, flags):
    a, b, c = instants
    whole = account_totals(account, a, c, flags)
    first, second = account_totals(account, a, b, flags), account_totals(account, b, c, flags)
    for name in ADDITIVE_FIELDS:
        assert whole[name] == first[name] + second[name], name  # exact, floats included
        assert whole[name] >= 0
    # The image count is a state at the end of the period, not a sum.
    existing = existing_images_at(account, c) if flags["includeDatasets"] else 0
    assert whole["totalExistingImagesNum"] == second["totalExistingImagesNum"] == existing


def test_flags_that_are_off_zero_exactly_their_metrics():
    account, start, end = ACCOUNTS[0], datetime(2024, 1, 1), datetime(2025, 1, 1)
    everything = account_totals(account, start, end, ALL_ON)
    assert all(everything[name] > 0 for name in TOTAL_FIELDS if "Rental" not in name)
    for flag, metrics in FLAG_METRICS.items():
        totals = account_totals(account, start, end, {**ALL_ON, flag: False})
        for name in TOTAL_FIELDS:
            assert totals[name] == (0 if name in metrics else everything[name]), (flag, name)
    assert account_totals(account, start, end) == everything  # None means all on


def test_there_is_no_usage_before_2020_and_the_model_is_deterministic_across_processes():
    account = ACCOUNTS[1]
    before = account_totals(account, datetime(2015, 1, 1), datetime(2020, 1, 1))
    assert set(before.values()) == {0}
    mine = account_totals(account, datetime(2023, 1, 1), datetime(2023, 7, 1))
    script = (
        "import json; from datetime import datetime; "
        "from osai.sandbox.usage import account_totals; "
        f"totals = account_totals({account!r}, datetime(2023, 1, 1), datetime(2023, 7, 1)); "
        "print(json.dumps(totals))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.check_output(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, text=True, timeout=30
    )
    assert json.loads(output) == mine


def test_usage_looks_like_real_usage():
    accounts = [account_id_for_token(f"osai-sandbox-user{i}") for i in range(20)]
    start, end = datetime(2025, 1, 1), datetime(2026, 1, 1)
    weekday_training, weekend_training = [], []
    using_16gb = 0
    for account in accounts:
        totals = account_totals(account, start, end)
        assert 0 < totals["totalTrainingSeconds16GB"] < totals["totalTrainingSeconds8GB"] or (
            totals["totalTrainingSeconds16GB"] == 0
        )
        using_16gb += totals["totalTrainingSeconds16GB"] > 0
        days = daily_breakdown(account, start, end)
        idle = [d for d in days if d["trainingSeconds8GB"] == d["manipulationSeconds"] == 0]
        assert 30 < len(idle) < 330  # some idle days, not only idle days
        for day in days:
            assert 0 <= int(day["trainingSeconds8GB"]) <= 8 * 3600
            assert 0 <= int(day["deviceRentalSeconds"]) <= 86_400
            weekend = datetime.fromisoformat(str(day["date"])).weekday() >= 5
            (weekend_training if weekend else weekday_training).append(day["trainingSeconds8GB"])
        # Storage grows: more KB-minutes per day now than in the first year.
        early = account_totals(account, datetime(2020, 1, 1), datetime(2021, 1, 1))
        assert totals["totalImagesKBMin"] > early["totalImagesKBMin"] > 0
    assert using_16gb >= 14  # most accounts use 16 GB workers, less than 8 GB ones
    weekday_mean = sum(weekday_training) / len(weekday_training)
    weekend_mean = sum(weekend_training) / len(weekend_training)
    assert weekend_mean < weekday_mean / 2  # weekends are quieter


# --- The seed's playbook, unchanged but for its URL and token ----------------------------------


def test_the_seed_playbook_runs_against_the_sandbox_and_prints_a_finished_report(
    osai_sandbox, tmp_path
):
    seed = SEED_PLAYBOOK.read_text()
    example = seed.index("# Example")
    start = seed.index("import requests", example)
    end = seed.index("    main()", seed.index("if __name__ == '__main__':", start)) + 10
    code, url_subs = re.subn(
        r"^OSAI_URL = .*$", f"OSAI_URL = {osai_sandbox.api_url!r}", seed[start:end], flags=re.M
    )
    code, token_subs = re.subn(r"^API_TOKEN = .*$", f"API_TOKEN = {TOKEN!r}", code, flags=re.M)
    assert (url_subs, token_subs) == (1, 1)
    script = tmp_path / "playbook.py"
    script.write_text(code + "\n")

    osai_sandbox.set_latency(1.0)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    created_text, finished_text = result.stdout.split("---Waiting for generated report---")
    decoder = json.JSONDecoder()
    created = decoder.raw_decode(created_text[created_text.index("{") :])[0]
    finished = decoder.raw_decode(finished_text.strip())[0]

    assert created["status"] == -1 and SEVEN_DIGITS.fullmatch(created["creationTime"])
    assert finished["id"] == created["id"] and finished["status"] == 0
    seed_finished = decoder.raw_decode(seed[seed.rindex('{\n    "id"') :])[0]
    assert list(finished) == list(seed_finished) == FINISHED_KEYS
    expected = account_totals(
        account_id_for_token(TOKEN), datetime(2022, 1, 1), datetime(2023, 1, 1), ALL_ON
    )
    assert {name: finished[name] for name in TOTAL_FIELDS} == expected
    assert (finished["periodFrom"], finished["periodTo"]) == (
        seed_finished["periodFrom"],
        seed_finished["periodTo"],
    )
    assert osai_sandbox.calls(ROUTE_CREATE) == 1 and osai_sandbox.calls(ROUTE_STATUS) == 2
