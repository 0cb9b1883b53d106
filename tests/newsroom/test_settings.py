"""Settings are read once from the environment; bad values fail loudly."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

import newsroom.settings as settings_module
from tests.settings_helpers import ENV_PREFIXES, process_env

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = settings_module.__file__
SECRET = "x" * 60


@pytest.fixture
def load(monkeypatch, tmp_path):
    """Evaluate settings.py afresh with exactly the given variables set."""

    def _load(**env: str) -> dict:
        for key in list(os.environ):
            if key.startswith(ENV_PREFIXES):
                monkeypatch.delenv(key)
        monkeypatch.setenv("NEWSROOM_DATA_DIR", str(tmp_path))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return runpy.run_path(SETTINGS_FILE)

    return _load


@pytest.mark.parametrize("env", [
    {"SITE_URL": "https://news.example.com"},
    {"SITE_URL": "https://news.example.com", "DJANGO_DEBUG": "1", "NEWSROOM_EMBEDDED": "1"},
    {"SITE_URL": "http://news.example.com"},
    {"SITE_URL": "http://10.0.0.5:8000", "DEFAULT_FROM_EMAIL": "news@example.com"},
])
def test_a_public_site_without_a_secret_key_is_refused_and_generates_none(load, tmp_path, env):
    """Fail closed: a generated key on a public site would silently change on the
    next machine or data folder, and every link already mailed would break."""
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY is not set"):
        load(**env)
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("env", [
    {}, {"DJANGO_DEBUG": "1"},
    {"SITE_URL": "http://127.0.0.1:8100", "DEFAULT_FROM_EMAIL": "n@example.com"},
])
def test_a_local_site_without_a_secret_key_uses_one_kept_in_the_data_folder(load, tmp_path, env):
    """The quick start: every command of the checkout shares one generated key, 0600."""
    key = load(**env)["SECRET_KEY"]
    assert len(key) >= 50 and key == (tmp_path / "secret_key").read_text().strip()
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert load(**env)["SECRET_KEY"] == key  # generated once, then read
    assert not list(tmp_path.glob(".secret_key.*"))  # no temporary file left


def test_an_explicit_secret_key_wins_and_debug_is_off_by_default(load, tmp_path):
    conf = load(DJANGO_SECRET_KEY=SECRET)
    assert conf["SECRET_KEY"] == SECRET and conf["DEBUG"] is False
    assert load(DJANGO_DEBUG="1")["DEBUG"] is True


def test_bad_boolean_is_refused(load):
    with pytest.raises(ImproperlyConfigured, match="DJANGO_DEBUG must be"):
        load(DJANGO_DEBUG="maybe")


def test_bad_integer_is_refused(load):
    with pytest.raises(ImproperlyConfigured, match="CELERY_TASK_TIME_LIMIT must be a whole number"):
        load(DJANGO_SECRET_KEY=SECRET, CELERY_TASK_TIME_LIMIT="ten")


def test_a_blank_variable_counts_as_unset(load):
    """A copied .env.example leaves many variables empty: each means its default."""
    conf = load(DJANGO_SECRET_KEY=SECRET, DJANGO_DEBUG=" ", NEWSROOM_BATCH_SIZE="",
                DATABASE_URL="", DJANGO_ALLOWED_HOSTS=" , ", NEWSROOM_ALERTS_QUEUE=" alerts2 ")
    assert conf["DEBUG"] is False and conf["NEWSROOM_BATCH_SIZE"] == 1000
    assert conf["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert "localhost" in conf["ALLOWED_HOSTS"] and conf["NEWSROOM_ALERTS_QUEUE"] == "alerts2"


def test_sqlite_in_the_data_folder_by_default(load, tmp_path):
    db = load(DJANGO_SECRET_KEY=SECRET)["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(db["NAME"]) == tmp_path / "newsroom.sqlite3"


def test_database_url_selects_postgresql(load):
    db = load(
        DJANGO_SECRET_KEY=SECRET, DATABASE_URL="postgres://news:p%40ss@db.internal:6543/newsroom"
    )["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "db.internal", 6543, "newsroom", "news", "p@ss",
    )
    assert db["CONN_HEALTH_CHECKS"] is True


def test_unknown_database_scheme_is_refused(load):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        load(DJANGO_SECRET_KEY=SECRET, DATABASE_URL="oracle2://x/y")


def test_embedded_redis_by_default_and_real_redis_when_set(load, tmp_path):
    embedded = load(DJANGO_SECRET_KEY=SECRET)
    assert embedded["REDIS_EMBEDDED"] is True
    assert embedded["CELERY_BROKER_URL"].startswith("redis+socket://")
    assert embedded["CACHES"]["default"]["LOCATION"].startswith("unix://")

    real = load(DJANGO_SECRET_KEY=SECRET, REDIS_URL="redis://cache.internal:6380/2")
    assert real["REDIS_EMBEDDED"] is False
    assert real["CELERY_BROKER_URL"] == "redis://cache.internal:6380/2"
    assert real["CACHES"]["default"]["LOCATION"] == "redis://cache.internal:6380/2"


def test_bad_redis_url_is_refused(load):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must start with"):
        load(DJANGO_SECRET_KEY=SECRET, REDIS_URL="cache.internal:6379")


def test_a_rabbitmq_broker_gets_quorum_queues_and_publisher_confirms(load):
    """Redis keeps the cache; every routed queue is a quorum queue on a topic exchange
    (countdowns then wait on the broker), and acks stay late."""
    conf = load(DJANGO_SECRET_KEY=SECRET, REDIS_URL="redis://cache.internal:6380/2",
                CELERY_BROKER_URL="amqp://news:pw@mq.internal:5672/newsroom",
                NEWSROOM_ALERTS_QUEUE="alerts-eu")
    assert conf["BROKER_KIND"] == "rabbitmq"
    assert conf["CACHES"]["default"]["LOCATION"] == "redis://cache.internal:6380/2"
    assert conf["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"confirm_publish": True}
    queues = {queue.name: queue for queue in conf["CELERY_TASK_QUEUES"]}
    assert sorted(queues) == ["alerts-eu", "default", "digests", "priority"]
    for name, queue in queues.items():
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (
            name, "topic", name)
    assert sorted(key.removeprefix("canary-") for key in conf["CELERY_BEAT_SCHEDULE"]
                  if key.startswith("canary-")) == sorted(queues)
    assert conf["CELERY_WORKER_DETECT_QUORUM_QUEUES"] is True
    assert conf["CELERY_TASK_ACKS_LATE"] and conf["CELERY_TASK_REJECT_ON_WORKER_LOST"]

    redis_broker = load(DJANGO_SECRET_KEY=SECRET, REDIS_URL="redis://cache.internal:6380/2")
    assert redis_broker["BROKER_KIND"] == "redis"
    assert redis_broker["CELERY_TASK_QUEUES"] is None
    assert redis_broker["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 3600}


@pytest.mark.parametrize("url", [
    "rabbitmq.internal:5672", "http://mq.internal/", "amqp://", "amqp:///vhost",
    "amqp://mq1.internal;redis://r.internal/0", "sqs://key:secret@",
])
def test_a_broker_url_that_is_neither_redis_nor_amqp_is_refused(load, url):
    """No silent fall-back to another broker: the process does not start."""
    with pytest.raises(ImproperlyConfigured, match="CELERY_BROKER_URL must be") as refused:
        load(DJANGO_SECRET_KEY=SECRET, SITE_URL="https://news.example.com",
             DATABASE_URL="postgres://n@db.internal/n", REDIS_URL="redis://r.internal/0",
             CELERY_BROKER_URL=url)
    assert "secret" not in str(refused.value)


def test_a_failover_list_of_rabbitmq_nodes_is_accepted(load):
    conf = load(DJANGO_SECRET_KEY=SECRET,
                CELERY_BROKER_URL="amqp://u:p@mq1.internal//;amqp://u:p@mq2.internal//")
    assert conf["BROKER_KIND"] == "rabbitmq"


def test_site_url_must_be_absolute(load):
    with pytest.raises(ImproperlyConfigured, match="SITE_URL must be an absolute"):
        load(DJANGO_SECRET_KEY=SECRET, SITE_URL="news.example.com")


def test_allowed_hosts_follow_site_url(load):
    conf = load(DJANGO_SECRET_KEY=SECRET, SITE_URL="https://news.example.com/",
                NEWSROOM_EMBEDDED="1")
    assert conf["ALLOWED_HOSTS"] == ["news.example.com"]
    assert conf["SITE_URL"] == "https://news.example.com"
    assert conf["CSRF_TRUSTED_ORIGINS"] == ["https://news.example.com"]
    explicit = load(DJANGO_SECRET_KEY=SECRET, DJANGO_ALLOWED_HOSTS="a.example, b.example")
    assert explicit["ALLOWED_HOSTS"] == ["a.example", "b.example"]


def test_https_site_turns_on_transport_security(load):
    conf = load(DJANGO_SECRET_KEY=SECRET, SITE_URL="https://news.example.com",
                NEWSROOM_EMBEDDED="1")
    assert conf["SECURE_SSL_REDIRECT"] and conf["SESSION_COOKIE_SECURE"]
    assert conf["CSRF_COOKIE_SECURE"] and conf["SECURE_HSTS_SECONDS"] >= 31536000
    plain = load(DJANGO_SECRET_KEY=SECRET, SITE_URL="http://localhost:8000")
    assert not plain["SECURE_SSL_REDIRECT"] and plain["SECURE_HSTS_SECONDS"] == 0


def test_secret_key_fallbacks_for_rotation(load):
    conf = load(DJANGO_SECRET_KEY=SECRET, DJANGO_SECRET_KEY_FALLBACKS="old-one, older-one")
    assert conf["SECRET_KEY_FALLBACKS"] == ["old-one", "older-one"]


PUBLIC = {"DJANGO_SECRET_KEY": SECRET, "SITE_URL": "https://news.example.com"}
SERVERS = {"DATABASE_URL": "postgres://n@db.internal/n", "REDIS_URL": "redis://r.internal/0"}


@pytest.mark.parametrize("unset", ["DATABASE_URL", "REDIS_URL"])
def test_a_public_site_without_its_servers_refuses_to_start(load, unset):
    env = {**PUBLIC, **{k: v for k, v in SERVERS.items() if k != unset}}
    with pytest.raises(ImproperlyConfigured, match=f"^{unset} not set, yet SITE_URL "
                       r"https://news.example.com is a public site.*NEWSROOM_EMBEDDED=1"):
        load(**env)
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL and REDIS_URL not set"):
        load(**PUBLIC)


def test_debug_off_on_a_public_host_counts_as_public_too(load):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL not set"):
        load(DJANGO_SECRET_KEY=SECRET, SITE_URL="http://news.example.com",
             DATABASE_URL=SERVERS["DATABASE_URL"])
    # The same host in development, and the quick start on localhost, need nothing.
    assert load(DJANGO_DEBUG="1", SITE_URL="http://news.example.com")["REDIS_EMBEDDED"]
    assert load(DJANGO_SECRET_KEY=SECRET, SITE_URL="http://127.0.0.1:8000",
                DEFAULT_FROM_EMAIL="news@example.com")["REDIS_EMBEDDED"]


def test_the_embedded_services_on_a_public_site_are_an_explicit_choice(load):
    conf = load(**PUBLIC, NEWSROOM_EMBEDDED="1")
    assert conf["REDIS_EMBEDDED"] and conf["DATABASES"]["default"]["ENGINE"].endswith("sqlite3")
    assert load(**PUBLIC, **SERVERS)["REDIS_EMBEDDED"] is False
    with pytest.raises(ImproperlyConfigured, match="NEWSROOM_EMBEDDED must be"):
        load(**PUBLIC, NEWSROOM_EMBEDDED="sure")


def test_admin_login_and_session_limits(load):
    conf = load(DJANGO_SECRET_KEY=SECRET)
    assert conf["AXES_FAILURE_LIMIT"] == 5 and conf["AXES_COOLOFF_TIME"].total_seconds() == 900
    assert conf["AUTHENTICATION_BACKENDS"][0] == "axes.backends.AxesStandaloneBackend"
    assert conf["SESSION_COOKIE_AGE"] == 1800
    assert load(DJANGO_SECRET_KEY=SECRET, NEWSROOM_ADMIN_IDLE_MINUTES="5")[
        "SESSION_COOKIE_AGE"] == 300
    for name in ("NEWSROOM_ADMIN_IDLE_MINUTES", "NEWSROOM_LOGIN_FAILURE_LIMIT",
                 "NEWSROOM_LOGIN_COOLOFF_MINUTES"):
        with pytest.raises(ImproperlyConfigured, match=name):
            load(DJANGO_SECRET_KEY=SECRET, **{name: "0"})


def test_log_format_must_be_known(load):
    assert load(DJANGO_SECRET_KEY=SECRET, LOG_FORMAT="json")["LOGGING"]["handlers"]["console"][
        "formatter"
    ] == "json"
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT"):
        load(DJANGO_SECRET_KEY=SECRET, LOG_FORMAT="xml")


def test_env_example_lists_every_variable_the_settings_read():
    read = set()
    for path in (ROOT / "newsroom").glob("*.py"):
        text = path.read_text()
        for prefix in ('env.str("', 'env.bool("', 'env.int("', 'env.list("'):
            for chunk in text.split(prefix)[1:]:
                read.add(chunk.split('"', 1)[0])
    listed = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line
    }
    assert read, "found no settings variables"
    assert read <= listed, f"missing from .env.example: {sorted(read - listed)}"


def test_env_example_shows_the_defaults_of_the_sending_limits(load):
    """Whoever copies .env.example gets what the code does without it."""
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("NEWSROOM_") and "=" in line
    )
    defaults = load(DJANGO_DEBUG="1")
    for name in ("NEWSROOM_STALL_AFTER", "NEWSROOM_CLAIM_TIMEOUT", "NEWSROOM_BATCH_SIZE",
                 "NEWSROOM_ALERT_STALE_AFTER", "NEWSROOM_OPS_SAMPLE_INTERVAL",
                 "NEWSROOM_DIGEST_MAX_PER_CATEGORY"):
        assert int(example[name]) == defaults[name], name
    # The mail's look: what .env.example shows is what an unset variable gives.
    assert example["NEWSROOM_BRAND_COLOR"] == defaults["NEWSROOM_BRAND_COLOR"]
    for name in ("NEWSROOM_LOGO_URL", "NEWSROOM_UNSUBSCRIBE_MAILTO", "NEWSROOM_MAIL_IMAGE_HOSTS"):
        assert example[name] == "", name  # empty: derived, as the comment above it says


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = process_env(
        DJANGO_SETTINGS_MODULE="newsroom.settings",
        DJANGO_SECRET_KEY="k9#Qz" + "f" * 20 + "R2!pL" + "a" * 30 + "Zz8*w",
        SITE_URL="https://news.example.com",
        NEWSROOM_DATA_DIR=str(tmp_path),
        DATABASE_URL="postgres://newsroom@127.0.0.1:5432/newsroom",  # not connected to
        REDIS_URL="redis://127.0.0.1:6379/15",
        NEWSROOM_NO_BOOTSTRAP="1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_debug(tmp_path):
    env = process_env(
        DJANGO_SETTINGS_MODULE="newsroom.settings", DJANGO_DEBUG="1",
        NEWSROOM_DATA_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:6379/15",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "DEBUG" in result.stderr + result.stdout


@pytest.mark.parametrize(("env", "name"), [
    ({"SITE_URL": "http://127.0.0.1:8000"}, "DEFAULT_FROM_EMAIL"),  # news@127.0.0.1
    ({"SITE_URL": "http://newsbox:8000", "NEWSROOM_EMBEDDED": "1"}, "DEFAULT_FROM_EMAIL"),
    ({"DEFAULT_FROM_EMAIL": "Newsroom"}, "DEFAULT_FROM_EMAIL"),
    ({"DEFAULT_FROM_EMAIL": "a@example.com, b@example.com"}, "DEFAULT_FROM_EMAIL"),
    ({"DEFAULT_FROM_EMAIL": "news@example.com\nBcc: x@example.com"}, "DEFAULT_FROM_EMAIL"),
    ({"SERVER_EMAIL": "root@[127.0.0.1"}, "SERVER_EMAIL"),
    ({"SERVER_EMAIL": "root@[127.0.0.1]"}, "SERVER_EMAIL"),
    ({"NEWSROOM_REPLY_TO": "desk@"}, "NEWSROOM_REPLY_TO"),
])
def test_a_sender_that_is_no_valid_address_is_refused_at_start_up(load, env, name):
    """Receivers refuse or junk mail from news@127.0.0.1: say so before any is sent."""
    with pytest.raises(ImproperlyConfigured, match=f"{name} .* is not a valid email address"):
        load(DJANGO_SECRET_KEY=SECRET, **env)


def test_the_default_senders_are_valid(load):
    assert load(DJANGO_SECRET_KEY=SECRET)["DEFAULT_FROM_EMAIL"] == "Newsroom <news@localhost>"
    conf = load(DJANGO_SECRET_KEY=SECRET, SITE_URL="https://news.example.com", **SERVERS)
    assert conf["DEFAULT_FROM_EMAIL"] == conf["SERVER_EMAIL"] == "Newsroom <news@news.example.com>"
    assert load(DJANGO_SECRET_KEY=SECRET, SITE_URL="http://127.0.0.1:8000",
                DEFAULT_FROM_EMAIL="Rédaction <desk@example.org>")["DEFAULT_FROM_EMAIL"]


def test_mail_settings_derive_from_the_sender_and_site(load):
    loaded = load(DJANGO_DEBUG="1", SITE_URL="https://news.example.com", NEWSROOM_EMBEDDED="1",
                  DJANGO_SECRET_KEY=SECRET, DEFAULT_FROM_EMAIL="The Ledger <desk@mail.example.org>")
    assert loaded["NEWSROOM_UNSUBSCRIBE_MAILTO"] == "unsubscribe@mail.example.org"
    assert loaded["NEWSROOM_MAIL_IMAGE_HOSTS"] == ["news.example.com"]
    assert loaded["NEWSROOM_LOGO_URL"] == "" and loaded["NEWSROOM_DIGEST_MAX_PER_CATEGORY"] == 12
    loaded = load(DJANGO_DEBUG="1", NEWSROOM_MAIL_IMAGE_HOSTS="a.example, b.example",
                  NEWSROOM_UNSUBSCRIBE_MAILTO="leave@example.org")
    assert loaded["NEWSROOM_MAIL_IMAGE_HOSTS"] == ["a.example", "b.example"]
    assert loaded["NEWSROOM_UNSUBSCRIBE_MAILTO"] == "leave@example.org"


@pytest.mark.parametrize(("env", "message"), [
    ({"NEWSROOM_BRAND_COLOR": "red"}, "like #b00020"),
    ({"NEWSROOM_BRAND_COLOR": "#ffcc00"}, "too light to read on white"),
    ({"NEWSROOM_LOGO_URL": "http://example.com/logo.png"}, "must be an https URL"),
])
def test_mail_look_settings_that_would_harm_the_mail_stop_start_up(load, env, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        load(DJANGO_DEBUG="1", **env)
