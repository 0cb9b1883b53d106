"""Run the whole service in the foreground: web, Celery workers, beat and Flower.

This is the quick start: it prepares the database, imports `seeds/`, creates a
demo account once (in both roles, so a newcomer can try every page), then
supervises the processes with honcho (a Procfile runner: one coloured log
stream, and Ctrl-C stops every process). In production run the same four
commands under your process supervisor instead; `--print-procfile` prints them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from newsroom import embedded_redis
from newsroom.private_files import private_file, tighten

DEMO_EDITOR = "editor"
# Both roles: a newcomer tries writing, publishing, alerting and the Operations
# page with one login, and each page still checks its own permission.
DEMO_GROUPS = ("Editors", "Operations")


def _credentials_file() -> Path:
    return settings.DATA_DIR / "flower-credentials"


# Flower's --conf file is Python (tornado's parse_config_file). It reads the login
# from the credentials file, so the password is on no command line (`ps` shows
# those to every local user) and a process supervisor running --print-procfile's
# commands gets the same protection.
FLOWER_CONFIG = """\
# Written by `manage.py runall`: Flower's login, read from flower-credentials.
from pathlib import Path

basic_auth = [Path(__file__).with_name("flower-credentials").read_text().strip()]
"""


def flower_credentials() -> str:
    """`user:password` for Flower's basic auth, generated once per data folder (0600)."""
    private_file(_credentials_file(), f"ops:{secrets.token_urlsafe(18)}")
    return _credentials_file().read_text().strip()


def flower_config() -> Path:
    """Flower's configuration file, which reads its login from the credentials file."""
    flower_credentials()
    path = settings.DATA_DIR / "flower-config.py"
    private_file(path, FLOWER_CONFIG)
    return path


def data_folder_tighten() -> None:
    """Make a data folder made by an older release private (0700), and the secret
    files in it 0600: the SQLite database, the secret key, Flower's login."""
    data = settings.DATA_DIR
    tighten(data, 0o700)
    for name in ("newsroom.sqlite3", "newsroom.sqlite3-wal", "newsroom.sqlite3-shm",
                 "secret_key", "flower-credentials", "flower-config.py"):
        tighten(data / name, 0o600)


def demo_editor_create() -> str | None:
    """Create the demo account, in every group of DEMO_GROUPS; its password if it
    was created now."""
    User = get_user_model()
    if User.objects.filter(username=DEMO_EDITOR).exists():
        return None
    password = secrets.token_urlsafe(12)
    user = User.objects.create_user(DEMO_EDITOR, password=password, is_staff=True)
    user.groups.add(*(Group.objects.get(name=name) for name in DEMO_GROUPS))
    return password


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_ANY = {"0.0.0.0", "::", ""}  # noqa: S104 - names of "every address", compared, not bound


def site_url_default(*, port: int) -> str:
    """SITE_URL when none is set: where runall serves, so links in mail work."""
    return f"http://localhost:{port}"


def site_url_mismatch(site_url: str, *, host: str, port: int) -> bool:
    """Whether links to `site_url` miss the plain-http server runall starts on
    host:port (right behind a proxy, a mistake otherwise)."""
    site = urlsplit(site_url)
    site_host = (site.hostname or "").lower()
    same_host = (host in _ANY or site_host == host.lower()
                 or (site_host in _LOOPBACK and host.lower() in _LOOPBACK))
    return site.scheme != "http" or (site.port or 80) != port or not same_host


def procfile(*, host: str, port: int, flower_port: int, concurrency: int) -> dict[str, list[str]]:
    python = sys.executable
    data = settings.DATA_DIR
    return {
        "web": [
            python, "-m", "gunicorn", "--config=python:newsroom.gunicorn_conf", "newsroom.wsgi",
            f"--bind={host}:{port}",
            "--workers=2", "--access-logfile=-", "--graceful-timeout=10",
        ],
        # Alerts have a worker of their own, so a running digest never delays one.
        "alerts": [
            python, "-m", "celery", "-A", "newsroom", "worker", "--loglevel=INFO",
            f"--concurrency={concurrency}", "--hostname=alerts@%h",
            f"--queues={settings.NEWSROOM_ALERTS_QUEUE}",
        ],
        "worker": [
            python, "-m", "celery", "-A", "newsroom", "worker", "--loglevel=INFO",
            f"--concurrency={concurrency}", "--hostname=worker@%h",
            f"--queues=priority,{settings.NEWSROOM_DIGESTS_QUEUE},default",
        ],
        "beat": [
            python, "-m", "celery", "-A", "newsroom", "beat", "--loglevel=INFO",
            f"--schedule={data / 'celerybeat-schedule'}",
        ],
        "flower": [
            python, "-m", "celery", "-A", "newsroom", "flower", f"--address={host}",
            f"--port={flower_port}", f"--conf={flower_config()}",
            f"--db={data / 'flower.db'}", "--persistent=True",
        ],
    }


class Command(BaseCommand):
    help = "Prepare the database and run web, Celery worker, beat and Flower together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--flower-port", type=int, default=5555)
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument("--no-seeds", action="store_true", help="skip importing seeds/")
        parser.add_argument(
            "--print-procfile", action="store_true",
            help="print the process commands and exit (for your own supervisor)",
        )

    def handle(self, *args, **options) -> None:
        processes = procfile(
            host=options["host"], port=options["port"],
            flower_port=options["flower_port"], concurrency=options["concurrency"],
        )
        if options["print_procfile"]:
            for name, argv in processes.items():
                self.stdout.write(f"{name}: {shlex.join(argv)}")
            return

        data_folder_tighten()
        # The processes read their settings from the environment runall passes on:
        # with SITE_URL unset there, links in mail follow --port instead of
        # pointing at the default port, where nothing may listen.
        site_url_set = bool(os.environ.get("SITE_URL", "").strip())
        options["site_url"] = settings.SITE_URL if site_url_set else site_url_default(
            port=options["port"])
        os.environ["SITE_URL"] = options["site_url"]
        # The embedded Redis runs exactly as long as this command (nobody else starts it).
        redis_up = (embedded_redis.serving(settings.DATA_DIR) if settings.REDIS_EMBEDDED
                    else contextlib.nullcontext())
        with redis_up:
            self._prepare_and_run(options, processes)

    def _prepare_and_run(self, options: dict, processes: dict[str, list[str]]) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        if not options["no_seeds"]:
            try:
                call_command("import_stories", str(settings.BASE_DIR / "seeds"), "--no-progress")
            except CommandError as exc:  # a bad seed must not keep the service down
                self.stderr.write(self.style.WARNING(f"Seed import: {exc}"))
        password = demo_editor_create()
        self._banner(options, password)
        self._supervise(processes)

    def _banner(self, options: dict, password: str | None) -> None:
        site = f"http://{options['host']}:{options['port']}"
        lines = [
            f"Newsroom is starting: {site}/  (admin: {site}/admin/)",
            f"Flower: http://{options['host']}:{options['flower_port']}/  "
            f"(login {flower_credentials()})",
            f"Outgoing mail is written to {settings.EMAIL_FILE_PATH}"
            if settings.EMAIL_TRANSPORT == "outbox"
            else f"Outgoing mail goes through {settings.EMAIL_TRANSPORT}",
        ]
        if password:
            lines.append(
                f"Demo editor created -- user: {DEMO_EDITOR}  password: {password}  "
                "(shown once; change it in the admin)\n"
                f"  It is in the {' and '.join(DEMO_GROUPS)} groups: write and publish stories, "
                "send breaking alerts, watch and steer editions, the Operations page, "
                "subscribers' data."
            )
        lines.append("Press Ctrl-C to stop everything.")
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
        site_url = options.get("site_url", settings.SITE_URL)  # what handle() passed on
        if site_url_mismatch(site_url, host=options["host"], port=options["port"]):
            self.stdout.write(self.style.WARNING(
                f"Links in mail point at SITE_URL {site_url}, not at {site} where "
                "this serves: right behind a proxy that forwards there; otherwise unset "
                "SITE_URL (it then follows --port) or correct it."
            ))
        self.stdout.flush()

    def _supervise(self, processes: dict[str, list[str]]) -> None:
        from honcho.manager import Manager
        from honcho.printer import Printer

        connections.close_all()  # honcho forks; children must not share our sockets
        manager = Manager(Printer(sys.stdout))
        for name, argv in processes.items():
            manager.add_process(name, shlex.join(argv), cwd=str(settings.BASE_DIR))
        manager.loop()
        if manager.returncode not in (0, 130, 143, None):
            raise CommandError(f"a process stopped unexpectedly (exit {manager.returncode})")
