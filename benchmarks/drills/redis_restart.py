#!/usr/bin/env python3
"""Drill: Redis (the broker) stopped at about 50% of an alert and restarted empty.

    .venv/bin/python benchmarks/drills/redis_restart.py [--subscribers 100000]

The drill's own redis-server (a free TCP port, no persistence; never the
machine's shared one) is SIGKILLed and started again with nothing in it: every
queued batch message is lost. Workers reconnect; Celery cancels the tasks that
were running when the connection dropped (worker_cancel_long_running_tasks_
on_connection_loss), so their claimed rows wait for NEWSROOM_CLAIM_TIMEOUT; the
edition stalls and editions_reconcile enqueues its batches again.
Allowed duplicates: at most one batch per pool process whose task was cancelled.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks.drills.common import Drill, parser, say


def main(argv=None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--at", type=float, default=0.50)
    p.add_argument("--down", type=float, default=3.0, help="seconds Redis stays down")
    args = p.parse_args(argv)
    drill = Drill("redis-restart", args)
    try:
        drill.setup()
        drill.start_workers(prefix="redis-")
        drill.alert()
        drill.wait_progress(args.at)
        drill.redis.stop()
        say(f"redis-server SIGKILLed; down for {args.down:.0f} s")
        time.sleep(args.down)
        drill.redis.start()
        say(f"redis-server started again, empty (keys: {drill.redis.client().dbsize()})")
        drill.wait_done()
        processes = drill.pool_processes()
        ok = drill.check(bound=processes * drill.batch_size,
                         bound_reason=f"{processes} pool processes whose running task may "
                                      f"have been cancelled x batch of {drill.batch_size}")
    finally:
        drill.finish()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
