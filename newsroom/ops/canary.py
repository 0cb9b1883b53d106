"""The consumption canary: proof that each queue is actually being worked.

A worker can stay connected (and answer pings) yet stop taking messages from a
queue: a blocked pool, a lost consumer, or no worker subscribed to that queue at
all (alerts have workers of their own). Beat sends this tiny task to every
queue each NEWSROOM_CANARY_INTERVAL seconds; the worker that runs it records,
per queue, when it completed and how long it waited. /metrics exports both, so
an alert on their age catches a queue that nobody drains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from celery import Task, shared_task
from django.conf import settings

from newsroom.celery import request_queue
from newsroom.ops.health import redis_client

COMPLETED_KEY = "newsroom:canary:completed"  # hash: queue -> unix time it completed
WAITED_KEY = "newsroom:canary:waited"  # hash: queue -> seconds it sat in the queue
REDIS_TIMEOUT = 2


@dataclass(frozen=True)
class CanaryState:
    queue: str
    completed_at: float  # unix time
    waited: float | None  # seconds from publish to start; None if unknown


def _redis():
    return redis_client(settings.REDIS_URL, REDIS_TIMEOUT)


def canary_record(*, queue: str, published_at: float | None, now: float | None = None) -> None:
    """Note that a canary from `queue` ran now (and how long it waited)."""
    now = time.time() if now is None else now
    pipe = _redis().pipeline(transaction=False)
    pipe.hset(COMPLETED_KEY, queue, repr(now))
    if published_at is not None:
        pipe.hset(WAITED_KEY, queue, repr(max(0.0, now - float(published_at))))
    pipe.execute()


def canary_states() -> dict[str, CanaryState]:
    """The last completed canary of every queue that has had one."""
    pipe = _redis().pipeline(transaction=False)
    pipe.hgetall(COMPLETED_KEY)
    pipe.hgetall(WAITED_KEY)
    completed, waited = pipe.execute()
    states = {}
    for raw_queue, raw_time in completed.items():
        queue = raw_queue.decode()
        raw_waited = waited.get(raw_queue)
        states[queue] = CanaryState(queue, float(raw_time),
                                    float(raw_waited) if raw_waited is not None else None)
    return states


@shared_task(name="newsroom.canary", bind=True, ignore_result=True)
def canary(self: Task) -> None:
    """Record the queue this message was consumed from (its routing key), not an
    argument: a canary published to the wrong queue must not vouch for this one."""
    queue = request_queue(self.request)
    if not queue:  # run eagerly or directly: no queue to vouch for
        return
    canary_record(queue=queue, published_at=getattr(self.request, "published_at", None))
