"""Settings shared by every environment; every value comes from the environment.

Each setting has a working local default so a fresh checkout runs. `.env.example` lists them.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env is optional; real environment variables always win over it.
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-insecure-secret-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "csp",
    "accounts",
    "trading",
    "marketdata",
]

MIDDLEWARE = [
    # Outermost: a lost or saturated database answers 503, never 500.
    "tredye.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the 429 page.
    "axes.middleware.AxesMiddleware",
]

# A CSRF failure on the JSON API is answered in its error shape (tredye/api.py).
CSRF_FAILURE_VIEW = "tredye.api.csrf_failure"

ROOT_URLCONF = "tredye.urls"
ASGI_APPLICATION = "tredye.asgi.application"

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
                "tredye.context_processors.platform",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/tredye"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Fail fast when PostgreSQL is away instead of hanging a request.
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int(
    "DATABASE_CONNECT_TIMEOUT", default=3
)
# Connection pool, for the web process (tredye/asgi.py turns it on). Under ASGI each request
# runs in a thread of its own, and a persistent connection per thread (CONN_MAX_AGE) outlived
# its thread: a burst of requests left dozens of idle connections until PostgreSQL refused new
# clients. The web process borrows from a pool of its own instead (Django's psycopg pool): at
# most DATABASE_POOL_MAX_SIZE connections, handed back at the end of each request; a
# connection found broken when handed out is replaced. A request that waits
# DATABASE_POOL_TIMEOUT seconds for one is answered 503 (tredye.middleware). Prepared
# statements (tredye.db) stay with the pooled connection. The workers are single-threaded and
# keep one connection (DATABASE_CONN_MAX_AGE, checked before reuse): pooled, each batch paid a
# check on hand-out, which tripled their PostgreSQL CPU at rest (docs/performance/0009).
DATABASE_POOL = env.bool("DATABASE_POOL", default=False)
DATABASE_POOL_OPTIONS = {
    "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
    "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
    "timeout": env.float("DATABASE_POOL_TIMEOUT", default=5.0),
}
if DATABASE_POOL:
    DATABASES["default"]["OPTIONS"]["pool"] = DATABASE_POOL_OPTIONS
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections
# Web (daphne) processes `python -m tredye.serve` starts on one listening socket (the Procfile's
# web line): one per CPU this process may use, by default. Each has a pool of its own, so the
# web may hold WEB_PROCESSES x DATABASE_POOL_MAX_SIZE connections.
_usable_cpus = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
WEB_PROCESSES = env.int("WEB_PROCESSES", default=_usable_cpus)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT: Path | None = BASE_DIR / "var" / "staticfiles"
# npm packages (chart library and the like) are installed at setup, never committed.
NODE_MODULES_DIR = BASE_DIR / "node_modules"
# The chart library's builds, as static/vendor/lightweight-charts/ (package.json pins it).
STATICFILES_DIRS: list[Path | tuple[str, Path]] = [
    BASE_DIR / "static",
    ("vendor/lightweight-charts", NODE_MODULES_DIR / "lightweight-charts" / "dist"),
]

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")

# RedisPubSubChannelLayer: one PUBLISH per group send, fanned out by Redis to each subscribed
# process and in-process to every socket; the list-based layer writes one Redis list entry per
# group member per message. Market data is latest-wins, so at-most-once delivery is the right
# trade (see docs/decisions/0002-pubsub-channel-layer.md).
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [env("CHANNEL_LAYER_REDIS_URL", default=REDIS_URL)],
            "prefix": env("CHANNEL_LAYER_PREFIX", default="tredye"),
        },
    },
}

# Kafka: kafka-python only; works the same against Apache Kafka and the local Tansu broker.
KAFKA_BOOTSTRAP_SERVERS = env.list("KAFKA_BOOTSTRAP_SERVERS", default=["127.0.0.1:9092"])
KAFKA_TOPIC_PREFIX = env("KAFKA_TOPIC_PREFIX", default="tredye.")
KAFKA_PARTITIONS = env.int("KAFKA_PARTITIONS", default=3)
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", default=1)
KAFKA_SECURITY_PROTOCOL = env("KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT")
KAFKA_SASL_MECHANISM = env("KAFKA_SASL_MECHANISM", default="")
KAFKA_SASL_USERNAME = env("KAFKA_SASL_USERNAME", default="")
KAFKA_SASL_PASSWORD = env("KAFKA_SASL_PASSWORD", default="")
KAFKA_REQUEST_TIMEOUT_MS = env.int("KAFKA_REQUEST_TIMEOUT_MS", default=10000)
KAFKA_FETCH_MAX_WAIT_MS = env.int("KAFKA_FETCH_MAX_WAIT_MS", default=10)
KAFKA_METADATA_MAX_AGE_MS = env.int("KAFKA_METADATA_MAX_AGE_MS", default=5000)

# Stream worker and WebSocket protocol.
STREAM_FLUSH_INTERVAL_MS = env.int("STREAM_FLUSH_INTERVAL_MS", default=16)
STREAM_STALE_AFTER_S = env.float("STREAM_STALE_AFTER_S", default=5.0)
WS_HEARTBEAT_INTERVAL_S = env.float("WS_HEARTBEAT_INTERVAL_S", default=5.0)
WS_IDLE_TIMEOUT_S = env.float("WS_IDLE_TIMEOUT_S", default=30.0)
WS_MAX_SUBSCRIPTIONS = env.int("WS_MAX_SUBSCRIPTIONS", default=200)
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=16384)
# Open sockets per signed-in user and per client address (TRUSTED_PROXIES), counted in Redis
# (REDIS_URL) across every web process; one more is told `too_many_sockets` and closed with
# 4429. Each socket's entry expires unless its heartbeat renews it, so a crashed process frees
# its sockets' slots within a few heartbeats. With Redis away the limits are not applied
# (logged). 0 turns a limit off.
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=20)
WS_MAX_SOCKETS_PER_IP = env.int("WS_MAX_SOCKETS_PER_IP", default=60)
# While the live stream is unavailable (Redis away), pages poll the ticker snapshot endpoint
# (prices the feed saves in PostgreSQL) this often.
STREAM_FALLBACK_POLL_S = env.float("STREAM_FALLBACK_POLL_S", default=2.0)

# Reference feed defaults (the command's flags override them).
FEED_RATE = env.float("FEED_RATE", default=20.0)

# Order path (trading app): matcher group commit, outbox relay, market maker.
# Most commands one matcher transaction applies; the poll wait when the topic is idle.
MATCHER_BATCH_SIZE = env.int("MATCHER_BATCH_SIZE", default=1000)
MATCHER_POLL_TIMEOUT_MS = env.int("MATCHER_POLL_TIMEOUT_MS", default=50)
# How often the outbox relay looks for unsent rows when it found none last time.
OUTBOX_RELAY_INTERVAL_MS = env.int("OUTBOX_RELAY_INTERVAL_MS", default=5)
# A command the broker acknowledged but the matcher has not applied after this many seconds is
# sent again (the broker may have lost it); duplicates are harmless, the matcher skips them.
OUTBOX_RESEND_AFTER_S = env.float("OUTBOX_RESEND_AFTER_S", default=15.0)
# How often the relays compare the topics' ids with the ones their cursors were kept for.
OUTBOX_IDENTITY_CHECK_S = env.float("OUTBOX_IDENTITY_CHECK_S", default=2.0)
# On a topic that lost its history, the matcher's book and account events of this many
# seconds are sent again (every trade is; decision 0009).
OUTBOX_REPUBLISH_WINDOW_S = env.float("OUTBOX_REPUBLISH_WINDOW_S", default=60.0)
# Degraded states: orders waiting unapplied longer than this; a consumer with input and no
# progress for longer than this; a worker silent for longer than this.
ORDERS_QUEUED_AFTER_S = env.float("ORDERS_QUEUED_AFTER_S", default=5.0)
CONSUMER_STALLED_AFTER_S = env.float("CONSUMER_STALLED_AFTER_S", default=10.0)
WORKER_SILENT_AFTER_S = env.float("WORKER_SILENT_AFTER_S", default=15.0)
# Market maker: levels per side, distance between levels and from the reference (bps),
# size per level in lots, the most base inventory (in lots) it may be long or short of its
# starting inventory, and how far (bps) the reference may move before it requotes.
MARKET_MAKER_USERNAME = env("MARKET_MAKER_USERNAME", default="market-maker")
MARKET_MAKER_LEVELS = env.int("MARKET_MAKER_LEVELS", default=3)
MARKET_MAKER_SPREAD_BPS = env.int("MARKET_MAKER_SPREAD_BPS", default=10)
MARKET_MAKER_STEP_BPS = env.int("MARKET_MAKER_STEP_BPS", default=5)
MARKET_MAKER_LEVEL_LOTS = env.int("MARKET_MAKER_LEVEL_LOTS", default=10)
MARKET_MAKER_MAX_INVENTORY_LOTS = env.int("MARKET_MAKER_MAX_INVENTORY_LOTS", default=200)
MARKET_MAKER_REQUOTE_BPS = env.int("MARKET_MAKER_REQUOTE_BPS", default=10)
# How often (ms) it re-checks a symbol whose price has not moved: refills levels that traded.
MARKET_MAKER_REFRESH_MS = env.int("MARKET_MAKER_REFRESH_MS", default=2000)

# Order entry limit (trading API): place, cancel and cancel-all requests per account per
# second; past it a request is answered 429 with Retry-After and changes nothing. 0 turns it
# off. Counted in Redis (REDIS_URL), so it holds across web processes; with Redis away the
# limit is not applied (logged) rather than refusing every order.
ORDER_RATE_LIMIT_PER_S = env.int("ORDER_RATE_LIMIT_PER_S", default=20)

# Celery: Redis broker, results off (tasks record their own outcome in PostgreSQL).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/1")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE: dict = {}
# End of the trading day (UTC, HH:MM): every DAY order expires then (trading.tasks).
TRADING_DAY_END_UTC = env("TRADING_DAY_END_UTC", default="00:00")
CELERY_BEAT_SCHEDULE["expire-day-orders"] = {
    "task": "trading.tasks.expire_day_orders",
    "schedule": crontab(
        hour=TRADING_DAY_END_UTC.split(":")[0], minute=TRADING_DAY_END_UTC.split(":")[1]
    ),
}
# Reconciliation (trading.reconcile) every this many seconds; how long a run waits for the
# matcher's digests of its books (a book not answered in time is reported unchecked).
RECONCILE_INTERVAL_S = env.float("RECONCILE_INTERVAL_S", default=300.0)
RECONCILE_DIGEST_TIMEOUT_S = env.float("RECONCILE_DIGEST_TIMEOUT_S", default=10.0)
CELERY_BEAT_SCHEDULE["reconcile"] = {
    "task": "trading.tasks.reconcile",
    "schedule": RECONCILE_INTERVAL_S,
}
# Settlement (trading.tasks.settle, decision 0015): every SETTLEMENT_INTERVAL_S for today's
# trade date, so T+0 trades settle the same day and T+N ones early on their day.
SETTLEMENT_INTERVAL_S = env.float("SETTLEMENT_INTERVAL_S", default=300.0)
CELERY_BEAT_SCHEDULE["settle"] = {
    "task": "trading.tasks.settle",
    "schedule": SETTLEMENT_INTERVAL_S,
}
# Daily statements of the day that just ended, this many minutes after TRADING_DAY_END_UTC
# (after DAY orders expire).
STATEMENTS_AFTER_DAY_END_MIN = env.int("STATEMENTS_AFTER_DAY_END_MIN", default=5)
_statements_at = (
    int(TRADING_DAY_END_UTC.split(":")[0]) * 60
    + int(TRADING_DAY_END_UTC.split(":")[1])
    + STATEMENTS_AFTER_DAY_END_MIN
) % (24 * 60)
CELERY_BEAT_SCHEDULE["store-statements"] = {
    "task": "trading.tasks.store_statements",
    "schedule": crontab(hour=_statements_at // 60, minute=_statements_at % 60),
}

# Addresses or networks of the reverse proxies in front of daphne (comma-separated, e.g.
# 127.0.0.1 when the proxy runs on the same host). Only a request from one of them has its
# X-Forwarded-For read for the client's address (login throttling, sockets per address);
# empty: the connection's peer is the client and the header is ignored (tredye.client_ip).
# A value that is not an address or network stops the process at start, not at a request.
TRUSTED_PROXIES = [
    str(ipaddress.ip_network(proxy.strip(), strict=False))
    for proxy in env.list("TRUSTED_PROXIES", default=[])
    if proxy.strip()
]

# Prometheus metrics (tredye.metrics, served at /metrics). Each process writes its values to
# files in this directory (prometheus-client's multiprocess mode; one directory per host, shared
# by every Tredye process there, created at start; relative to the repository unless absolute),
# and a scrape merges them. `make run` and test runs start it empty.
PROMETHEUS_MULTIPROC_DIR = str(BASE_DIR / env("PROMETHEUS_MULTIPROC_DIR", default="var/prometheus"))
# Who may read /metrics: addresses or networks (comma-separated), the client's address as
# tredye.client_ip finds it (so behind a proxy on this host, list it in TRUSTED_PROXIES);
# anyone else gets a 404. Empty: no one. A bad entry stops the process at start.
METRICS_ALLOWED_IPS = [
    str(ipaddress.ip_network(entry.strip(), strict=False))
    for entry in env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
    if entry.strip()
]

# Sign-in pages (accounts app). The admin keeps its own login at /admin/login/.
LOGIN_URL = env("LOGIN_URL", default="/accounts/login/")
LOGIN_REDIRECT_URL = env("LOGIN_REDIRECT_URL", default="/accounts/balances/")
LOGOUT_REDIRECT_URL = env("LOGOUT_REDIRECT_URL", default="/")
# Whether anyone may create an account at /accounts/signup/ (off: operators create users).
ACCOUNTS_SIGNUP_OPEN = env.bool("ACCOUNTS_SIGNUP_OPEN", default=True)
# Rows per page of the ledger history on the balances page.
ACCOUNTS_LEDGER_PAGE_SIZE = env.int("ACCOUNTS_LEDGER_PAGE_SIZE", default=25)

# Login throttling (django-axes), for /accounts/login/ and /admin/login/ alike: every
# sign-in goes through authenticate(), which the Axes backend guards. After AXES_FAILURE_LIMIT
# failed sign-ins that sign-in and every one after it, even with the right password, gets
# the 429 page (accounts.views.login_locked_out) until AXES_COOLOFF_MINUTES have passed
# since the last failure; a failure during the lockout starts the wait again.
# Locked by username and address together: by username alone anyone could lock a trader out
# of the venue, from anywhere, with a few wrong passwords (at the worst moment of a market);
# by address alone one guesser locks out a whole office or mobile carrier behind one NAT
# address. The pair stops guessing an account's password from an address and locks out no
# one else. Attempts are kept in PostgreSQL (shared by every web process).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a successful sign-in clears that pair's failures
AXES_LOCKOUT_CALLABLE = "accounts.views.login_locked_out"
AXES_CLIENT_IP_CALLABLE = "tredye.client_ip.request_client_ip"
AXES_VERBOSE = False  # one warning line per failure and per lockout is enough

# Content-Security-Policy (django-csp) on every response: scripts, styles, images, fonts
# and connections from this site only; no inline script or style (the pages keep theirs in
# static/), no plugins, no framing, forms post here only. 'self' in connect-src covers the
# WebSocket on the same host (ws: and wss:) as CSP Level 3 says; production adds wss:// for
# each allowed host for browsers that predate it.
CONTENT_SECURITY_POLICY: dict[str, Any] = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "kafka": {"level": env("KAFKA_LOG_LEVEL", default="WARNING")},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}

# Demo logins created by `manage.py seed_demo` (local runs only; change them anywhere shared).
DEMO_TRADER_PASSWORD = env("DEMO_TRADER_PASSWORD", default="demo-trader-2026")
DEMO_ADMIN_PASSWORD = env("DEMO_ADMIN_PASSWORD", default="admin-2026")
