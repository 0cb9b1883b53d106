"""What editions_reconcile repaired, as running totals in Redis.

Written by the reconcile after each run, read by /metrics (newsroom/ops): the
key and its fields live here, beside the writer, so that sending never imports
operations and the two sides cannot disagree on the format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

REDIS_TIMEOUT = 2  # seconds: a metrics write must not hold up the reconcile
RECONCILE_KEY = "newsroom:metrics:reconcile"  # hash: action -> total, plus runs, last_run
# The fields of ReconcileReport, in the units it counts them.
RECONCILE_ACTIONS = {
    "redispatched": "planned editions dispatched again",
    "released": "deliveries taken back from dead batch runs",
    "requeued_editions": "stalled editions whose batches were enqueued again",
    "dispatch_completed": "editions whose dispatch stopped halfway, completed",
    "expired": "editions expired by reconcile",
    "finished": "editions marked done by reconcile",
}


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT,
                                socket_timeout=REDIS_TIMEOUT)


def reconcile_actions_record(actions: Mapping[str, int], *, now: float | None = None) -> None:
    """Add one reconcile run's actions to the shared totals in Redis.

    A metrics failure must never stop the reconcile itself: Redis errors are logged.
    """
    try:
        pipe = _redis().pipeline(transaction=False)
        for action, count in actions.items():
            if count:
                pipe.hincrby(RECONCILE_KEY, action, int(count))
        pipe.hincrby(RECONCILE_KEY, "runs", 1)
        pipe.hset(RECONCILE_KEY, "last_run", repr(time.time() if now is None else now))
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("reconcile counters not recorded: %s", exc)


def reconcile_totals() -> dict[str, float]:
    """The totals so far: one field per action, plus `runs` and `last_run`."""
    raw = _redis().hgetall(RECONCILE_KEY)
    return {key.decode(): float(value) for key, value in raw.items()}
