"""Start real Celery worker processes for tests, on the test database and broker."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.settings_helpers import process_env

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """A URL for the test database this process uses (the worker must use the same)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """One `celery worker` process (in its own process group, so it can be killed whole)."""

    def __init__(self, *, queues: str, smtp_port: int, concurrency: int = 2,
                 name: str | None = None, **env: str) -> None:
        self.name = name or f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = Path(settings.DATA_DIR) / f"worker-{self.name.split('@')[0]}.log"
        self.queues = queues
        self.env = process_env(
            keep_servers=True, DJANGO_SETTINGS_MODULE="tests.settings",
            # The suite's own Redis, named explicitly: workers start none.
            DATABASE_URL=database_url(), REDIS_URL=settings.REDIS_URL,
            NEWSROOM_DATA_DIR=str(settings.DATA_DIR),
            EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}", **env,
        )
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Worker:
        from newsroom.celery import app

        log = open(self.log_path, "w")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "newsroom", "worker", "--loglevel=INFO",
             f"--queues={self.queues}", f"--concurrency={self.concurrency}",
             "--without-gossip", "--without-mingle", f"--hostname={self.name}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"worker {self.name} did not start; see {self.log_path}")
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: no chance to hand work back."""
        import os
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
