"""What is waiting in the broker: depth and age of the oldest message per queue.

Two brokers, chosen once from the transport of CELERY_BROKER_URL:

- Redis: kombu keeps each queue as a list (LPUSH in, BRPOP out), so the depth is
  LLEN and the oldest message is the list's last element. Messages a worker has
  taken but not acknowledged sit in the `unacked` hash and are counted
  separately: they are in progress, not waiting.
- RabbitMQ: a passive queue_declare answers each queue's ready messages and
  consumers without touching them. AMQP cannot show the oldest message without
  taking it (which would count as a delivery of a quorum queue's message), nor
  count unacknowledged ones: both are None, shown as "unknown". The management
  plugin's HTTP API could tell; it is not assumed to run.

Celery's messages carry no sending time, so every task published by this
project gets a `published_at` header (see `stamp_published_at`), which the age
is read from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, cast

import redis
from amqp.exceptions import NotFound
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
    consumers: int | None = None  # subscribed consumers; None where the broker cannot tell


class Broker(Protocol):
    """What the Operations page, the sampler and /metrics ask of a broker."""

    def queue_stats(self, names: list[str]) -> list[QueueStats]: ...

    def unacked_count(self) -> int | None:
        """Messages taken by workers and not yet acknowledged; None if unknown."""

    def ping(self, timeout: float) -> None:
        """Raise unless the broker answers within `timeout` seconds."""


def redis_url(broker_url: str) -> str:
    """The redis-py spelling of a kombu broker URL (`redis+socket://` is `unix://`)."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    return broker_url


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


class RedisBroker:
    def __init__(self, url: str) -> None:
        self.url = url

    def queue_stats(self, names: list[str]) -> list[QueueStats]:
        """In one Redis round trip."""
        with app.connection_for_read(self.url) as connection:
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

    def unacked_count(self) -> int | None:
        with app.connection_for_read(self.url) as connection:
            return int(_redis(connection).hlen(UNACKED_KEY) or 0)

    def ping(self, timeout: float) -> None:
        # redis-py directly: kombu would retry a dead broker for seconds before giving up.
        client = redis.Redis.from_url(redis_url(self.url.split(";")[0]),
                                      socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()


class AmqpBroker:
    def __init__(self, url: str) -> None:
        self.url = url

    def queue_stats(self, names: list[str]) -> list[QueueStats]:
        """One passive queue_declare per queue, on one connection."""
        stats = []
        with app.connection_for_read(
                self.url, connect_timeout=settings.NEWSROOM_HEALTH_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=0)  # the page says so, promptly
            channel: Any = connection.channel()  # kombu's AMQP channel (typed as StdChannel)
            try:
                for name in names:
                    try:
                        _, depth, consumers = channel.queue_declare(name, passive=True)
                    except NotFound:  # nobody declared it yet: nothing can be waiting in it
                        channel = connection.channel()  # the broker closed the old one
                        depth, consumers = 0, 0
                    stats.append(QueueStats(name, int(depth), None, int(consumers)))
            finally:
                channel.close()
        return stats

    def unacked_count(self) -> int | None:
        return None

    def ping(self, timeout: float) -> None:
        with app.connection_for_read(self.url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=0)  # no retry: a probe answers promptly


@cache
def _for_url(url: str) -> Broker:
    transport = app.connection_for_read(url).transport.driver_type  # builds, connects nothing
    if transport == "amqp":
        return AmqpBroker(url)
    if transport == "redis":
        return RedisBroker(url)
    raise ValueError(f"no queue statistics for the {transport!r} transport")


def current() -> Broker:
    """The broker CELERY_BROKER_URL names."""
    return _for_url(settings.CELERY_BROKER_URL)


def known_queues() -> list[str]:
    """Every queue the project routes work to."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted(routed | {settings.CELERY_TASK_DEFAULT_QUEUE, settings.NEWSROOM_ALERTS_QUEUE,
                            settings.NEWSROOM_DIGESTS_QUEUE})


def queue_stats(queues: Iterable[str] | None = None) -> list[QueueStats]:
    """Depth and oldest-message age of each queue (by default the known ones)."""
    return current().queue_stats(list(queues) if queues is not None else known_queues())


def unacked_count() -> int | None:
    """Messages taken by workers and not yet acknowledged (in progress); None if unknown."""
    return current().unacked_count()


def broker_ping(timeout: float) -> None:
    """Raise unless the broker answers within `timeout` seconds."""
    current().ping(timeout)
