"""The embedded Redis: a real server, shared, and persistent across restarts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from newsroom import embedded_redis
from tests.settings_helpers import process_env

ROOT = Path(__file__).resolve().parents[2]


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


def test_serving_is_shared_and_the_last_user_out_stops_the_server(tmp_path):
    """Overlapping users (two test runs, runall and a test run) never stop it
    under each other, and none leaves it running."""
    try:
        with embedded_redis.serving(tmp_path):
            assert embedded_redis.is_running(tmp_path)
            pid = int((tmp_path / "redis" / "redis.pid").read_text())
            with embedded_redis.serving(tmp_path):  # a second user joins
                assert embedded_redis.is_running(tmp_path)
            assert embedded_redis.is_running(tmp_path)  # the first is still inside
        assert not embedded_redis.is_running(tmp_path)
        with pytest.raises(ProcessLookupError):  # gone, not just shutting down
            os.kill(pid, 0)
        assert (tmp_path / "redis").stat().st_mode & 0o777 == 0o700
    finally:
        embedded_redis.stop(tmp_path)


def test_a_django_process_starts_no_redis(tmp_path):
    """Only runall and the test suite start it; `check` (any command) does not."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
        env=process_env(DJANGO_DEBUG="1", NEWSROOM_DATA_DIR=str(tmp_path),
                        NEWSROOM_NO_BOOTSTRAP="1"), timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not embedded_redis.is_running(tmp_path)
    assert not (tmp_path / "redis" / "redis.pid").exists()


@pytest.mark.slow
def test_the_test_command_leaves_no_redis_behind(tmp_path):
    """`manage.py test` starts the embedded Redis for its run and stops it after;
    `--collect-only` never starts one."""
    env = process_env(NEWSROOM_DATA_DIR=str(tmp_path), NEWSROOM_NO_BOOTSTRAP="1")
    probe = "tests/newsroom/test_health.py::test_readyz_is_ok_when_database_and_broker_answer"
    for args in (["--collect-only", "-q", probe], ["-q", "-p", "no:cacheprovider", probe]):
        result = subprocess.run([sys.executable, "manage.py", "test", *args], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not embedded_redis.is_running(tmp_path)
        assert "1 passed" in result.stdout or "--collect-only" in args
    assert (tmp_path / "redis" / "redis.log").exists()  # the run did use one
