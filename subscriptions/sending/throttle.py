"""A global send rate per transport, shared by every worker (Redis token bucket).

Celery's `rate_limit` is per worker process, so ten workers send ten times the
limit. Here each batch reserves its messages from one bucket in Redis (a Lua
script, so the check-and-take is atomic and uses Redis's clock) and sleeps for
as long as the bucket is in debt. NEWSROOM_SEND_RATE=0 turns it off.
"""

from __future__ import annotations

import time
from functools import cache

import redis
from django.conf import settings

_SCRIPT = """
redis.replicate_commands()
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or rate)
local stamp = tonumber(redis.call('HGET', KEYS[1], 'stamp') or now)
tokens = math.min(rate, tokens + (now - stamp) * rate) - want
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def throttle_reserve(
    count: int, *, transport: str | None = None, rate: float | None = None
) -> float:
    """Take `count` messages from the bucket; seconds to wait before sending them."""
    rate = settings.NEWSROOM_SEND_RATE if rate is None else rate
    if rate <= 0 or count <= 0:
        return 0.0
    key = f"newsroom:throttle:{transport or settings.EMAIL_TRANSPORT}"
    client = _client(settings.REDIS_URL)
    return float(client.eval(_SCRIPT, 1, key, rate, count))


def throttle_acquire(count: int, **kwargs) -> float:
    """Reserve and wait; returns the seconds waited."""
    wait = throttle_reserve(count, **kwargs)
    if wait > 0:
        time.sleep(wait)
    return wait
