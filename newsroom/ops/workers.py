"""Which Celery workers answer, what they consume, and what they are doing.

Asking workers (remote control) is a broadcast and a wait of about a second for
replies, so the Operations page never asks: the `ops_sample` task does, each
tick, and stores one snapshot in the cache for the page to show with its age.

A worker that stops answering stays in the snapshot, with the time it last
answered, for an hour: on call, "worker-3 silent for 4 min" is the news, and a
list that quietly loses it hides exactly that.

Answering takes the worker's main process, not a pool slot, so a worker busy
with long tasks still answers; one running `--pool=solo` does not while a task
runs, and shows as silent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from django.core.cache import cache

from newsroom.celery import app

SNAPSHOT_KEY = "ops:workers"
SNAPSHOT_TTL = 24 * 3600  # an old snapshot says "the sampler stopped": keep it to say so
FORGET_AFTER = 3600  # a worker silent this long is dropped from the snapshot


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queues: tuple[str, ...]
    concurrency: int | None  # pool processes (or threads)
    active: int  # tasks in progress when it last answered
    oldest_task_started: float | None  # unix time the longest-running task began
    processed: int  # tasks received since it started
    pid: int | None
    uptime: int | None  # seconds
    last_seen: float  # unix time it last answered


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    workers: tuple[WorkerInfo, ...]

    def age(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.taken_at)

    def answered(self, worker: WorkerInfo) -> bool:
        """Did it answer the sampler's latest question?"""
        return worker.last_seen >= self.taken_at

    @property
    def queues(self) -> set[str]:
        return {queue for worker in self.workers for queue in worker.queues}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            taken_at=data["taken_at"],
            workers=tuple(
                WorkerInfo(**{**worker, "queues": tuple(worker["queues"])})
                for worker in data["workers"]
            ),
        )


def _worker(name: str, stats: Mapping[str, Any], queues: Sequence[Mapping[str, Any]] | None,
            active: Sequence[Mapping[str, Any]] | None, now: float) -> WorkerInfo:
    starts = [task["time_start"] for task in active or () if task.get("time_start")]
    return WorkerInfo(
        name=name,
        queues=tuple(sorted(queue["name"] for queue in queues or ())),
        concurrency=(stats.get("pool") or {}).get("max-concurrency"),
        active=len(active or ()),
        oldest_task_started=min(starts) if starts else None,
        processed=sum((stats.get("total") or {}).values()),
        pid=stats.get("pid"),
        uptime=stats.get("uptime"),
        last_seen=now,
    )


def workers_inspect(*, timeout: float = 1.0) -> list[WorkerInfo]:
    """Every worker that answers within `timeout` seconds.

    `stats` goes to all and waits the whole timeout, since nobody knows how many
    workers there are; its replies are the liveness check. `active_queues` and
    `active` then go to those that answered and return once all of them have.
    """
    now = time.time()
    stats = app.control.inspect(timeout=timeout).stats() or {}
    if not stats:
        return []
    names = sorted(stats)
    asked = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
    queues = asked.active_queues() or {}
    active = asked.active() or {}
    return [_worker(name, stats[name], queues.get(name), active.get(name), now)
            for name in names]


def snapshot_merge(previous: Snapshot | None, answered: list[WorkerInfo], *, now: float
                   ) -> Snapshot:
    """The workers that answered, plus those seen within FORGET_AFTER that did not
    (as last seen, with nothing counted as in progress: we do not know)."""
    names = {worker.name for worker in answered}
    silent = [
        replace(worker, active=0, oldest_task_started=None)
        for worker in (previous.workers if previous else ())
        if worker.name not in names and now - worker.last_seen < FORGET_AFTER
    ]
    workers = sorted([*answered, *silent], key=lambda worker: worker.name)
    return Snapshot(taken_at=now, workers=tuple(workers))


def snapshot_get() -> Snapshot | None:
    data = cache.get(SNAPSHOT_KEY)
    if not data:
        return None
    try:
        return Snapshot.from_dict(data)
    except (KeyError, TypeError):
        return None  # written by another version; the next tick replaces it


def snapshot_refresh(*, timeout: float = 1.0) -> Snapshot:
    """Ask the workers and store what they said, stamped with the time."""
    now = time.time()
    snapshot = snapshot_merge(snapshot_get(), workers_inspect(timeout=timeout), now=now)
    cache.set(SNAPSHOT_KEY, snapshot.to_dict(), SNAPSHOT_TTL)
    return snapshot
