"""Whether a terminal command can reach Redis, and what to do when it cannot.

The embedded Redis runs only while `manage.py runall` (or the test suite) runs:
no other command starts one it would leave behind. A command that enqueues work
(`requeue_stuck`) must therefore find Redis up before it changes anything,
else Celery would retry the connection for a long while and then trace back,
after the database was already changed; `editions` reads only the database but
says why nothing is moving.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from django.conf import settings

from newsroom import embedded_redis

TIMEOUT = 2.0  # seconds: a terminal user should not wait longer to learn it is down


def redis_unreachable() -> str | None:
    """None when Redis answers a PING (and RabbitMQ a connection, when it is the
    broker); else what is wrong and what to do, in words."""
    problem = _redis_problem()
    if problem is None and settings.BROKER_KIND == "rabbitmq":
        problem = _rabbitmq_problem()
    return problem


def _redis_problem() -> str | None:
    if settings.REDIS_EMBEDDED:
        if embedded_redis.is_running(settings.DATA_DIR):
            return None
        return ("The embedded Redis is not running: it runs only while `python3 manage.py "
                "runall` does. Start runall (in another terminal), or set REDIS_URL to your "
                "Redis.")
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=TIMEOUT,
                                  socket_timeout=TIMEOUT)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        where = urlsplit(settings.REDIS_URL)  # host and port only: the URL may hold a password
        target = where.path if where.scheme == "unix" else f"{where.hostname}:{where.port or 6379}"
        return (f"Redis at {target} (REDIS_URL) does not answer ({type(exc).__name__}). "
                "Start it, or check REDIS_URL.")
    finally:
        client.close()
    return None


def _rabbitmq_problem() -> str | None:
    from newsroom.celery import app

    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL,
                                      connect_timeout=TIMEOUT) as connection:
            connection.ensure_connection(max_retries=0)
    except Exception as exc:  # refused, timed out, login refused: all mean "not now"
        where = urlsplit(settings.CELERY_BROKER_URL.split(";")[0])
        return (f"RabbitMQ at {where.hostname}:{where.port or 5672} (CELERY_BROKER_URL) does "
                f"not answer ({type(exc).__name__}). Start it, or check CELERY_BROKER_URL.")
    return None
