"""Q8: the django-q2 and database settings the pipeline's safety depends on."""

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
    from reports.pipeline import DISPATCH_RUN_SECONDS

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
