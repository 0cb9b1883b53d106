"""The Operations page's sampler: beat runs it every NEWSROOM_OPS_SAMPLE_INTERVAL s.

Registered through newsroom/tasks.py, the module Celery's autodiscovery imports.
"""

from __future__ import annotations

from celery import shared_task

from newsroom.ops import broker, samples, workers


@shared_task(name="newsroom.ops_sample")
def ops_sample() -> dict[str, int | None]:
    """Ask the workers, then record queue depths and send counters.

    Beat sends it with an expiry of one interval: a sample that waited longer
    in a busy queue is dropped, not taken late, since the next one is due.
    """
    snapshot = workers.snapshot_refresh()
    queues = sorted(set(broker.known_queues()) | snapshot.queues)
    sample = samples.sample_take(queues=queues)
    samples.sample_record(sample)
    return {"workers": sum(snapshot.answered(w) for w in snapshot.workers),
            "waiting": sum(sample.depth.values()), "unacked": sample.unacked}
