#!/usr/bin/env python3
"""Drill: the ESP answers 503 to 20% of calls and hangs past the client timeout on 5%.

    .venv/bin/python benchmarks/drills/esp_faults.py [--subscribers 100000] [--hang-accepts]

The fake Mailgun (benchmarks/esp_fake.py) fails calls at random (seeded). A
hung call answers after ANYMAIL_REQUESTS_TIMEOUT + 3 s, so the client times out
and retries the batch later. By default a hung call accepted nothing (a 504):
no duplicate is allowed. With --hang-accepts the ESP keeps the messages of a
hung call (the answer was lost): a retry then duplicates them. The README's
bound does not cover that case (no worker died); the drill reports it and only
checks that duplicates stay within the recipients of those calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks.drills.common import DRILL_SETTINGS, Drill, parser, say


def main(argv=None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--fail", type=float, default=0.20)
    p.add_argument("--hang", type=float, default=0.05)
    p.add_argument("--hang-accepts", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    drill = Drill("esp-faults", args, transport="esp")
    try:
        drill.setup()
        hang_seconds = float(DRILL_SETTINGS["ANYMAIL_REQUESTS_TIMEOUT"]) + 3
        drill.fake.faults(fail_fraction=args.fail, fail_status=503, hang_fraction=args.hang,
                          hang_seconds=hang_seconds, hang_accepts=args.hang_accepts,
                          seed=args.seed)
        say(f"fake ESP: 503 on {args.fail:.0%} of calls, hang {hang_seconds:.0f} s on "
            f"{args.hang:.0%} (timeout {DRILL_SETTINGS['ANYMAIL_REQUESTS_TIMEOUT']} s), "
            f"hung calls {'accept' if args.hang_accepts else 'accept nothing'}")
        drill.start_workers(prefix="esp-")
        drill.alert()
        drill.wait_done()
        stats = drill.fake.stats()
        say(f"fake ESP: {stats['calls']} calls, {stats['failed_calls']} answered 503, "
            f"{stats['hung_calls']} hung, {stats['accepted_calls']} accepted")
        if args.hang_accepts:
            bound = stats["hung_accepted_recipients"]
            reason = ("recipients of hung calls the ESP accepted: OUTSIDE the README's bound "
                      "(no worker died); the copies share their Message-ID")
        else:
            bound, reason = 0, "no worker process was killed"
        ok = drill.check(bound=bound, bound_reason=reason)
    finally:
        drill.finish()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
