"""Tasks of the operations app (Celery's autodiscovery imports this module).

The Operations page's sampler, which beat runs every NEWSROOM_OPS_SAMPLE_INTERVAL s,
and the consumption canary (defined in canary.py, imported here to be registered).
"""

from __future__ import annotations

from celery import shared_task

from newsroom.ops import broker, samples, workers
from newsroom.ops.canary import canary

__all__ = ["canary", "ops_sample"]


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
