"""Settings for benchmark and drill processes: the real settings, plus two additions.

* `ANYMAIL_REQUESTS_TIMEOUT` must reach anymail as a number (the ESP drill sets a
  short one); newsroom/mailconfig.py converts it since ed2455b, and older trees
  passed the string through, which `requests` refuses: converted here if needed.
* `NEWSROOM_BENCH_WHATIF` applies benchmarks/whatif.py's experiments to workers.
"""

import os

from newsroom.settings import *  # noqa: F403
from newsroom.settings import ANYMAIL

if isinstance(ANYMAIL.get("REQUESTS_TIMEOUT"), str):
    ANYMAIL["REQUESTS_TIMEOUT"] = float(ANYMAIL["REQUESTS_TIMEOUT"])

# Benchmark what-if experiments (benchmarks/whatif.py), only when asked for.
if os.environ.get("NEWSROOM_BENCH_WHATIF"):
    from benchmarks import whatif

    whatif.connect()
