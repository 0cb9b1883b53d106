"""gunicorn settings for the web process:
`gunicorn --config=python:newsroom.gunicorn_conf newsroom.wsgi` (runall uses it).

By default gunicorn believes X-Forwarded-Proto (-Ssl, -Protocol) from 127.0.0.1
and ::1, so any local process, or a proxy on the same host that passes a
client's header through, can make a plain-http request look https to Django:
no https redirect, and secure-only behaviour granted to a request that was not.
Whether a TLS proxy is in front is decided in one place, DJANGO_BEHIND_TLS_PROXY
(Django's SECURE_PROXY_SSL_HEADER), so gunicorn trusts nobody's forwarding
headers unless the operator names the proxies in gunicorn's own
FORWARDED_ALLOW_IPS.

Its access log never shows a link's token (newsroom/logging.py says why).
"""

import os

from gunicorn.glogging import Logger

from newsroom.logging import RedactTokens

forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")


class RedactingLogger(Logger):
    """gunicorn's logger with tokens redacted from its access and error logs: the
    request line, the path and the Referer of every access line."""

    def setup(self, cfg) -> None:
        super().setup(cfg)  # also run on a config reload: add the filter once
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactTokens) for f in log.filters):
                log.addFilter(RedactTokens())


logger_class = RedactingLogger
