"""Settings for benchmark and drill processes: the real settings, plus one addition.

`ANYMAIL_REQUESTS_TIMEOUT` must reach anymail as a number (the ESP drill sets a
short one); subscriptions/sending/transports/config.py converts it since ed2455b, and older trees
passed the string through, which `requests` refuses: converted here if needed.
"""

from newsroom.settings import *  # noqa: F403
from newsroom.settings import ANYMAIL

if isinstance(ANYMAIL.get("REQUESTS_TIMEOUT"), str):
    ANYMAIL["REQUESTS_TIMEOUT"] = float(ANYMAIL["REQUESTS_TIMEOUT"])
