"""Newsroom settings, read once from the environment.

Every variable is listed with its default in `.env.example`. The defaults run
the whole service on one machine with nothing installed but Python: SQLite and
an embedded Redis in the data folder, and outgoing mail written as `.eml` files.

Reading this module writes nothing: the data folder, the SQLite file and a local
site's generated secret key are made at start-up, by
`newsroom.private_files.data_folder_prepare` (called from `NewsroomConfig.ready`).
"""

from __future__ import annotations

import builtins
import os
import re
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import SimpleLazyObject
from kombu import Exchange, Queue

from newsroom import embedded_redis
from newsroom.private_files import local_secret_key
from subscriptions.sending.transports.config import email_settings, sender_address

BASE_DIR = Path(__file__).resolve().parent.parent


class Env(environ.Env):
    """django-environ, stricter where a typo would otherwise pass unnoticed.

    A blank variable counts as unset (a copied `.env.example`), values are
    stripped, a boolean is one of four spellings (django-environ reads any other
    word as False), and a bad boolean or number names its variable.
    """

    TRUE = frozenset({"1", "true", "yes", "on"})
    FALSE = frozenset({"0", "false", "no", "off"})

    def __init__(self) -> None:
        super().__init__()
        self.ENVIRON = {k: v.strip() for k, v in os.environ.items() if v.strip()}

    def bool(self, var: str, default: Any = False) -> builtins.bool:
        raw = self.ENVIRON.get(var, "").lower()
        if not raw:
            return builtins.bool(default)
        if raw in self.TRUE or raw in self.FALSE:
            return raw in self.TRUE
        raise ImproperlyConfigured(
            f"{var} must be 1/0, true/false, yes/no or on/off, not {self.ENVIRON[var]!r}")

    def int(self, var: str, default: Any = environ.Env.NOTSET) -> builtins.int:
        try:
            return super().int(var, default=default)
        except ValueError:
            raise ImproperlyConfigured(
                f"{var} must be a whole number, not {self.ENVIRON[var]!r}") from None

    def list(self, var: str, cast: Any = None,
             default: Any = environ.Env.NOTSET) -> builtins.list[str]:
        """Comma-separated, each item stripped, empty items dropped."""
        return [item.strip() for item in super().list(var, cast, default) if item.strip()]


env = Env()


def _contrast_on_white(colour: str) -> float:
    """WCAG 2 contrast ratio of a #rrggbb colour against white."""
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 1.05 / (0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b) + 0.05)


# --- Core -------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SITE_URL = env.str("SITE_URL", default="http://localhost:8000").rstrip("/")
_site = urlsplit(SITE_URL)
if _site.scheme not in {"http", "https"} or not _site.hostname:
    raise ImproperlyConfigured(f"SITE_URL must be an absolute http(s) URL, not {SITE_URL!r}")
SITE_IS_HTTPS = _site.scheme == "https"
# A site that looks public: https, or DEBUG off on a host other than this machine.
# Such a site never runs on anything generated or embedded by accident (the
# secret key below, the embedded SQLite/Redis further down).
_PUBLIC_SITE = SITE_IS_HTTPS or (not DEBUG and _site.hostname not in {"localhost", "127.0.0.1",
                                                                        "::1"})

_LOOPBACK = ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    ALLOWED_HOSTS = [_site.hostname]
    if _site.hostname in {"localhost", "127.0.0.1", "::1"}:  # loopback names are one host
        ALLOWED_HOSTS += [host for host in _LOOPBACK if host not in ALLOWED_HOSTS]
if DEBUG:
    ALLOWED_HOSTS += [host for host in _LOOPBACK if host not in ALLOWED_HOSTS]
CSRF_TRUSTED_ORIGINS = (env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
                        or [f"{_site.scheme}://{_site.netloc}"])

# Created (0700) at start-up, not here: see the module docstring.
DATA_DIR = Path(env.str("NEWSROOM_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()

SECRET_KEY: str = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if _PUBLIC_SITE:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is not set, yet SITE_URL {SITE_URL} is a public site. Set it "
            "to a long random string (python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'), the same on every machine."
        )
    # A local site (the quick start, or DEBUG): every command of this checkout
    # (runall and its processes, shell, import_stories …) shares one key kept in
    # the data folder, so links signed by one verify in the others. Read (and
    # generated, the first time) when first used, so that reading settings writes
    # nothing; data_folder_prepare uses it at start-up.
    SECRET_KEY = SimpleLazyObject(lambda: local_secret_key(DATA_DIR))  # type: ignore[assignment]
# Old keys still verify signed links (unsubscribe, confirm) after a rotation.
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "anymail",
    "axes",
    "corsheaders",
    "ninja",  # serves the API docs' Swagger UI from our static files, not a CDN
    "newsroom",
    "subscriptions",
    "newsroom.ops",  # after the apps whose admin it extends
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything that may answer (CommonMiddleware, WhiteNoise), so preflights and
    # errors from /api/ carry CORS headers too; it touches /api/ only (CORS_URLS_REGEX).
    "corsheaders.middleware.CorsMiddleware",
    "newsroom.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "newsroom.middleware.SessionIdleRenewalMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "newsroom.middleware.AdminLookupGuardMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lock-out into its 429 page
]

ROOT_URLCONF = "newsroom.urls"
WSGI_APPLICATION = "newsroom.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "newsroom.context_processors.site",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------

DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'newsroom.sqlite3'}")
if urlsplit(DATABASE_URL).scheme not in Env.DB_SCHEMES:
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a database URL Django knows: {DATABASE_URL.split(':')[0]!r} is "
        f"none of {', '.join(sorted(Env.DB_SCHEMES))}")
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The file is created 0600 at start-up (data_folder_prepare), before SQLite opens it.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL and a busy timeout let the web server and workers share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Django cache, rate limits, counters (and the default Celery broker) ---

REDIS_EMBEDDED = "REDIS_URL" not in env.ENVIRON
REDIS_URL = env.str("REDIS_URL", default=embedded_redis.url(DATA_DIR))
if urlsplit(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix://, not {REDIS_URL!r}"
    )

# --- Embedded services: the quick start's, never production's by accident ---------

# A site that looks public (https, or DEBUG off on a non-loopback host) must name
# its database and Redis: a worker on another machine that forgot REDIS_URL would
# otherwise use a private, empty Redis and consume nothing. NEWSROOM_EMBEDDED=1
# accepts the embedded SQLite/Redis anyway (a one-machine install, the tests).
NEWSROOM_EMBEDDED = env.bool("NEWSROOM_EMBEDDED", default=False)
_embedded = {"DATABASE_URL": "SQLite", "REDIS_URL": "Redis"}
_unset = [name for name in _embedded if name not in env.ENVIRON]
if _PUBLIC_SITE and _unset and not NEWSROOM_EMBEDDED:
    raise ImproperlyConfigured(
        f"{' and '.join(_unset)} not set, yet SITE_URL {SITE_URL} is a public site. "
        f"Point {' and '.join(_unset)} at your servers, or set NEWSROOM_EMBEDDED=1 to use "
        f"the embedded {' and '.join(_embedded[name] for name in _unset)} in {DATA_DIR} "
        "on purpose."
    )

# REDIS_URL as it is, not django-environ's cache_url_config: that moves the query
# string (socket_timeout=5, ssl_cert_reqs=…) into OPTIONS as text, where redis-py
# parses it from the URL into numbers and constants.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "newsroom",
    }
}

# --- Celery broker: Redis (default) or RabbitMQ --------------------------------------

# Default: REDIS_URL's server. amqp://user:password@host:5672/vhost for RabbitMQ,
# which replicates queues (quorum queues) and confirms every publish; Redis stays
# the cache and the store of rate limits and counters either way. A URL that is
# neither stops the start-up here: no process may quietly use another broker.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=embedded_redis.kombu_url(REDIS_URL))
_BROKER_SCHEMES = {"redis": "redis", "rediss": "redis", "redis+socket": "redis",
                   "amqp": "rabbitmq", "amqps": "rabbitmq", "pyamqp": "rabbitmq"}
_broker_urls = [urlsplit(url.strip()) for url in CELERY_BROKER_URL.split(";")]  # kombu failover
_broker_kinds = {_BROKER_SCHEMES.get(url.scheme) for url in _broker_urls}
if None in _broker_kinds or len(_broker_kinds) != 1 or not all(
        url.hostname or url.scheme == "redis+socket" for url in _broker_urls):
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL must be redis://host:6379/0 or amqp://user:password@host:5672/vhost "
        f"(several of one kind separated by ';'), not {CELERY_BROKER_URL.split('@')[-1]!r}")
# "redis" or "rabbitmq": which of the two broker sections below applies.
BROKER_KIND: str = _broker_kinds.pop() or "redis"  # never None: refused above
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Work survives a worker killed mid-task: the message is acknowledged only after
# the task returns, and returned to the queue if the worker process dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - min(30, CELERY_TASK_TIME_LIMIT // 5)
# RabbitMQ: every publish waits for the broker's confirm, so a batch message the
# broker did not take raises in the publisher instead of vanishing; unacknowledged
# messages come back as soon as the worker's connection closes. Redis: they come
# back after the visibility timeout; keep it well above any task.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    {"confirm_publish": True} if BROKER_KIND == "rabbitmq"
    else {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)})
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues by urgency, each may get its own workers: "priority" for mail a person
# is waiting for (confirmations) and ESP events; "alerts" for breaking news;
# "digests" for scheduled bulk; "default" for housekeeping.
CELERY_TASK_ROUTES = {
    "subscriptions.subscriber_email_send": {"queue": "priority"},
    "subscriptions.tracking_*": {"queue": "priority"},
    "subscriptions.digests_schedule": {"queue": "digests"},
    # edition_dispatch and deliveries_send go to "alerts" or "digests" by edition.
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Seconds between samples of workers, queues and send counters (Operations page).
NEWSROOM_OPS_SAMPLE_INTERVAL = env.int("NEWSROOM_OPS_SAMPLE_INTERVAL", default=30)
if NEWSROOM_OPS_SAMPLE_INTERVAL <= 0:
    raise ImproperlyConfigured("NEWSROOM_OPS_SAMPLE_INTERVAL must be a number of seconds > 0")
# Days a finished edition keeps its per-reader rows (0: for ever); see
# subscriptions/sending/retention.py and the README's privacy section.
NEWSROOM_DELIVERY_RETENTION_DAYS = env.int("NEWSROOM_DELIVERY_RETENTION_DAYS", default=90)
CELERY_BEAT_SCHEDULE = {
    "digests-schedule": {"task": "subscriptions.digests_schedule", "schedule": 300.0},
    "ledger-purge": {"task": "subscriptions.ledger_purge", "schedule": 3600.0},
    "editions-reconcile": {"task": "subscriptions.editions_reconcile", "schedule": 60.0},
    "ops-sample": {"task": "newsroom.ops_sample", "schedule": float(NEWSROOM_OPS_SAMPLE_INTERVAL),
                   "options": {"queue": CELERY_TASK_DEFAULT_QUEUE,
                               "expires": NEWSROOM_OPS_SAMPLE_INTERVAL}},
}

# --- Email --------------------------------------------------------------------

# Where the outbox transport writes; it creates the folder on its first message.
OUTBOX_DIR = DATA_DIR / "outbox"
# EMAIL_URL's own schemes (outbox:, smtp(s)://, anymail://<esp>) and the ANYMAIL_*
# variables are parsed by newsroom/mailconfig.py; every setting it gives is named here.
_mail = email_settings(env.str("EMAIL_URL", default=""), os.environ, outbox_dir=OUTBOX_DIR)
EMAIL_BACKEND: str = _mail["EMAIL_BACKEND"]
# Which road a batch takes: "outbox", "smtp" or the anymail ESP's name.
EMAIL_TRANSPORT: str = _mail["EMAIL_TRANSPORT"]
EMAIL_FILE_PATH = str(OUTBOX_DIR)
EMAIL_HOST: str = _mail.get("EMAIL_HOST", "localhost")
EMAIL_PORT: int = _mail.get("EMAIL_PORT", 25)
EMAIL_HOST_USER: str = _mail.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD: str = _mail.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_SSL: bool = _mail.get("EMAIL_USE_SSL", False)
EMAIL_USE_TLS: bool = _mail.get("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT: float = _mail["EMAIL_TIMEOUT"]
ANYMAIL: dict[str, Any] = _mail["ANYMAIL"]
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=f"Newsroom <news@{_site.hostname}>")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
NEWSROOM_REPLY_TO = env.str("NEWSROOM_REPLY_TO", default="")
for _name, _sender in (("DEFAULT_FROM_EMAIL", DEFAULT_FROM_EMAIL), ("SERVER_EMAIL", SERVER_EMAIL),
                       ("NEWSROOM_REPLY_TO", NEWSROOM_REPLY_TO)):
    if _sender:
        sender_address(_name, _sender)
NEWSROOM_POSTAL_ADDRESS = env.str(
    "NEWSROOM_POSTAL_ADDRESS", default="Newsroom, 1 Example Street, Example City"
)
NEWSROOM_NAME = env.str("NEWSROOM_NAME", default="Newsroom")
# The masthead of every email: the publication's name (above), a logo (an https
# URL; the name is shown in its place without one) and the brand colour, which
# colours the masthead rule, links and buttons, so it must read on white (4.5:1).
NEWSROOM_LOGO_URL = env.str("NEWSROOM_LOGO_URL", default="")
NEWSROOM_BRAND_COLOR = env.str("NEWSROOM_BRAND_COLOR", default="#b00020")
if not re.fullmatch(r"#[0-9a-fA-F]{6}", NEWSROOM_BRAND_COLOR):
    raise ImproperlyConfigured(
        f"NEWSROOM_BRAND_COLOR must be a colour like #b00020, not {NEWSROOM_BRAND_COLOR!r}")
if _contrast_on_white(NEWSROOM_BRAND_COLOR) < 4.5:
    raise ImproperlyConfigured(
        f"NEWSROOM_BRAND_COLOR {NEWSROOM_BRAND_COLOR} is too light to read on white "
        f"({_contrast_on_white(NEWSROOM_BRAND_COLOR):.1f}:1, under 4.5:1): choose a darker one")
if NEWSROOM_LOGO_URL and not NEWSROOM_LOGO_URL.startswith("https://"):
    raise ImproperlyConfigured(f"NEWSROOM_LOGO_URL must be an https URL, not {NEWSROOM_LOGO_URL!r}")
# The mailto: offered in List-Unsubscribe next to the https URL; by default
# unsubscribe@<the sender's domain>. A mail to it unsubscribes only where an
# inbound route for that address exists (the https one-click always works).
NEWSROOM_UNSUBSCRIBE_MAILTO = env.str(
    "NEWSROOM_UNSUBSCRIBE_MAILTO",
    default="unsubscribe@" + parseaddr(DEFAULT_FROM_EMAIL)[1].rpartition("@")[2])
# Hosts whose https images may appear in mail (story bodies); images from any
# other host are left out of the mail (a tracking pixel, say) and kept on the site.
NEWSROOM_MAIL_IMAGE_HOSTS = env.list("NEWSROOM_MAIL_IMAGE_HOSTS",
                                     default=[_site.hostname] if _site.hostname else [])
# Links to stories in editions go through signed redirects (/r/<token>) that count
# clicks per edition, story and link, never per reader; off: straight to the site.
NEWSROOM_CLICK_TRACKING = env.bool("NEWSROOM_CLICK_TRACKING", default=True)

# --- Subscriptions ----------------------------------------------------------------

# Sign-ups allowed per client IP and per address within an hour.
NEWSROOM_SIGNUP_LIMIT_PER_IP = env.int("NEWSROOM_SIGNUP_LIMIT_PER_IP", default=20)
NEWSROOM_SIGNUP_LIMIT_PER_EMAIL = env.int("NEWSROOM_SIGNUP_LIMIT_PER_EMAIL", default=5)
# Sites (scheme://host[:port]) whose pages may call the JSON API (/api/v1/) from the
# browser and post the embeddable sign-up form; every other origin gets no CORS headers.
NEWSROOM_API_ALLOWED_ORIGINS = env.list("NEWSROOM_API_ALLOWED_ORIGINS", default=[])
CORS_ALLOWED_ORIGINS = NEWSROOM_API_ALLOWED_ORIGINS
CORS_URLS_REGEX = r"^/api/"  # the HTML pages stay same-origin only
CORS_PREFLIGHT_MAX_AGE = 3600
# Reverse proxies in front of the web server that append to X-Forwarded-For
# (the client address for rate limits and consent records); 0 = none.
NEWSROOM_TRUSTED_PROXY_HOPS = env.int("NEWSROOM_TRUSTED_PROXY_HOPS", default=0)
# Soft bounces in a row that suppress an address like a hard bounce.
NEWSROOM_SOFT_BOUNCE_LIMIT = env.int("NEWSROOM_SOFT_BOUNCE_LIMIT", default=3)
# Mail sent through our own SMTP relay bounces to bounces+<signed token>@ this
# domain (VERP), received by `manage.py bounce_server`; empty = off (the
# envelope sender is DEFAULT_FROM_EMAIL's address, bounces go wherever it does).
NEWSROOM_BOUNCE_DOMAIN = env.str("NEWSROOM_BOUNCE_DOMAIN", default="").strip().lower()

# --- Sending ------------------------------------------------------------------------

# Deliveries per batch task (one SMTP session, or ESP calls of its batch size).
NEWSROOM_BATCH_SIZE = env.int("NEWSROOM_BATCH_SIZE", default=1000)
# Stories a digest shows per category; past it the section ends with
# "and N more in <category>", linking to the category's page.
NEWSROOM_DIGEST_MAX_PER_CATEGORY = env.int("NEWSROOM_DIGEST_MAX_PER_CATEGORY", default=12)
# An alert not started this many seconds after it was confirmed is not sent late.
NEWSROOM_ALERT_STALE_AFTER = env.int("NEWSROOM_ALERT_STALE_AFTER", default=7200)
# A digest more than this many seconds past its due time waits for the next one.
NEWSROOM_DIGEST_MAX_LATENESS = env.int("NEWSROOM_DIGEST_MAX_LATENESS", default=6 * 3600)
# A sending edition without progress this long has its batches enqueued again,
# and a planned or sending one is flagged as stalled (edition and Operations
# pages, newsroom_editions_stalled in /metrics).
NEWSROOM_STALL_AFTER = env.int("NEWSROOM_STALL_AFTER", default=300)
# A batch run holding deliveries longer than this is presumed dead and its
# deliveries go back to the queue; keep it above CELERY_TASK_TIME_LIMIT.
NEWSROOM_CLAIM_TIMEOUT = env.int("NEWSROOM_CLAIM_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 60)
# Queue names, so alerts can have workers of their own.
NEWSROOM_ALERTS_QUEUE = env.str("NEWSROOM_ALERTS_QUEUE", default="alerts")
NEWSROOM_DIGESTS_QUEUE = env.str("NEWSROOM_DIGESTS_QUEUE", default="digests")
# Every queue work is routed to.
_ROUTED_QUEUES = sorted({CELERY_TASK_DEFAULT_QUEUE, NEWSROOM_ALERTS_QUEUE, NEWSROOM_DIGESTS_QUEUE,
                         *(route["queue"] for route in CELERY_TASK_ROUTES.values())})
# RabbitMQ: each of them a quorum queue (replicated on a cluster, kept on disk), on a
# topic exchange of its own so that countdowns (retries, early dispatches) wait in
# Celery's native delayed-delivery queues on the broker, not unacknowledged in a
# worker. worker_detect_quorum_queues turns global QoS off (quorum queues refuse it).
# RabbitMQ's consumer_timeout (default 30 min) must stay above CELERY_TASK_TIME_LIMIT:
# a message unacknowledged longer gets its channel closed and is delivered again.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name, type="topic"), routing_key=name,
          queue_arguments={"x-queue-type": "quorum"})
    for name in _ROUTED_QUEUES
] if BROKER_KIND == "rabbitmq" else None
CELERY_WORKER_DETECT_QUORUM_QUEUES = True
# Transient failures a delivery may have before it counts as failed.
NEWSROOM_DELIVERY_MAX_ATTEMPTS = env.int("NEWSROOM_DELIVERY_MAX_ATTEMPTS", default=8)
# Messages per second across all workers, per transport; 0 for no limit.
NEWSROOM_SEND_RATE = env.int("NEWSROOM_SEND_RATE", default=0)
# Weekly digests go out on this weekday (0 = Monday) at each reader's hour.
NEWSROOM_WEEKLY_DIGEST_WEEKDAY = env.int("NEWSROOM_WEEKLY_DIGEST_WEEKDAY", default=0)

# --- Monitoring -------------------------------------------------------------------

# Bearer token Prometheus sends to /metrics; unset, /metrics answers 404 (off).
NEWSROOM_METRICS_TOKEN = env.str("NEWSROOM_METRICS_TOKEN", default="")
# Seconds each /readyz check (database, broker) may take before it counts as down.
NEWSROOM_HEALTH_TIMEOUT = env.int("NEWSROOM_HEALTH_TIMEOUT", default=2)
# Seconds between canary tasks. Beat sends one to every queue; the time each
# completes (on /metrics) shows the queue is consumed, which a worker that is
# connected but stuck would not show.
NEWSROOM_CANARY_INTERVAL = env.int("NEWSROOM_CANARY_INTERVAL", default=60)
if NEWSROOM_HEALTH_TIMEOUT <= 0 or NEWSROOM_CANARY_INTERVAL <= 0:
    raise ImproperlyConfigured("NEWSROOM_HEALTH_TIMEOUT and NEWSROOM_CANARY_INTERVAL must be > 0")
CELERY_BEAT_SCHEDULE.update({
    f"canary-{queue}": {
        "task": "newsroom.canary", "schedule": float(NEWSROOM_CANARY_INTERVAL),
        # One that waited several rounds says nothing the next one won't: drop it unrun.
        "options": {"queue": queue, "expires": 5 * NEWSROOM_CANARY_INTERVAL},
    }
    for queue in _ROUTED_QUEUES
})
# Probes reach the app over plain http (load balancer, kubelet): a redirect to
# https would count as a pass without running the checks.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- Auth, i18n, static ---------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# Admin login brute force (django-axes): NEWSROOM_LOGIN_FAILURE_LIMIT wrong
# passwords for one username from one client lock that pair out for
# NEWSROOM_LOGIN_COOLOFF_MINUTES, even with the right password; a success resets
# the count. Per pair rather than per account, so nobody can lock an editor out
# from elsewhere. The client is the address the sign-up limits use (behind
# NEWSROOM_TRUSTED_PROXY_HOPS proxies, an IPv6 /64 as one). Unlock early with
# `manage.py axes_reset_username <name>` (or axes_reset to clear all).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked pair before any check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("NEWSROOM_LOGIN_FAILURE_LIMIT", default=5)
_cooloff_minutes = env.int("NEWSROOM_LOGIN_COOLOFF_MINUTES", default=15)
if AXES_FAILURE_LIMIT <= 0 or _cooloff_minutes <= 0:
    raise ImproperlyConfigured(
        "NEWSROOM_LOGIN_FAILURE_LIMIT and NEWSROOM_LOGIN_COOLOFF_MINUTES must be > 0"
    )
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "subscriptions.ratelimit.login_client_address"
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429

# Staff sessions end after NEWSROOM_ADMIN_IDLE_MINUTES without a request: that is
# the session's lifetime, and newsroom.middleware.SessionIdleRenewalMiddleware
# renews it while the user is active (see its docstring).
NEWSROOM_ADMIN_IDLE_MINUTES = env.int("NEWSROOM_ADMIN_IDLE_MINUTES", default=30)
if NEWSROOM_ADMIN_IDLE_MINUTES <= 0:
    raise ImproperlyConfigured("NEWSROOM_ADMIN_IDLE_MINUTES must be a number of minutes > 0")
SESSION_COOKIE_AGE = NEWSROOM_ADMIN_IDLE_MINUTES * 60

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("NEWSROOM_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Created at start-up (data_folder_prepare): whitenoise warns about a missing folder.
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security (production-grade whenever SITE_URL is https) ---------------------

SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("DJANGO_BEHIND_TLS_PROXY") else None
)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=SITE_IS_HTTPS and not DEBUG)
SESSION_COOKIE_SECURE = SITE_IS_HTTPS
CSRF_COOKIE_SECURE = SITE_IS_HTTPS
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000 if SITE_IS_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SITE_IS_HTTPS
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Logging --------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "newsroom.logging.JsonFormatter"},
    },
    # No link's token in any line (newsroom/logging.py).
    "filters": {"redact_tokens": {"()": "newsroom.logging.RedactTokens"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                             "filters": ["redact_tokens"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # runserver's request lines, through our handler rather than Django's own.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "INFO"},
        "axes.apps": {"level": "WARNING"},  # its start-up banner, in every process
    },
}
