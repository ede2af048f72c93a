"""Q8: the django-q2 and database settings the pipeline's safety depends on."""

import pytest
from django.conf import settings


def test_q_cluster_timeout_is_set_and_below_retry():
    q = settings.Q_CLUSTER
    assert q["timeout"] > 0
    # A task still running when `retry` expires would be started a second time.
    assert q["retry"] > q["timeout"]


def test_q_cluster_bounds_redelivery_and_skips_catch_up():
    assert settings.Q_CLUSTER["max_attempts"] > 0
    assert settings.Q_CLUSTER["catch_up"] is False


def test_step_lease_is_shorter_than_redelivery():
    # A lost step becomes due again (lease) before django-q2 would redeliver it (retry).
    assert settings.Q_CLUSTER["retry"] > settings.OSAI_STEP_LEASE_SECONDS


def test_dispatcher_runs_far_below_the_task_timeout():
    from reports.pipeline.dispatcher import DISPATCH_RUN_SECONDS

    assert settings.Q_CLUSTER["timeout"] / 3 >= DISPATCH_RUN_SECONDS


def test_sqlite_uses_immediate_transactions_and_wal():
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.sqlite3":
        return
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["timeout"] >= 5


def test_token_keys_are_not_the_secret_key():
    assert settings.SECRET_KEY not in settings.OSAI_TOKEN_KEYS


def test_the_poll_schedule_starts_like_the_seed_and_backs_off_to_the_cap(settings):
    from reports.pipeline.steps import _poll_delay

    settings.OSAI_POLL_FIRST_SECONDS = 1
    settings.OSAI_POLL_STEADY_SECONDS = 2
    settings.OSAI_POLL_STEADY_PERIOD_SECONDS = 30
    settings.OSAI_POLL_MAX_SECONDS = 10
    delays = [_poll_delay(n) for n in range(25)]
    assert delays[0] == 1
    assert delays[1:16] == [2] * 15  # the seed's own 2 s loop while the report is young
    assert delays[16:19] == [3, 4.5, 6.75]
    assert delays[-1] == 10
    # For a report OSAI takes 60 s to make: fewer polls than the seed's 30.
    elapsed, polls = 0.0, 0
    while elapsed < 60:
        elapsed += _poll_delay(polls)
        polls += 1
    assert polls < 30


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_the_test_process_may_only_reach_loopback():
    """pytest-socket (--allow-hosts in pyproject): no test can reach the internet by mistake."""
    import socket

    from pytest_socket import SocketConnectBlockedError

    with pytest.raises(SocketConnectBlockedError), socket.create_connection(("127.0.0.2", 9), 1):
        pass
