"""Helpers for tests that start real processes."""

import os
import socket

ENV_PREFIXES = ("DJANGO_", "DATABASE_URL", "REDIS_URL", "EMAIL_URL", "ANYMAIL_", "SITE_URL",
                "DEFAULT_FROM_EMAIL", "SERVER_EMAIL",
                "NEWSROOM_", "LOG_", "CELERY_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(*, keep_servers: bool = False, **overrides: str) -> dict[str, str]:
    """The environment minus the project's own variables, plus `overrides`.

    With `keep_servers`, DATABASE_URL, REDIS_URL and CELERY_BROKER_URL stay, so a
    process started by a CI run against PostgreSQL, a real Redis or RabbitMQ reaches
    the same servers.
    """
    keep = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"} if keep_servers else set()
    env = {k: v for k, v in os.environ.items() if k in keep or not k.startswith(ENV_PREFIXES)}
    env.update(overrides)
    return env
