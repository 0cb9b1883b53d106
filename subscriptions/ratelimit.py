"""Fixed-window rate limits kept in the Django cache (Redis), shared by all web workers.

A window opens with the first attempt and lasts `window` seconds: the counter is
created with its TTL only if it is missing (SET NX EX, `cache.add`) and counted
atomically (INCR keeps the TTL), so concurrent requests never lose a count.
Identities are hashed so the cache holds no addresses in clear.

On Redis both commands go in one MULTI/EXEC round trip, through one client kept
per cache connection: `cache.add` + `cache.incr` took three round trips (Django's
incr asks EXISTS first) and built a new redis client for each, ~2 ms of a
sign-up's CPU for its two limits (benchmarks/README.md, "Web load").
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from subscriptions.addresses import email_lookup

HOUR = 3600


def hit(scope: str, identity: str, *, limit: int, window: int = HOUR) -> bool:
    """Count one attempt by `identity`; True while it is within `limit` per window."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    key = f"ratelimit:{scope}:{digest}"
    client = _redis_client()
    if client is not None:
        full_key = cache.make_and_validate_key(key)
        with client.pipeline(transaction=True) as pipe:
            pipe.set(full_key, 0, ex=window, nx=True)
            pipe.incr(full_key)
            _created, count = pipe.execute()
        return int(count) <= limit
    for _ in range(2):  # another cache backend: its add and incr
        cache.add(key, 0, timeout=window)
        try:
            count = cache.incr(key)
        except ValueError:  # the window expired between add and incr: open a new one
            continue
        return count <= limit
    raise RuntimeError(f"rate limit counter {key} vanished twice")  # pragma: no cover


def _redis_client() -> Any | None:
    """The default cache's redis client, made once per cache connection (per thread,
    as Django's caches are); None when the cache is not Redis."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    client = getattr(backend, "_ratelimit_client", None)
    if client is None:
        # RedisCache keeps its connection pools in `_cache`; a client on the write
        # pool is what its own add and incr use, minus rebuilding it per command.
        client = backend._cache.get_client(write=True)  # type: ignore[attr-defined]  # private
        backend._ratelimit_client = client  # type: ignore[attr-defined]
    return client


def client_identity(ip_address: str | None) -> str:
    """The unit one client controls: an IPv4 address, or an IPv6 /64.

    Providers hand each customer a whole /64, so counting single IPv6 addresses
    would let one machine rotate through billions of them.
    """
    try:
        address = ipaddress.ip_address(ip_address or "")
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is just an IPv4 client
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def login_client_address(request) -> str | None:
    """django-axes' client address: the unit the sign-up limits count, found the
    same way behind NEWSROOM_TRUSTED_PROXY_HOPS proxies. axes stores an address,
    so an IPv6 /64 is given as its first one."""
    from subscriptions.services.subscribers import client_ip

    identity = client_identity(client_ip(request))
    return None if identity == "unknown" else identity.split("/", 1)[0]


def signup_allowed_for_client(ip_address: str | None) -> bool:
    """Count a sign-up attempt from this client (valid or not)."""
    return hit("signup-ip", client_identity(ip_address),
               limit=settings.NEWSROOM_SIGNUP_LIMIT_PER_IP)


def signup_allowed_for_email(email: str) -> bool:
    """Count a sign-up of this address; known and unknown addresses count alike."""
    return hit("signup-email", email_lookup(email) or email.strip().lower(),
               limit=settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL)


def manage_link_allowed(email: str) -> bool:
    """Count a request, from an unsubscribe page, to mail this address its preferences link."""
    return hit("manage-link", email, limit=settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL)
