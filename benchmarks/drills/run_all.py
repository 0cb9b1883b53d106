#!/usr/bin/env python3
"""Run the fault drills one after another; exit non-zero if any fails.

    .venv/bin/python benchmarks/drills/run_all.py                       # all, 100,000 each
    .venv/bin/python benchmarks/drills/run_all.py --subscribers 3000 \
        --only worker_kill broker_restart                              # the CI version

Arguments other than --only are passed to every drill (the PostgreSQL drill
always uses PostgreSQL: a private cluster unless --shared-cluster).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRILLS = ["worker_kill", "broker_restart", "esp_faults", "pg_restart"]


def main() -> int:
    argv = sys.argv[1:]
    only = DRILLS
    if "--only" in argv:
        i = argv.index("--only")
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        only = argv[i + 1:j]
        del argv[i:j]
    failed = []
    for name in only:
        print(f"\n===== drill {name} =====", flush=True)
        args = [a for a in argv]
        if name == "pg_restart" and "--db" in args:
            k = args.index("--db")
            del args[k:k + 2]
        code = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args],
                              check=False).returncode
        if code:
            failed.append(name)
    print("\n===== drills: " + ("all passed" if not failed else f"FAILED: {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
