"""Log formatting and redaction: JSON lines for LOG_FORMAT=json (one object per
line, extras included), and no working link in any log line.

A token in a URL is the whole proof of a link (unsubscribe for a year, the
preferences page with the address), and access logs are read, shipped and
kept by more people and systems than the database. So the token segment of
every path that carries one is replaced by `<token>`, as consent records store
it: in Django's log records (the `RedactTokens` filter on our handler), in JSON
lines as a whole (extras such as `request` print the path), and in gunicorn's
access and error logs (`RedactingLogger` in newsroom/gunicorn_conf.py).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

# The URL prefixes whose next segment is a token: subscriptions/urls.py
# (a test keeps the two in step). Editions' "view in browser" keys and click
# redirects (r/) name no reader, but they are links all the same.
TOKEN_PREFIXES = ("subscribe/confirm", "preferences", "unsubscribe", "editions", "r")
_TOKEN_PATH = re.compile(
    r"(/(?:" + "|".join(map(re.escape, TOKEN_PREFIXES)) + r")/)[^/?#\s\"'<>]+"
)
PLACEHOLDER = "<token>"

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact_tokens(text: str) -> str:
    """`text` with the token of every token-carrying path replaced by <token>."""
    return _TOKEN_PATH.sub(r"\g<1>" + PLACEHOLDER, text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message (and string extras) without tokens; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact_tokens(value))
        return True




class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # Extras are printed with str(): a request prints its path.
        return redact_tokens(json.dumps(entry, default=str))
