#!/usr/bin/env python3
"""Summarise py-spy collapsed stacks (benchmarks/run.py --py-spy): where the time goes.

    python benchmarks/profile_summary.py /tmp/bench-x/profiles/*.txt [--top 30] [--match mime]

Prints, over all the files given, the share of samples whose stack contains each
function (inclusive) and the share where it is the innermost frame (self).
Idle samples (a worker waiting for a task) are left out unless --idle.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = re.compile(r"(poll \(|select \(|_poll|epoll|wait \(threading|sleep|"
                  r"_recv_loop|basic_get|drain_events|asynloop)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--match", help="only functions whose frame text contains this")
    p.add_argument("--idle", action="store_true", help="keep samples of idle workers")
    args = p.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in args.files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = stack.split(";")
            # The worker's main loop waiting for work: not the send path.
            if not args.idle and "deliveries_send" not in stack and "edition_dispatch" \
                    not in stack and "digests_schedule" not in stack:
                continue
            n = int(count)
            total += n
            for frame in set(frames):
                inclusive[frame] += n
            own[frames[-1]] += n
    print(f"{total} busy samples in {len(args.files)} file(s)")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n--- {title} ---")
        shown = 0
        for frame, n in counter.most_common():
            if args.match and args.match not in frame:
                continue
            print(f"{100 * n / max(total, 1):6.1f}%  {frame[:150]}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
