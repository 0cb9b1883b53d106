"""What is waiting in the broker: depth and age of the oldest message per queue.

Kombu's Redis transport keeps each queue as a list (LPUSH in, BRPOP out), so the
depth is LLEN and the oldest message is the list's last element. Celery's
messages carry no sending time, so every task published by this project gets a
`published_at` header (see `stamp_published_at`), which the age is read from.
Messages a worker has taken but not acknowledged sit in the `unacked` hash and
are counted separately: they are in progress, not waiting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from celery.signals import before_task_publish
from django.conf import settings

from newsroom.celery import app

if TYPE_CHECKING:
    import redis
    from kombu import Connection
    from kombu.transport.redis import Channel as RedisChannel

UNACKED_KEY = "unacked"


@before_task_publish.connect
def stamp_published_at(headers: dict | None = None, **kwargs) -> None:
    if headers is not None:
        headers.setdefault("published_at", time.time())


@dataclass(frozen=True)
class QueueStats:
    name: str
    depth: int
    oldest_age: float | None  # seconds; None when empty or unknown


def known_queues() -> list[str]:
    """Every queue the project routes work to."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted(routed | {settings.CELERY_TASK_DEFAULT_QUEUE, settings.NEWSROOM_ALERTS_QUEUE,
                            settings.NEWSROOM_DIGESTS_QUEUE})


def _age(raw: bytes | None, now: float) -> float | None:
    if not raw:
        return None
    try:
        published = json.loads(raw)["headers"]["published_at"]
    except (ValueError, KeyError, TypeError):
        return None
    return max(0.0, now - float(published))


def _redis(connection: Connection) -> redis.Redis:
    """The broker's Redis client: kombu types a channel as any transport's."""
    return cast("RedisChannel", connection.default_channel).client


def queue_stats(queues: Iterable[str] | None = None) -> list[QueueStats]:
    """Depth and oldest-message age of each queue, in one Redis round trip."""
    names = list(queues) if queues is not None else known_queues()
    with app.connection_for_read() as connection:
        client = _redis(connection)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
            pipe.lindex(name, -1)
        replies = pipe.execute()
    now = time.time()
    return [
        QueueStats(name, int(replies[2 * i] or 0), _age(replies[2 * i + 1], now))
        for i, name in enumerate(names)
    ]


def unacked_count() -> int:
    """Messages taken by workers and not yet acknowledged (in progress)."""
    with app.connection_for_read() as connection:
        return int(_redis(connection).hlen(UNACKED_KEY) or 0)
