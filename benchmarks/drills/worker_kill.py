#!/usr/bin/env python3
"""Drill: a worker killed with SIGKILL at about 30% of an alert, and another started.

    .venv/bin/python benchmarks/drills/worker_kill.py [--subscribers 100000] [--db postgres]

The killed worker's in-flight batch (its rows claimed, some handed to the SMTP
server, none recorded) is released by editions_reconcile after
NEWSROOM_CLAIM_TIMEOUT and sent again: those are the only allowed duplicates,
at most one batch per killed pool process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks.drills.common import Drill, parser, say


def main(argv=None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--at", type=float, default=0.30, help="progress at which to kill")
    p.add_argument("--into-batch", type=float, default=0.25,
                   help="seconds into one of the victim's batch tasks at which to kill it, "
                        "so that some of its messages were handed over and none recorded")
    args = p.parse_args(argv)
    drill = Drill("worker-kill", args)
    try:
        drill.setup()
        victim = drill.start_workers(prefix="kill-")[0]
        drill.alert()
        drill.wait_progress(args.at)
        from newsroom.celery import app
        from subscriptions.models import Delivery

        # Kill the victim inside a batch, not between two: wait for it to run one.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            active = (app.control.inspect(destination=[victim.name], timeout=0.5).active()
                      or {}).get(victim.name) or []
            if any(t.get("name") == "subscriptions.deliveries_send" for t in active):
                time.sleep(args.into_batch)
                break
        victim.kill()
        held = Delivery.objects.filter(edition=drill.edition, status="sending").count()
        say(f"SIGKILLed {victim.name} (main and pool processes); {held:,} deliveries claimed "
            "at that moment (the victim's and the survivor's)")
        drill.start_workers(layout=f"1x{args.layout.split('x')[1]}", prefix="replacement-")
        say("a replacement worker started")
        drill.wait_done()
        killed = int(args.layout.split("x")[1])
        ok = drill.check(bound=killed * drill.batch_size,
                         bound_reason=f"{killed} killed pool process(es) x batch of "
                                      f"{drill.batch_size}")
    finally:
        drill.finish()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
