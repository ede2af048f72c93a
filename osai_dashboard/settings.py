"""OSAI Usage settings: one module, driven by environment variables.

Every variable is listed in `.env.example`. The defaults are safe for one machine:
SQLite (WAL, IMMEDIATE transactions), the django-q2 ORM broker, and the local OSAI
sandbox as an extra region. Production sets DATABASE_URL, REDIS_URL, DJANGO_DEBUG=False,
DJANGO_SECRET_KEY and OSAI_TOKEN_KEYS.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # local state: SQLite files, the file cache, archives

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

TESTING = "pytest" in sys.modules or env.bool("OSAI_TESTING", default=False)

# --- Core -----------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
_DEV_SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"  # noqa: S105
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=_DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    "csp",
    "axes",
    # Sign-in (osai_dashboard/signin/): allauth's login, password and reset views, its
    # OpenID Connect provider (configured from settings alone) and two-factor sign-in (TOTP).
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Signed-in pages are never stored by a browser or proxy cache (S11).
    "reports.views.middleware.private_pages",
    # Changes are audited as made from a page (or the API), from the client's address (M7).
    "reports.views.middleware.audit_source",
    # A team that requires two-factor sends its password users to set it up (S15).
    "osai_dashboard.signin.middleware.two_factor_required",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Turns django-ratelimit's refusals into RATELIMIT_VIEW's page (S12).
    "django_ratelimit.middleware.RatelimitMiddleware",
    # Axes must be last: it turns lock-outs into responses.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "osai_dashboard.urls"
WSGI_APPLICATION = "osai_dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; IMMEDIATE takes the write
    # lock at BEGIN, so read-then-write transactions from several processes queue on
    # the busy timeout instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests that start a real worker need a file both processes can open; one per test
    # run, so that concurrent runs on one machine do not delete each other's database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
# Keep connections open between requests: opening one costs more than a status poll's queries.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and sessions ------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    # A file cache is shared by every process on the machine and costs no SQL query.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / ("test-cache" if TESTING else "cache")),
        }
    }
# cached_db: the badge's status poll reads the session from the cache, not the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- Auth ---------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Guessing spread over many addresses is slowed per account (osai_dashboard/login_throttle.py).
    "osai_dashboard.login_throttle.AccountThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# django-allauth's views under /accounts/ (osai_dashboard/signin/); `login` and `logout` name
# its login and logout views too.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
ACCOUNT_ADAPTER = "osai_dashboard.signin.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "osai_dashboard.signin.adapters.SocialAccountAdapter"
MFA_ADAPTER = "osai_dashboard.signin.adapters.MFAAdapter"
ACCOUNT_FORMS = {"login": "osai_dashboard.login_throttle.SignInForm"}
# People sign in with their username; there is no open sign-up (AccountAdapter).
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "email", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_SESSION_REMEMBER = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
# A reset asked for an address no account has sends nothing (as Django's own reset did).
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
# allauth's own counters add nothing to axes and the per-account slowdown for passwords (S8),
# and would lock an owner out from where they always sign in; two-factor codes keep allauth's
# per-account limit on wrong codes (`login_failed`, consumed by allauth.mfa only: our adapter
# skips it for passwords).
ACCOUNT_RATE_LIMITS = {"login": None, "reset_password": None}
# Two-factor sign-in (S15): an authenticator app (TOTP) and recovery codes; secrets encrypted
# with OSAI_TOKEN_KEYS (MFAAdapter). A code is refused a second time within its period.
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "OSAI Usage"
MFA_TOTP_TOLERANCE = 0
# Single sign-on by OpenID Connect (S14): on when an issuer and a client are set; its
# accounts are made on first sign-in only for an email in OSAI_OIDC_ALLOWED_DOMAINS, and
# linked to an existing account only when the provider says the email is verified.
OSAI_OIDC_ISSUER = env.str("OSAI_OIDC_ISSUER", default="")
OSAI_OIDC_CLIENT_ID = env.str("OSAI_OIDC_CLIENT_ID", default="")
OSAI_OIDC_CLIENT_SECRET = env.str("OSAI_OIDC_CLIENT_SECRET", default="")
OSAI_OIDC_NAME = env.str("OSAI_OIDC_NAME", default="single sign-on")
OSAI_OIDC_ALLOWED_DOMAINS = [
    d.strip().lower().lstrip("@") for d in env.list("OSAI_OIDC_ALLOWED_DOMAINS", default=[])
]
# Off: the login page offers single sign-on only, and password sign-ins are refused.
OSAI_PASSWORD_LOGIN = env.bool("OSAI_PASSWORD_LOGIN", default=True)
OIDC_PROVIDER_ID = "sso"
SOCIALACCOUNT_PROVIDERS: dict = {
    "openid_connect": {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": (
            [
                {
                    "provider_id": OIDC_PROVIDER_ID,
                    "name": OSAI_OIDC_NAME,
                    "client_id": OSAI_OIDC_CLIENT_ID,
                    "secret": OSAI_OIDC_CLIENT_SECRET,
                    "settings": {"server_url": OSAI_OIDC_ISSUER, "fetch_userinfo": True},
                }
            ]
            if OSAI_OIDC_ISSUER and OSAI_OIDC_CLIENT_ID
            else []
        ),
    }
}
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_VERIFICATION = "none"
SOCIALACCOUNT_EMAIL_REQUIRED = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_REQUESTS_TIMEOUT = 10
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Login throttling (S8): five failures per user and address, then a cool-off.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# allauth's login form names the field `login`; the backends see it as `username`.
AXES_USERNAME_CALLABLE = "osai_dashboard.signin.adapters.axes_username"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "locked_out.html"
# The client's address, not the proxy's, behind the documented proxy (S10).
AXES_CLIENT_IP_CALLABLE = "reports.views.http.client_ip"
# Per account, over every address (S8): after this many failures within the cool-off, the
# account takes one attempt per LOGIN_ACCOUNT_SLOWDOWN_SECONDS from an address it has not
# signed in from before (a slowdown, never a lock: its owner's known addresses are not slowed).
LOGIN_ACCOUNT_FAILURE_LIMIT = env.int("LOGIN_ACCOUNT_FAILURE_LIMIT", default=20)
LOGIN_ACCOUNT_SLOWDOWN_SECONDS = env.int("LOGIN_ACCOUNT_SLOWDOWN_SECONDS", default=60)
# Password reset exists only where mail is configured (S12), throttled per address and per
# email: django-ratelimit, on the shared cache.
PASSWORD_RESET_ENABLED = bool(env.str("EMAIL_URL", default=""))
PASSWORD_RESET_RATE = env.str("PASSWORD_RESET_RATE", default="5/h")
RATELIMIT_VIEW = "reports.views.http.too_many_requests"

# --- Internationalisation: every period is UTC, and the UI says so --------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files: served by whitenoise, compressed, hashed, cached forever --------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Plotly's partial bundle (bar, scatter, pie) from npm: 0.33 MB brotli vs 1.1 MB full.
    ("vendor/plotly", BASE_DIR / "node_modules" / "plotly.js-basic-dist-min"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security headers ------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Off by default so `make run` works over http://127.0.0.1; production turns it on.
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
# One trusted proxy in front (the README's production setup): it says whether the request
# came over https, and its X-Forwarded-For names the client (reports/views/http.py).
BEHIND_PROXY = env.bool("DJANGO_BEHIND_PROXY", default=False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Scripts come only from this server, with no inline code and no eval; charts are drawn by
# static/js/charts.js from JSON data islands, so script-src needs neither nonces nor hashes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- django-q2: our own rows are the source of truth; see docs/architecture.md -----------------
# timeout < retry so a running task is never started twice; max_attempts bounds redelivery;
# catch_up=False so a restarted cluster does not replay missed reconciler ticks.
Q_CLUSTER: dict = {
    "name": "osai",
    "workers": env.int("Q_WORKERS", default=4),  # tasks wait on OSAI, not the CPU
    "timeout": env.int("Q_TIMEOUT", default=60),
    "retry": env.int("Q_RETRY", default=90),
    "max_attempts": 3,
    "catch_up": False,
    "save_limit": 250,
    "ack_failures": True,
    "poll": 0.2,
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- OSAI ------------------------------------------------------------------------------------
# Only the operator chooses base URLs. Users pick a region name, never type a URL.
OSAI_REGIONS: dict[str, str] = {
    "eu": env.str("OSAI_EU_URL", default="https://app-eu.onestepai.com/api"),
    "us": env.str("OSAI_US_URL", default="https://app-us.onestepai.com/api"),
}
# The local OSAI sandbox (osai/sandbox/) as an extra region: off unless configured (S13).
# `make run` and the tests turn it on; `check --deploy` warns if it is on with DEBUG off.
OSAI_SANDBOX_URL = env.str(
    "OSAI_SANDBOX_URL", default="http://127.0.0.1:8765/api" if TESTING else ""
)
if OSAI_SANDBOX_URL:
    OSAI_REGIONS["sandbox"] = OSAI_SANDBOX_URL
OSAI_REGION_LABELS = {"eu": "OSAI EU", "us": "OSAI US", "sandbox": "Local OSAI sandbox"}
# Where OSAI's pre-signed report files may be downloaded from (https only).
OSAI_DOWNLOAD_HOSTS = env.list("OSAI_DOWNLOAD_HOSTS", default=["onestepai.storage.onestepcloud.pl"])

# Fernet keys for access tokens, first is primary. Separate from SECRET_KEY on purpose.
# The default is for local development only; production must set its own.
_DEV_TOKEN_KEY = "ZGV2LW9ubHktb3NhaS10b2tlbi1rZXktMzItYnl0ZXM="  # noqa: S105
OSAI_TOKEN_KEYS = env.list("OSAI_TOKEN_KEYS", default=[_DEV_TOKEN_KEY])

OSAI_HTTP_TIMEOUT_SECONDS = env.float("OSAI_HTTP_TIMEOUT_SECONDS", default=15.0)
OSAI_RETRY_AFTER_CAP_SECONDS = env.float("OSAI_RETRY_AFTER_CAP_SECONDS", default=10.0)
OSAI_DOWNLOAD_MAX_BYTES = env.int("OSAI_DOWNLOAD_MAX_BYTES", default=20 * 1024 * 1024)

# The pipeline (reports/pipeline/).
OSAI_POLL_FIRST_SECONDS = env.float("OSAI_POLL_FIRST_SECONDS", default=1.0)
OSAI_POLL_STEADY_SECONDS = env.float("OSAI_POLL_STEADY_SECONDS", default=2.0)
OSAI_POLL_STEADY_PERIOD_SECONDS = env.float("OSAI_POLL_STEADY_PERIOD_SECONDS", default=30.0)
OSAI_POLL_MAX_SECONDS = env.float("OSAI_POLL_MAX_SECONDS", default=10.0)
OSAI_BUCKET_DEADLINE_SECONDS = env.int("OSAI_BUCKET_DEADLINE_SECONDS", default=30 * 60)
OSAI_BUCKET_MAX_ATTEMPTS = env.int("OSAI_BUCKET_MAX_ATTEMPTS", default=3)
# Politeness and fairness (F1, F4): OSAI reports in flight at once per connection, per OSAI
# account (connections with one token share it) and per person; steps waiting in the queue.
OSAI_MAX_IN_FLIGHT_PER_CONNECTION = env.int("OSAI_MAX_IN_FLIGHT_PER_CONNECTION", default=16)
OSAI_MAX_IN_FLIGHT_PER_ACCOUNT = env.int("OSAI_MAX_IN_FLIGHT_PER_ACCOUNT", default=16)
OSAI_MAX_IN_FLIGHT_PER_PERSON = env.int("OSAI_MAX_IN_FLIGHT_PER_PERSON", default=32)
OSAI_QUEUE_DEPTH = env.int("OSAI_QUEUE_DEPTH", default=64)
# Background work (tracking: a new connection's history, the hourly refresh) starts an OSAI
# report only while this many slots stay free at its connection, its OSAI account and its
# person, and is queued only while as many steps' room stays free in the broker: what people
# ask for never waits behind it for more than a poll.
OSAI_BACKGROUND_RESERVE = env.int("OSAI_BACKGROUND_RESERVE", default=2)
# Requests (F2, F3): report requests per person per hour, parts waiting per person, and how
# long an identical request counts as a double click.
OSAI_REPORT_REQUESTS_PER_HOUR = env.int("OSAI_REPORT_REQUESTS_PER_HOUR", default=60)
OSAI_MAX_WAITING_BUCKETS_PER_PERSON = env.int("OSAI_MAX_WAITING_BUCKETS_PER_PERSON", default=1500)
OSAI_DUPLICATE_REQUEST_SECONDS = env.int("OSAI_DUPLICATE_REQUEST_SECONDS", default=10)
# Connections a person may add (or try to: each is checked with OSAI) in an hour; each new one
# starts fetching its history, whose OSAI reports count against the waiting cap above.
OSAI_CONNECTION_ADDS_PER_HOUR = env.int("OSAI_CONNECTION_ADDS_PER_HOUR", default=10)
OSAI_MAX_BUCKETS_PER_REPORT = env.int("OSAI_MAX_BUCKETS_PER_REPORT", default=400)
OSAI_STEP_LEASE_SECONDS = env.int("OSAI_STEP_LEASE_SECONDS", default=75)

# --- Cost control: tracking, alerts and digests (reports/spend/: tracking, budgets, notify) ---
# Minutes between tracking refreshes of every working connection's open day (one OSAI report
# per connection per refresh); closed days are fetched once.
OSAI_TRACK_INTERVAL = env.int("OSAI_TRACK_INTERVAL", default=60)
# What tracking holds for every working connection, all flags on: the last N closed calendar
# months as one bucket each ("last 12 months" and "year to date" have their comparison
# periods too), and every day since the first day of the previous calendar "quarter" (at
# most 184 days) or "month". Tests keep the window small (they count OSAI calls).
OSAI_HELD_MONTHS = env.int("OSAI_HELD_MONTHS", default=2 if TESTING else 25)
OSAI_HELD_DAYS_SINCE = env.str("OSAI_HELD_DAYS_SINCE", default="month" if TESTING else "quarter")
# Email: django-environ's EMAIL_URL (smtp://user:pass@host:587 …). By default messages are
# written as files into var/mail, so `make run` needs no mail server.
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="OSAI Usage <osai-usage@localhost>")
# Where people reach this site, for links in emails (digests' CSV links).
OSAI_USAGE_BASE_URL = env.str("OSAI_USAGE_BASE_URL", default="http://127.0.0.1:8000")
# Budget webhooks go to https on public addresses only (A2); this lets development and tests
# post to loopback over http. Never in production.
ALERT_WEBHOOK_ALLOW_LOCAL = env.bool("ALERT_WEBHOOK_ALLOW_LOCAL", default=False)
ALERT_WEBHOOK_TIMEOUT_SECONDS = env.float("ALERT_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
ALERT_DELIVERY_MAX_ATTEMPTS = env.int("ALERT_DELIVERY_MAX_ATTEMPTS", default=5)
ALERT_DELIVERY_RETRY_SECONDS = env.float("ALERT_DELIVERY_RETRY_SECONDS", default=30.0)
# A send that has not finished within this long is taken over (its worker died): longer than
# the webhook timeout and an SMTP conversation.
ALERT_DELIVERY_LEASE_SECONDS = env.int("ALERT_DELIVERY_LEASE_SECONDS", default=60)
# Every send, email or webhook, as a whole (connecting, TLS, every byte of the answer): past it
# the socket is shut and the attempt fails (A7). Never longer than the lease, whatever is set.
ALERT_DELIVERY_DEADLINE_SECONDS = env.float("ALERT_DELIVERY_DEADLINE_SECONDS", default=30.0)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# A team invitation's link works this many days, once (M6).
OSAI_INVITATION_DAYS = env.int("OSAI_INVITATION_DAYS", default=7)

# --- Retention: nothing grows for ever (reports/retention.py, R1-R3) --------------------------
# Pruned daily (a schedule) and by `manage.py prune [--dry-run]`. What a page, a budget, an
# export or the spend ledger still reads is never pruned, whatever these say.
# OSAI's worker webhooks feed the activity page ("what just ran"); after three months they are
# history nobody reads there, and spend comes from OSAI's reports, never from them.
OSAI_RETAIN_WEBHOOK_EVENTS_DAYS = env.int("OSAI_RETAIN_WEBHOOK_EVENTS_DAYS", default=90)
# Sent and failed alert and digest messages: the budget page and the alert log show why a
# message failed; half a year covers two quarterly reviews. Waiting ones are never pruned.
OSAI_RETAIN_DELIVERIES_DAYS = env.int("OSAI_RETAIN_DELIVERIES_DAYS", default=180)
# Alerts, in calendar months counting this one: 13 keeps the alert log's year and the same
# month last year. Never fewer than 2 (this month and the last: a threshold alerts once per
# month, A1), and never one a kept message still names.
OSAI_RETAIN_ALERTS_MONTHS = env.int("OSAI_RETAIN_ALERTS_MONTHS", default=13)
# OSAI's raw answer and archived JSON file of a bucket no report links, the ledger does not
# hold and tracking does not keep (its report was deleted): nobody can open it any more. The
# bucket's totals stay (a later request still reuses a closed bucket); the raw JSON goes a
# month after the bucket finished, long enough to undo a mistaken delete from a backup.
OSAI_RETAIN_RAW_JSON_DAYS = env.int("OSAI_RETAIN_RAW_JSON_DAYS", default=30)
# Anomalies, by the month of their day, counting this one: 13, like alerts (the Anomalies page
# and digests read a year back). Never one a kept message still names (R4).
OSAI_RETAIN_ANOMALIES_MONTHS = env.int("OSAI_RETAIN_ANOMALIES_MONTHS", default=13)

# --- Anomalies: a day whose usage is far from its usual (reports/spend/anomalies.py, N1-N4) ---
# A closed held day is flagged when its usage of a priced metric is above the top of the
# usual range of the last OSAI_ANOMALY_WINDOW_DAYS held days before it (median and MAD of
# the raw usage) and the excess costs at least OSAI_ANOMALY_MIN_AMOUNT in the book's currency
# (pennies never alert); never before OSAI_ANOMALY_MIN_HISTORY_DAYS held days. Storage paid
# for while no training, conversion or prediction ran for OSAI_ANOMALY_IDLE_DAYS days is a
# finding of its own, when it costs at least the minimum amount a month.
# Off: tracking's refresh judges no day for anomalies.
OSAI_ANOMALIES = env.bool("OSAI_ANOMALIES", default=True)
OSAI_ANOMALY_MIN_AMOUNT = env.str("OSAI_ANOMALY_MIN_AMOUNT", default="5.00")
OSAI_ANOMALY_WINDOW_DAYS = env.int("OSAI_ANOMALY_WINDOW_DAYS", default=28)
OSAI_ANOMALY_MIN_HISTORY_DAYS = env.int("OSAI_ANOMALY_MIN_HISTORY_DAYS", default=7)
OSAI_ANOMALY_IDLE_DAYS = env.int("OSAI_ANOMALY_IDLE_DAYS", default=14)
# An anomaly alerts (A12) only when its day is at most this many days before the day it was
# found: a day is judged the refresh after it closes, so 3 covers a weekend's outage, while
# a new connection's history (months of past days) never floods anyone with old spikes.
OSAI_ANOMALY_ALERT_DAYS = env.int("OSAI_ANOMALY_ALERT_DAYS", default=3)

# --- Logging: to stderr; the OSAI client never logs tokens, JWTs or signed URLs ----------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Paths in Django's request logs would carry a webhook URL's secret (log_filters.py).
    "filters": {"webhook_secrets": {"()": "osai_dashboard.log_filters.RedactWebhookSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # urllib3 logs request lines at DEBUG, and a signed link's query string with them.
    "loggers": {
        "django.server": {"level": "WARNING", "filters": ["webhook_secrets"]},
        "django.request": {"filters": ["webhook_secrets"]},
        "urllib3": {"level": "WARNING"},
        # django-q2 logs every task at INFO; our pipeline logs what matters.
        "django-q": {"level": env.str("Q_LOG_LEVEL", default="WARNING")},
    },
}

# --- Integrations: OSAI's worker webhooks and the read-only API (W1, W2) -----------------------
# A webhook body larger than this is refused (413); deliveries per connection are rate-limited.
OSAI_WEBHOOK_MAX_BYTES = env.int("OSAI_WEBHOOK_MAX_BYTES", default=64 * 1024)
OSAI_WEBHOOK_RATE = env.str("OSAI_WEBHOOK_RATE", default="120/m")
# ... and per person, over all of their connections.
OSAI_WEBHOOK_PERSON_RATE = env.str("OSAI_WEBHOOK_PERSON_RATE", default="120/m")
# A finished task refreshes the connection's open day this many seconds after the first event of
# a burst: the rest of the burst joins the same refresh (one OSAI report). And the open day is
# asked for at most once per connection per this many seconds, however the events come.
OSAI_WEBHOOK_REFRESH_DELAY_SECONDS = env.int("OSAI_WEBHOOK_REFRESH_DELAY_SECONDS", default=60)
# API requests per token, and failed API sign-ins per client address (django-ratelimit).
API_RATE = env.str("API_RATE", default="120/m")
API_FAILED_AUTH_RATE = env.str("API_FAILED_AUTH_RATE", default="30/m")
