"""Settings, 12-factor: every deployment-specific value comes from the environment.

With no environment at all the service runs on an embedded default (SQLite under var/ and
Celery's filesystem broker), so `make run` needs no server; set DATABASE_URL and REDIS_URL for
PostgreSQL and Redis.
"""

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import environ

from apps.core.limits import MAX_REQUEST_BODY_BYTES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]", "testserver"]),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env("DEBUG")
# The fallback key only exists so a first run works; production sets SECRET_KEY.
SECRET_KEY = env("SECRET_KEY", default="insecure-dev-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env("SITE_URL", default="http://localhost:8000").rstrip("/")

# Fernet keys for secrets at rest, comma-separated, newest first (MultiFernet rotation).
# Derived from SECRET_KEY when unset so a first run works; set it explicitly in production.
FIELD_ENCRYPTION_KEYS = env.list(
    "FIELD_ENCRYPTION_KEY",
    default=[base64.urlsafe_b64encode(hashlib.sha256(f"field-encryption:{SECRET_KEY}".encode()).digest()).decode()],
)

INSTALLED_APPS = [
    "apps.core.apps.RolesAdminConfig",  # django.contrib.admin, admitting people by role
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "formtools",
    "auditlog",
    "apps.core",
    "apps.audit",
    "apps.incidents",
    "apps.pagerduty",
    "apps.oncall",
    "apps.runbooks",
    "apps.sandbox",
    "apps.ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the request: bounds its size, refuses NUL bytes, keeps API errors JSON.
    "apps.core.middleware.RequestLimitsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.audit.middleware.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

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

WSGI_APPLICATION = "config.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # web, worker and beat share the file: WAL lets readers proceed during a write, IMMEDIATE
    # takes the write lock up front instead of failing with "database is locked" mid-transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": 30}
    )
# Connections are kept between requests and between worker tasks, checked before reuse: opening
# one (a PostgreSQL backend, authentication) costs more than a runbook step's own statements.
# CONN_MAX_AGE=0 closes it after each request and task.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "DATABASE_PREPARED_STATEMENTS", default=True
):
    # The parameters travel apart from the statement, and a statement a connection has run 5 times
    # is prepared: PostgreSQL stops parsing and planning the engine's same few statements again and
    # again (about a third of its CPU per run, docs/benchmarks.md). Off for a pooler that cannot
    # keep prepared statements (PgBouncer in transaction mode before 1.21).
    DATABASES["default"].setdefault("OPTIONS", {}).update({"server_side_binding": True, "prepare_threshold": 5})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Roles are groups (docs/permissions.md): permissions given to a single user are ignored.
AUTHENTICATION_BACKENDS = ["apps.core.roles.GroupPermissionsBackend"]
# Admin forms get the API's body limit (the middleware answers 413 above it); Django's own check
# is the second line of defence.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Each view declares per action what it needs; an undeclared one is refused (apps.core.permissions).
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.ActionPermissions"],
    # JSON in, JSON out: every answer (errors included) is JSON, every body is bounded JSON.
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.ApiAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Runbook automation API",
    "DESCRIPTION": "Incidents, runbooks and runs; PagerDuty connections.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page hold no data, but describe every door: a role is needed to read them.
    "SERVE_PERMISSIONS": ["apps.core.permissions.HasAnyRole"],
    # Separate request and response components: what a client may send is not what it reads back.
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Audit log (django-auditlog; what is recorded: docs/permissions.md) ------------------------
AUDITLOG_STORE_JSON_CHANGES = True

# --- Celery -------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
# The host means nothing to the filesystem broker; naming one spares a warning in every process.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Otherwise kombu keeps its exchange table in ./control, beside the code.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu looks for new messages once a second by default: most of a status change's latency
        # on the embedded default. A directory listing every 50 ms costs next to nothing.
        "polling_interval": env.float("CELERY_FILESYSTEM_POLLING_INTERVAL", default=0.05),
    }
    # kombu's filesystem transport, writing each message whole before a worker can see it (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:FilesystemTransport"
else:
    # A message whose worker died is redelivered after this many seconds (Redis has no
    # broker-side acks); keep it longer than the longest step, including its retries.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900)}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport with a fix for a worker that died when Redis restarted (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", default="celery")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup would close the database connection around every task; config/celery.py
# applies Django's own rule instead (CONN_MAX_AGE, CONN_HEALTH_CHECKS), as for a web request.
CELERY_DB_REUSE_MAX = 2**31
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep our LOGGING (and its secret redaction) in workers
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The recovery sweep re-queues work whose message was lost (broker down when a change was saved,
# Redis restarted without persistence, a worker killed): every RUN_RECOVERY_INTERVAL seconds,
# events and pending runs older than RUN_RECOVERY_PENDING_AFTER_SECONDS (younger ones may still
# be on their way through the queue), and runs whose lease expired. Re-queuing is always safe.
RUN_RECOVERY_INTERVAL = env.int("RUN_RECOVERY_INTERVAL", default=15)
RUN_RECOVERY_PENDING_AFTER_SECONDS = env.int("RUN_RECOVERY_PENDING_AFTER_SECONDS", default=30)
# How often beat looks for control steps past their timeout (a wait ends at most this late).
RUN_WAIT_SWEEP_INTERVAL = env.int("RUN_WAIT_SWEEP_INTERVAL", default=30)
# Operations (apps.ops): /healthz calls the worker failing when its heartbeat is older than
# HEARTBEAT_STALE_AFTER_SECONDS; /metrics answers a scraper sending `Authorization: Bearer
# METRICS_TOKEN` (unset: only signed-in people with ops.view_metrics).
HEARTBEAT_INTERVAL_SECONDS = env.int("HEARTBEAT_INTERVAL_SECONDS", default=10)
HEARTBEAT_STALE_AFTER_SECONDS = env.int("HEARTBEAT_STALE_AFTER_SECONDS", default=3 * HEARTBEAT_INTERVAL_SECONDS + 15)
METRICS_TOKEN = env("METRICS_TOKEN", default="")
if env("PROMETHEUS_MULTIPROC_DIR", default=""):
    # prometheus-client's multiprocess mode: each process writes its counters here (apps/ops/metrics.py).
    Path(env("PROMETHEUS_MULTIPROC_DIR")).mkdir(parents=True, exist_ok=True)
CELERY_BEAT_SCHEDULE = {
    "recover-stalled-runs": {
        "task": "apps.runbooks.tasks.recover_stalled_runs",
        "schedule": timedelta(seconds=RUN_RECOVERY_INTERVAL),
        # A sweep not started within an interval is superseded by the next one.
        "options": {"expires": RUN_RECOVERY_INTERVAL},
    },
    # Waiting runs: approvals and status waits past their timeout_minutes (on_timeout decides).
    "sweep-waiting-runs": {
        "task": "apps.runbooks.tasks.sweep_waits",
        "schedule": timedelta(seconds=RUN_WAIT_SWEEP_INTERVAL),
        "options": {"expires": RUN_WAIT_SWEEP_INTERVAL},
    },
    # On-call syncs whose worker died or whose message was lost are taken up again.
    "oncall-sync-recovery": {
        "task": "apps.oncall.tasks.sync_recover",
        "schedule": timedelta(seconds=env.int("RUN_RECOVERY_INTERVAL", default=60)),
    },
    # PagerDuty webhooks stored while the broker was away (or whose worker died) are processed.
    "pagerduty-webhook-recovery": {
        "task": "apps.pagerduty.tasks.recover_webhook_deliveries",
        "schedule": timedelta(seconds=RUN_RECOVERY_INTERVAL),
        "options": {"expires": RUN_RECOVERY_INTERVAL},
    },
    # /healthz's worker check: a task beat sends and a worker executes (apps.ops.tasks).
    "heartbeat": {
        "task": "apps.ops.tasks.heartbeat",
        "schedule": timedelta(seconds=HEARTBEAT_INTERVAL_SECONDS),
        "options": {"expires": HEARTBEAT_INTERVAL_SECONDS},
    },
    # On-call re-sync from PagerDuty: off unless ONCALL_SYNC_INTERVAL_MINUTES is set.
    **(
        {
            "oncall-sync": {
                "task": "apps.oncall.tasks.sync_periodic",
                "schedule": timedelta(minutes=env.int("ONCALL_SYNC_INTERVAL_MINUTES")),
            }
        }
        if env.int("ONCALL_SYNC_INTERVAL_MINUTES", default=0) > 0
        else {}
    ),
}

# --- Runbook engine -------------------------------------------------------------------------
# How long a worker owns a run before another may take it over (renewed between steps).
RUNBOOK_RUN_LEASE_SECONDS = env.int("RUNBOOK_RUN_LEASE_SECONDS", default=120)
# How long a worker planning or applying an on-call sync owns it without a sign of life (renewed
# while it works and while it waits out PagerDuty's rate limit) before another worker takes over.
ONCALL_SYNC_LEASE_SECONDS = env.int("ONCALL_SYNC_LEASE_SECONDS", default=120)

# Run records (runs, steps, every exchange with PagerDuty) are kept: nobody may delete them in the
# admin, nor the runbooks and incidents they belong to, unless this is set.
RUN_RECORDS_DELETABLE = env.bool("RUN_RECORDS_DELETABLE", default=False)

# --- PagerDuty client -----------------------------------------------------------------------
# How long PagerDuty's state, as a webhook or a read last told it, is trusted before a step that
# would reuse a linked incident asks again (GET /incidents/{id}).
PAGERDUTY_MIRROR_FRESH_SECONDS = env.int("PAGERDUTY_MIRROR_FRESH_SECONDS", default=30)
PAGERDUTY_TIMEOUT_SECONDS = env.float("PAGERDUTY_TIMEOUT_SECONDS", default=10.0)
# For reads made while someone waits on a page or an API answer (live on-call).
PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS = env.float("PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS", default=4.0)
PAGERDUTY_MAX_ATTEMPTS = env.int("PAGERDUTY_MAX_ATTEMPTS", default=5)
PAGERDUTY_BACKOFF_BASE_SECONDS = env.float("PAGERDUTY_BACKOFF_BASE_SECONDS", default=1.0)
PAGERDUTY_BACKOFF_CAP_SECONDS = env.float("PAGERDUTY_BACKOFF_CAP_SECONDS", default=30.0)
# Shared budget per API key across all workers (PagerDuty allows 960/min; keep a margin). 0 disables.
PAGERDUTY_RATE_LIMIT_PER_MINUTE = env.int("PAGERDUTY_RATE_LIMIT_PER_MINUTE", default=900)
PAGERDUTY_RATE_LIMIT_BURST = env.int("PAGERDUTY_RATE_LIMIT_BURST", default=20)
PAGERDUTY_RATE_LIMIT_REDIS_URL = env("PAGERDUTY_RATE_LIMIT_REDIS_URL", default=REDIS_URL)
# Events API v2: about 120 events/min per routing key. 110/min with bursts of 5 never puts more
# than 120 in any 60 s window (5 + 110 + 1), whatever the phase of PagerDuty's window. 0 disables.
PAGERDUTY_EVENTS_RATE_LIMIT_PER_MINUTE = env.int("PAGERDUTY_EVENTS_RATE_LIMIT_PER_MINUTE", default=110)
PAGERDUTY_EVENTS_RATE_LIMIT_BURST = env.int("PAGERDUTY_EVENTS_RATE_LIMIT_BURST", default=5)
# The only hosts a stored PagerDuty key is ever sent to (exact hostnames; "*" allows any, for
# development). Replaces the default; `make run` sets it to the local stand-in.
PAGERDUTY_ALLOWED_HOSTS = env.list(
    "PAGERDUTY_ALLOWED_HOSTS",
    default=["api.pagerduty.com", "api.eu.pagerduty.com", "events.pagerduty.com", "events.eu.pagerduty.com"],
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "apps.core.redaction.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
