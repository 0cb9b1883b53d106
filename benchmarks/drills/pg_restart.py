#!/usr/bin/env python3
"""Drill: PostgreSQL restarted at about 40% of an alert.

    .venv/bin/python benchmarks/drills/pg_restart.py [--subscribers 100000]
    .venv/bin/python benchmarks/drills/pg_restart.py --shared-cluster --allow-pg-restart

By default the drill starts a throw-away PostgreSQL cluster of its own (initdb
in its data folder, a free port) and restarts that: nobody else's database is
touched. `--shared-cluster --allow-pg-restart` restarts the machine's cluster
instead (pg_ctlcluster --skip-systemctl-redirect <version> main restart), which
breaks every other connection to it: only on a machine nobody else is using.

A batch whose results could not be recorded (the database went away after the
send) is retried; its rows stay claimed until NEWSROOM_CLAIM_TIMEOUT and are
then sent again: allowed duplicates, at most one batch per pool process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks.drills.common import Drill, parser, say


def shared_cluster_restart() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True)


def main(argv=None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--at", type=float, default=0.40)
    p.add_argument("--shared-cluster", action="store_true",
                   help="use (and restart) the machine's PostgreSQL at 127.0.0.1:5432")
    p.add_argument("--allow-pg-restart", action="store_true",
                   help="required with --shared-cluster: it disturbs every other user")
    args = p.parse_args(argv)
    if args.shared_cluster and not args.allow_pg_restart:
        p.error("--shared-cluster restarts the machine's PostgreSQL: add --allow-pg-restart")
    args.db = "postgres"
    drill = Drill("pg-restart", args, private_pg=not args.shared_cluster)
    try:
        drill.setup()
        drill.start_workers(prefix="pg-")
        drill.alert()
        drill.wait_progress(args.at)
        started = time.monotonic()
        if args.shared_cluster:
            shared_cluster_restart()
            say("the machine's PostgreSQL cluster restarted")
        else:
            drill.private_pg.restart()
            say(f"the drill's PostgreSQL (port {drill.private_pg.port}) restarted "
                "(pg_ctl restart -m fast)")
        say(f"  restart took {time.monotonic() - started:.1f} s")
        drill.wait_done()
        processes = drill.pool_processes()
        ok = drill.check(bound=processes * drill.batch_size,
                         bound_reason=f"{processes} pool processes whose batch could not be "
                                      f"recorded x batch of {drill.batch_size}")
    finally:
        drill.finish()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
