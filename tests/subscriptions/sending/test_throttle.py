"""The global send rate: a token bucket in the real Redis, shared by all workers.

Only the waits the bucket hands out are asserted, never wall-clock sleeps. A
wait can only be shortened by the tokens that flowed back in while the test
ran, so each is checked against [expected - elapsed, expected].
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings

from subscriptions.sending import throttle

RATE = 1000  # messages per second
SLACK = 2 / RATE  # float rounding and two clocks (Redis's and ours): two tokens' worth


@pytest.fixture
def transport() -> Iterator[str]:
    """A bucket of its own for each test (others may run at the same time)."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    throttle._client(settings.REDIS_URL).delete(f"newsroom:throttle:{name}")


class Clock:
    """How long the reservations took: the most the bucket can have refilled."""

    def __enter__(self) -> Clock:
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.start

    def check(self, wait: float, expected: float) -> None:
        assert expected - self.elapsed - SLACK <= wait <= expected + SLACK, (wait, expected)


def test_a_full_bucket_lends_one_second_then_makes_you_wait(transport, settings):
    settings.NEWSROOM_SEND_RATE = RATE
    with Clock() as clock:
        first = throttle.throttle_reserve(1000, transport=transport)
        second = throttle.throttle_reserve(500, transport=transport)
    assert first == 0.0
    clock.check(second, 500 / RATE)


def test_rate_zero_means_no_throttle(transport, settings):
    settings.NEWSROOM_SEND_RATE = 0
    assert throttle.throttle_reserve(10**9, transport=transport) == 0.0
    assert throttle.throttle_reserve(10**9, transport=transport, rate=0) == 0.0
    assert not throttle._client(settings.REDIS_URL).exists(f"newsroom:throttle:{transport}")


def test_acquire_sleeps_for_the_reserved_wait(transport, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(throttle.time, "sleep", slept.append)
    with Clock() as clock:  # from the first reservation: the bucket refills from then
        assert throttle.throttle_acquire(1000, transport=transport, rate=RATE) == 0.0
        waited = throttle.throttle_acquire(250, transport=transport, rate=RATE)
    clock.check(waited, 250 / RATE)
    assert slept == [waited]  # no sleep at all for the first, free batch


def test_workers_share_one_bucket(transport):
    """Four workers reserve at once: their waits queue up behind each other."""
    start = threading.Barrier(4)
    waits: list[float] = []

    def worker() -> None:
        start.wait()
        waits.append(throttle.throttle_reserve(250, transport=transport, rate=RATE))

    with Clock() as clock:
        throttle.throttle_reserve(RATE, transport=transport, rate=RATE)  # empty the bucket
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for wait, expected in zip(sorted(waits), (0.25, 0.5, 0.75, 1.0), strict=True):
        clock.check(wait, expected)


def test_transports_have_separate_buckets(transport):
    other = f"{transport}-other"
    try:
        with Clock() as clock:
            throttle.throttle_reserve(RATE, transport=transport, rate=RATE)
            assert throttle.throttle_reserve(RATE, transport=other, rate=RATE) == 0.0
            wait = throttle.throttle_reserve(100, transport=transport, rate=RATE)
        clock.check(wait, 100 / RATE)
    finally:
        throttle._client(settings.REDIS_URL).delete(f"newsroom:throttle:{other}")


def test_the_configured_transport_names_the_bucket(transport, settings):
    settings.EMAIL_TRANSPORT = transport
    with Clock() as clock:
        throttle.throttle_reserve(RATE, rate=RATE)
        wait = throttle.throttle_reserve(100, transport=transport, rate=RATE)
    clock.check(wait, 100 / RATE)


def test_an_idle_bucket_refills_only_to_one_second(transport):
    """However long the pause (or the debt), the burst after it is capped at the rate."""
    client = throttle._client(settings.REDIS_URL)
    key = f"newsroom:throttle:{transport}"
    seconds, _micro = client.time()
    client.hset(key, mapping={"tokens": -5 * RATE, "stamp": seconds - 100})
    with Clock() as clock:
        assert throttle.throttle_reserve(RATE, transport=transport, rate=RATE) == 0.0
        wait = throttle.throttle_reserve(RATE, transport=transport, rate=RATE)
    clock.check(wait, 1.0)
    assert 0 < client.ttl(key) <= 3600  # idle buckets don't pile up in Redis
