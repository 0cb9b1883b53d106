import pytest
from django.conf import settings
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clear_cache():
    """Each test starts with an empty cache (it lives in a real Redis).

    Only the test key prefix is removed: FLUSHDB would also wipe the Celery
    broker's queues and bindings, which share the Redis database.
    """
    client = cache._cache.get_client(write=True)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield
