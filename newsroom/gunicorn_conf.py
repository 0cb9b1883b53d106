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
"""

import os

forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")
