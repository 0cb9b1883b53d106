#!/usr/bin/env python3
"""Drill: the broker stopped at about 50% of an alert and started again.

    .venv/bin/python benchmarks/drills/broker_restart.py [--subscribers 100000]
    .venv/bin/python benchmarks/drills/broker_restart.py --broker rabbitmq [--crash]

Redis (default): the drill's own redis-server (a free TCP port, no persistence;
never the machine's shared one) is SIGKILLed and started again with nothing in
it: every queued batch message is lost. Workers reconnect; Celery cancels the
tasks that were running when the connection dropped (worker_cancel_long_running_
tasks_on_connection_loss), so their claimed rows wait for NEWSROOM_CLAIM_TIMEOUT;
the edition stalls and editions_reconcile enqueues its batches again.

RabbitMQ: a rabbitmq-server node of the drill's own (never the machine's) is
stopped, by default as a service restart stops it (SIGTERM: it closes its
connections and writes its state), with --crash by SIGKILL, and started again on
the same data: the quorum queues come back with their messages, and the
messages of the cancelled tasks, never acknowledged, are delivered again.

Allowed duplicates either way: at most one batch per pool process whose task was
cancelled.
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
    p.add_argument("--down", type=float, default=3.0, help="seconds the broker stays down")
    p.add_argument("--crash", action="store_true",
                   help="RabbitMQ: SIGKILL the node instead of stopping it (Redis: always)")
    args = p.parse_args(argv)
    drill = Drill("broker-restart", args, private_rabbitmq=args.broker == "rabbitmq")
    try:
        drill.setup()
        drill.start_workers(prefix="broker-")
        drill.alert()
        drill.wait_progress(args.at)
        if drill.rabbitmq is None:
            drill.redis.stop()
            say(f"redis-server SIGKILLed; down for {args.down:.0f} s")
            time.sleep(args.down)
            drill.redis.start()
            say(f"redis-server started again, empty (keys: {drill.redis.client().dbsize()})")
        else:
            stopped = time.monotonic()
            if args.crash:
                drill.rabbitmq.stop()
            else:
                drill.rabbitmq.shutdown()
            say(f"RabbitMQ node {'SIGKILLed' if args.crash else 'stopped (SIGTERM)'} in "
                f"{time.monotonic() - stopped:.1f} s; down for {args.down:.0f} s")
            time.sleep(args.down)
            started = time.monotonic()
            drill.rabbitmq.start()
            waiting = drill.rabbitmq.depth(drill.env.alerts_queue)
            say(f"RabbitMQ node started again in {time.monotonic() - started:.1f} s, on the "
                f"same data: {waiting} batch message(s) waiting in {drill.env.alerts_queue}")
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
