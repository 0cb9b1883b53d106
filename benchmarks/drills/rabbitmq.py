"""RabbitMQ for the drills, without disturbing the machine's own.

- `SharedVhost`: a vhost of the drill's own on this machine's RabbitMQ
  (127.0.0.1:5672, guest/guest), made and deleted with rabbitmqctl, so the
  drill's queues, delayed-delivery exchanges and purges touch nobody else's.
- `PrivateRabbitMQ`: a rabbitmq-server node of the drill's own (its own node
  name, ports, data, logs, cookie and config in the drill's folder; management
  off), for the drill that kills and restarts the broker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from benchmarks import harness as h

SHARED_HOST, SHARED_PORT = "127.0.0.1", 5672
PACKAGED_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    """An AMQP 0-9-1 handshake gets as far as the server's Connection.Start."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(2)
            return sock.recv(1) == b"\x01"  # a METHOD frame: the broker answers
    except OSError:
        return False


class SharedVhost:
    """A vhost of its own on the machine's RabbitMQ; `url` is the broker URL to use."""

    def __init__(self, name: str) -> None:
        self.name = name
        if not _answers(SHARED_PORT, SHARED_HOST):
            raise SystemExit(f"no RabbitMQ answers at {SHARED_HOST}:{SHARED_PORT}")
        self._ctl("add_vhost", name)
        self._ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{SHARED_HOST}:{SHARED_PORT}/{self.name}"

    def delete(self) -> None:
        self._ctl("delete_vhost", self.name)

    def _ctl(self, *args: str) -> None:
        argv = ["rabbitmqctl", "-q", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout}")


class PrivateRabbitMQ:
    """rabbitmq-server as a node of our own on a free port. Its data stay in the folder
    across `stop()`/`start()`, as a real broker's disk does across a crash."""

    def __init__(self, folder: Path) -> None:
        # The script itself, not Debian's /usr/sbin wrapper: that one switches to the
        # rabbitmq user, who may not enter the drill's folder (0700).
        self.binary = (str(PACKAGED_SERVER) if PACKAGED_SERVER.exists()
                       else shutil.which("rabbitmq-server"))
        if self.binary is None:
            raise SystemExit("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port, self.dist_port = h.free_port(), h.free_port()
        self.node = f"drill-{os.getpid()}@localhost"
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\nlog.file.level = info\n")
        (folder / "enabled_plugins").write_text("[].\n")  # no management, no plugin at all
        (folder / "rabbitmq-env.conf").write_text("")  # not the machine's (its NODENAME)
        for sub in ("mnesia", "log"):
            (folder / sub).mkdir(exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(folder),  # its own Erlang cookie, not the machine node's
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(folder / "erl_crash.dump"),
        }
        self.proc: h.Proc | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 90) -> PrivateRabbitMQ:
        self.proc = h.Proc([self.binary], log=self.folder / "server.log", env=self.env,
                           cwd=self.folder)
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if not self.proc.alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rabbitmq-server {self.node} did not start; see "
                                   f"{self.folder}/server.log and {self.folder}/log/")
            time.sleep(0.2)
        return self

    def shutdown(self, timeout: float = 60) -> None:
        """SIGTERM: the node closes its connections and stops, as a service restart does."""
        if self.proc is not None:
            self.proc.stop(timeout=timeout)
            self.proc = None

    def depth(self, queue: str) -> int | None:
        """Messages ready in `queue` (None if it is not there)."""
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as connection:
            try:
                return connection.default_channel.queue_declare(queue, passive=True)[1]
            except Exception:
                return None

    def stop(self) -> None:
        """SIGKILL the node (its whole process group): a crash, not a shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
