"""The last hour of queue depths and sending, sampled by the `ops_sample` task.

Each tick appends one JSON sample to a Redis list (RPUSH) and trims the list to
an hour's worth (LTRIM), in one round trip. Redis rather than a table: this is
monitoring data that is cheap to lose (it refills within the hour), so the
database, which the workers write their ledger to, gets no write every tick and
needs no pruning job; and appending and capping are atomic commands. The list
lives in the Django cache's Redis under the cache's key prefix.

Rates are differences between consecutive samples, so they hold whatever the
interval and survive a missed tick: the counters are totals, not increments.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q, Sum
from django.utils import timezone
from django.utils.safestring import SafeString
from redis.exceptions import RedisError

from newsroom.ops import broker
from newsroom.ops.charts import Point, line_chart
from subscriptions.models import Edition

logger = logging.getLogger(__name__)

HISTORY_KEY = "ops:history"
WINDOW = 3600  # seconds of history kept and charted
RUNNING = (Edition.Status.PLANNED, Edition.Status.SENDING, Edition.Status.PAUSED)


@dataclass(frozen=True)
class Sample:
    at: float  # unix time
    depth: dict[str, int]  # messages waiting, per queue
    unacked: int | None  # messages taken by workers, not yet acknowledged (None: unknown)
    sent: int  # Edition.sent summed over every edition: it only grows
    editions: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (sent, done)

    def to_json(self) -> str:
        return json.dumps({
            "at": self.at, "depth": self.depth, "unacked": self.unacked, "sent": self.sent,
            "editions": {str(pk): list(counts) for pk, counts in self.editions.items()},
        })

    @classmethod
    def from_json(cls, raw: bytes | str) -> Sample:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            at=float(data["at"]), depth={k: int(v) for k, v in data["depth"].items()},
            unacked=None if data["unacked"] is None else int(data["unacked"]),
            sent=int(data["sent"]),
            editions={int(pk): (int(c[0]), int(c[1])) for pk, c in data["editions"].items()},
        )


def _redis() -> Any:
    """The raw client behind the Django cache: lists are not in the cache API."""
    return cache._cache.get_client(write=True)  # type: ignore[attr-defined]  # RedisCache


def _key() -> str:
    return cache.make_and_validate_key(HISTORY_KEY)


def sample_take(*, queues: Sequence[str] | None = None) -> Sample:
    """Read the broker and the edition counters now (two queries, no deliveries).

    Editions that finished since the last tick are included, so their last
    messages still count in their own rate.
    """
    now = time.time()
    stats = broker.queue_stats(queues)
    since = timezone.now() - timedelta(seconds=2 * sample_interval())
    recent = (
        Edition.objects.filter(Q(status__in=RUNNING) | Q(finished_at__gte=since))
        .values_list("pk", "sent", "failed", "skipped")
    )
    return Sample(
        at=now,
        depth={stat.name: stat.depth for stat in stats},
        unacked=broker.unacked_count(),
        sent=Edition.objects.aggregate(total=Sum("sent"))["total"] or 0,
        editions={pk: (sent, sent + failed + skipped) for pk, sent, failed, skipped in recent},
    )


def sample_interval() -> int:
    return max(1, int(settings.NEWSROOM_OPS_SAMPLE_INTERVAL))


def sample_record(sample: Sample) -> None:
    """Append, and keep about an hour of samples (more if ticks come faster)."""
    keep = math.ceil(WINDOW / sample_interval()) + 1
    key = _key()
    pipe = _redis().pipeline(transaction=False)
    pipe.rpush(key, sample.to_json())
    pipe.ltrim(key, -keep, -1)
    pipe.expire(key, 2 * WINDOW)  # gone, not stale, when nothing samples any more
    pipe.execute()


def history(*, window: float = WINDOW, now: float | None = None) -> list[Sample]:
    """Samples of the last `window` seconds, oldest first."""
    since = (now or time.time()) - window
    samples = []
    for raw in _redis().lrange(_key(), 0, -1):
        try:
            sample = Sample.from_json(raw)
        except (ValueError, KeyError, TypeError, IndexError):
            continue  # written by another version: skip, it ages out within the hour
        if sample.at >= since:
            samples.append(sample)
    return sorted(samples, key=lambda sample: sample.at)


# --- Series for the charts -----------------------------------------------------------


def rates(totals: Sequence[Point]) -> list[Point]:
    """Per-second rates between consecutive (time, running total) points.

    A total that goes down (a counter reset) gives no negative rate: 0 instead.
    """
    result = []
    for (t0, v0), (t1, v1) in pairwise(totals):
        if t1 > t0:
            result.append((t1, max(0.0, (v1 - v0) / (t1 - t0))))
    return result


def depth_series(samples: Sequence[Sample], queue: str) -> list[Point]:
    return [(s.at, float(s.depth[queue])) for s in samples if queue in s.depth]


def send_rate_series(samples: Sequence[Sample]) -> list[Point]:
    """Messages sent per second, all editions together."""
    return rates([(s.at, float(s.sent)) for s in samples])


def edition_series(samples: Sequence[Sample], edition_id: int, *, done: bool = False
                   ) -> list[Point]:
    """One edition's running total of sent (or, with `done`, of all handled)."""
    index = 1 if done else 0
    return [(s.at, float(s.editions[edition_id][index]))
            for s in samples if edition_id in s.editions]


def recent_rate(totals: Sequence[Point], *, over: float = 300) -> float | None:
    """The mean rate over the last `over` seconds of a running total, or None
    with fewer than two samples: what the send does now, not since it began."""
    if len(totals) < 2:
        return None
    end_t, end_v = totals[-1]
    start_t, start_v = next((t, v) for t, v in totals if t >= end_t - over)
    if start_t == end_t:
        start_t, start_v = totals[-2]
    return max(0.0, (end_v - start_v) / (end_t - start_t)) if end_t > start_t else None


def edition_sent_series(samples: Sequence[Sample], edition: Edition) -> list[Point]:
    """One edition's running total of sent over the whole window, for its chart.

    The sampler records an edition only while it runs and a moment after, so an
    alert shorter than a tick or two appears in one sample or none, and a rate
    needs two points: its page said "No samples" while the Operations chart,
    which follows the total of all editions, showed its spike. What the missing
    samples would say is known, though: nothing before the edition started, its
    final count after it finished. Those are filled in, and the start itself is
    a point when no sample saw the edition before it had sent anything.
    """
    if edition.started_at is None or not samples:
        return edition_series(samples, edition.pk)
    started = edition.started_at.timestamp()
    finished = edition.finished_at.timestamp() if edition.finished_at else None
    points: list[Point] = []
    for sample in samples:
        if edition.pk in sample.editions:
            points.append((sample.at, float(sample.editions[edition.pk][0])))
        elif sample.at <= started:
            points.append((sample.at, 0.0))
        elif finished is not None and sample.at >= finished:
            points.append((sample.at, float(edition.sent)))
        # else: running, yet not sampled (a missed tick): leave the gap
    recorded = [sample.at for sample in samples if edition.pk in sample.editions]
    seen_start = recorded and recorded[0] <= started  # clocks apart: trust the samples
    if not seen_start and samples[0].at < started < samples[-1].at:
        points.append((started, 0.0))
    return sorted(points)


def edition_rate_chart(edition: Edition) -> SafeString | None:
    """One edition's send rate over the last hour, for its admin page; None when
    Redis does not answer (the page must still open)."""
    try:
        samples = history()
    except (RedisError, OSError):
        logger.warning("edition rate chart: cache unavailable", exc_info=True)
        return None
    return line_chart(
        rates(edition_sent_series(samples, edition)), title=f"Edition {edition.pk}: messages "
        "sent per second, last hour", unit="msg/s", ident=f"edition-{edition.pk}-rate",
        empty="No samples in the last hour",
    )
