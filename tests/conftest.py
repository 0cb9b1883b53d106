import logging
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache

WORKER_QUEUES = "priority,default,alerts,digests"
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter


@pytest.fixture(scope="session", autouse=True)
def _redis():
    """The embedded test Redis (var/test/redis/) for this run, stopped at its end.

    Started here rather than by the settings or an app's ready(), so that
    `--collect-only` starts nothing and no run leaves a redis-server behind;
    overlapping runs share it (embedded_redis.serving). With REDIS_URL set the
    suite uses that server and starts none.
    """
    if not settings.REDIS_EMBEDDED:
        yield
        return
    from newsroom import embedded_redis

    with embedded_redis.serving(settings.DATA_DIR):
        yield


@pytest.fixture(autouse=True)
def _clear_cache(_redis):
    """Each test starts with an empty cache (it lives in a real Redis).

    Only the test key prefix is removed: FLUSHDB would also wipe the Celery
    broker's queues and bindings, which share the Redis database.
    """
    client = cache._cache.get_client(write=True)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield


@pytest.fixture
def enqueued(monkeypatch):
    """Keep the broker out: record the dispatches the service would enqueue
    (the story admin's alert tests, editorial's and subscriptions')."""
    from subscriptions.sending import enqueue

    calls: list[int] = []
    monkeypatch.setattr(enqueue, "enqueue_dispatch",
                        lambda edition, **kwargs: calls.append(edition.pk))
    return calls


@pytest.fixture(scope="session")
def smtp_sink():
    """A real SMTP listener for the whole run; what it accepts lands in the outbox folder."""
    from tests.settings_helpers import free_port
    from tests.smtp_sink import SMTPSink

    sink = SMTPSink(free_port(), folder=Path(settings.OUTBOX_DIR)).start()
    yield sink
    sink.stop()


@pytest.fixture
def smtp(smtp_sink, settings):
    """Send this test's mail (in this process) through the SMTP listener."""
    settings.EMAIL_BACKEND = "subscriptions.sending.transports.smtp.SMTPBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TRANSPORT = "smtp"
    smtp_sink.handler.reject.clear()
    smtp_sink.handler.refused.clear()
    smtp_sink.handler.reject_data = ""
    with smtp_sink.handler.lock:
        smtp_sink.handler.messages.clear()
    yield smtp_sink
    smtp_sink.handler.reject.clear()
    smtp_sink.handler.reject_data = ""


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, smtp_sink):
    """A real Celery worker process on the real broker, using the test database.

    Tests that use it must commit their data (`django_db(transaction=True)`),
    since the worker reads the database over its own connection. Its mail goes
    to the SMTP listener, which files it in the outbox folder.
    """
    from newsroom.celery import app
    from tests.workers import Worker

    with django_db_blocker.unblock():
        worker = Worker(queues=WORKER_QUEUES, smtp_port=smtp_sink.port,
                        CELERY_TASK_TIME_LIMIT="60", NEWSROOM_STALL_AFTER="5")
    app.control.purge()  # leftovers of an earlier run must not reach this database
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def outbox(settings):
    """Messages the outbox backend wrote during this test (from any process)."""
    from tests.mailbox import Outbox

    box = Outbox(Path(settings.OUTBOX_DIR))
    yield box
