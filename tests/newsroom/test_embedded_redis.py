"""The embedded Redis: a real server, shared, and persistent across restarts."""

import redis

from newsroom import embedded_redis


def test_starts_once_persists_and_stops(tmp_path):
    try:
        assert embedded_redis.ensure_running(tmp_path) is True
        assert embedded_redis.ensure_running(tmp_path) is False  # already up: reused
        client = redis.Redis.from_url(embedded_redis.url(tmp_path))
        client.rpush("queue", "job-1", "job-2")
        client.close()

        embedded_redis.stop(tmp_path)
        assert not embedded_redis.is_running(tmp_path)

        assert embedded_redis.ensure_running(tmp_path) is True
        client = redis.Redis.from_url(embedded_redis.url(tmp_path))
        assert client.lrange("queue", 0, -1) == [b"job-1", b"job-2"]  # the AOF kept them
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.close()
    finally:
        embedded_redis.stop(tmp_path)


def test_long_folder_names_get_a_short_socket_path(tmp_path):
    deep = tmp_path / ("d" * 120)
    path = embedded_redis.socket_path(deep)
    assert len(str(path)) <= 100


def test_kombu_spelling_of_socket_urls():
    assert embedded_redis.kombu_url("unix:///run/r.sock") == "redis+socket:///run/r.sock"
    assert embedded_redis.kombu_url("redis://h:1/0") == "redis://h:1/0"
