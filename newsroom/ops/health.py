"""Liveness and readiness probes: /healthz and /readyz.

/healthz touches nothing: it answers while the process can serve a request, so
a restart is never triggered by a database or Redis outage (restarting the web
process would not fix either). /readyz checks the two things a request needs,
each on a fresh connection with a short timeout, so a dead dependency gives a
prompt 503 rather than a hung probe. Anyone gets pass or fail; which check
failed, its timing and error (host names, ports) only a caller with the
metrics bearer token: those details help an attacker map the network.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from newsroom.ops import broker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    seconds: float
    error: str = ""


@cache
def redis_client(url: str, timeout: float) -> redis.Redis:
    """A shared client whose calls fail within `timeout` seconds instead of hanging."""
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:300]


def _timed(name: str, probe: Callable[[], None]) -> Check:
    started = time.monotonic()
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; the body says which
        logger.warning("readiness check %s failed: %s", name, exc,
                       extra={"check": name, "error": _describe(exc)})
        return Check(name, False, time.monotonic() - started, _describe(exc))
    return Check(name, True, time.monotonic() - started)


def database_params(timeout: int) -> dict:
    """The default database's settings, with connect and query timeouts added."""
    params = copy.deepcopy(connections["default"].settings_dict)
    options = params.setdefault("OPTIONS", {})
    options.pop("pool", None)  # one plain connection, not a pool per probe
    vendor = connections["default"].vendor
    if vendor == "postgresql":
        options["connect_timeout"] = timeout
        options["options"] = f"{options.get('options', '')} -c statement_timeout={timeout * 1000}"
    elif vendor == "sqlite":
        options["timeout"] = timeout  # waiting for a write lock
    params["CONN_MAX_AGE"] = 0
    return params


def database_check(timeout: int | None = None) -> Check:
    """SELECT 1 over a connection of its own: the pooled one may hide a dead server
    until first use, and has no connect timeout."""
    timeout = timeout or settings.NEWSROOM_HEALTH_TIMEOUT
    wrapper = type(connections["default"])

    def probe() -> None:
        db = wrapper(database_params(timeout), alias="default")
        try:
            with db.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        finally:
            db.close()

    return _timed("database", probe)


def broker_check(timeout: int | None = None) -> Check:
    """Reach the Celery broker at CELERY_BROKER_URL (Redis: PING; RabbitMQ: connect)."""
    timeout = timeout or settings.NEWSROOM_HEALTH_TIMEOUT
    return _timed("broker", lambda: broker.broker_ping(timeout))


def metrics_token_valid(request: HttpRequest) -> bool:
    """Whether the request carries `Authorization: Bearer <NEWSROOM_METRICS_TOKEN>`
    (compared in constant time); never, while no token is configured."""
    expected = settings.NEWSROOM_METRICS_TOKEN
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def readiness() -> list[Check]:
    return [database_check(), broker_check()]


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up; touches no dependency."""
    return HttpResponse("ok\n", content_type="text/plain")


@never_cache
@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database and the broker answer, else 503; the details (which
    failed, timings, errors) only for the metrics bearer token."""
    checks = readiness()
    ready = all(check.ok for check in checks)
    body: dict = {"status": "ok" if ready else "unavailable"}
    if not metrics_token_valid(request):
        return HttpResponse(json.dumps(body) + "\n", content_type="application/json",
                            status=200 if ready else 503)
    body |= {
        "checks": {
            check.name: {"ok": check.ok, "ms": round(check.seconds * 1000, 1),
                         **({"error": check.error} if check.error else {})}
            for check in checks
        },
    }
    if not ready:
        body["failed"] = [check.name for check in checks if not check.ok]
    return HttpResponse(json.dumps(body, indent=1) + "\n", content_type="application/json",
                        status=200 if ready else 503)
