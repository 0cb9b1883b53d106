"""The README's commands work in a quick-start checkout with nothing exported.

Each command runs as a real `manage.py` process on a fresh data folder, with
every project variable removed from its environment, as a newcomer would run it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsroom import embedded_redis
from tests.settings_helpers import free_port, process_env

ROOT = Path(__file__).resolve().parents[2]


def manage(data: Path, *args: str, timeout: float = 120, **env: str):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env=process_env(NEWSROOM_DATA_DIR=str(data), NEWSROOM_NO_BOOTSTRAP="1",
                                         **env),
    )


def ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


SENDING_EDITION = (
    "from django.utils import timezone; from subscriptions.models import Edition; "
    "Edition.objects.create(key='alert:story:1', kind='alert', status='sending', "
    "scheduled_at=timezone.now(), targeted=3)"
)
KEY_CHECK = ("from django.conf import settings; from pathlib import Path; "
             "print(settings.SECRET_KEY == (settings.DATA_DIR / 'secret_key').read_text().strip())")


@pytest.mark.slow
def test_the_readme_commands_share_runalls_key_and_data_folder(tmp_path):
    data = tmp_path / "var"
    ok(manage(data, "migrate", "--verbosity=0"))
    key = (data / "secret_key").read_text().strip()
    assert len(key) >= 50 and (data / "secret_key").stat().st_mode & 0o777 == 0o600
    ok(manage(data, "createsuperuser", "--noinput", "--username=boss",
              "--email=boss@example.com", DJANGO_SUPERUSER_PASSWORD="a-long-Password-42"))
    assert ok(manage(data, "shell", "-c", KEY_CHECK)).splitlines()[-1] == "True"
    assert "1 created" in ok(manage(data, "import_stories", str(ROOT / "seeds"), "--no-progress"))
    # runall's processes read the same file: nothing is passed to them but the folder.
    procfile = ok(manage(data, "runall", "--print-procfile"))
    assert key not in procfile and (data / "secret_key").read_text().strip() == key
    assert "No editions." in ok(manage(data, "editions"))


@pytest.mark.slow
def test_commands_needing_redis_say_to_start_runall_and_change_nothing(tmp_path):
    data = tmp_path / "var"
    ok(manage(data, "migrate", "--verbosity=0"))
    ok(manage(data, "shell", "-c", SENDING_EDITION))

    listed = manage(data, "editions")
    assert "alert:story:1" in ok(listed)
    assert "embedded Redis is not running" in listed.stderr and "runall" in listed.stderr

    refused = manage(data, "requeue_stuck", timeout=30)
    assert refused.returncode == 1
    assert "embedded Redis is not running" in refused.stderr
    assert "manage.py runall" in refused.stderr and "Nothing was changed" in refused.stderr
    assert "Traceback" not in refused.stderr

    dry = manage(data, "requeue_stuck", "--dry-run", timeout=30)
    assert "Dry run" in ok(dry) and "runall" in dry.stderr

    with embedded_redis.serving(data):  # what runall keeps up while it runs
        repaired = manage(data, "requeue_stuck")
        listed = manage(data, "editions")
    assert "Marked done" in ok(repaired) or "Nothing is stuck" in repaired.stdout
    assert not repaired.stderr.strip() and "Redis" not in ok(listed) + listed.stderr


def test_a_configured_redis_that_is_down_is_named_without_its_password(settings):
    from newsroom.ops.management.redis_reachable import redis_unreachable

    port = free_port()
    settings.REDIS_EMBEDDED = False
    settings.REDIS_URL = f"redis://:hunter2@127.0.0.1:{port}/0"
    problem = redis_unreachable()
    assert f"127.0.0.1:{port}" in problem and "REDIS_URL" in problem
    assert "hunter2" not in problem


# --- runall --port: links follow where it serves --------------------------------------------

@pytest.mark.parametrize(("site_url", "host", "port", "mismatch"), [
    ("http://localhost:8100", "127.0.0.1", 8100, False),
    ("http://127.0.0.1:8100", "localhost", 8100, False),
    ("http://news.lan:8100", "0.0.0.0", 8100, False),  # noqa: S104
    ("http://localhost:8000", "127.0.0.1", 8100, True),
    ("http://localhost", "127.0.0.1", 8100, True),
    ("https://news.example.com", "127.0.0.1", 8000, True),
    ("http://news.example.com:8000", "127.0.0.1", 8000, True),
])
def test_site_url_mismatch(site_url, host, port, mismatch):
    from newsroom.management.commands.runall import site_url_mismatch

    assert site_url_mismatch(site_url, host=host, port=port) is mismatch


@pytest.fixture
def runall_banner(monkeypatch, settings):
    """Run `runall` up to its banner: what its processes would get, and what it prints."""
    from io import StringIO

    from django.core.management import call_command

    from newsroom.management.commands.runall import Command

    settings.REDIS_EMBEDDED = False  # no server for a banner
    monkeypatch.setattr(Command, "_prepare_and_run",
                        lambda self, options, processes: self._banner(options, None))

    def run(*args: str, site_url: str | None) -> tuple[str, str]:
        if site_url is None:
            monkeypatch.delenv("SITE_URL", raising=False)
        else:
            monkeypatch.setenv("SITE_URL", site_url)
            settings.SITE_URL = site_url
        out = StringIO()
        call_command("runall", *args, stdout=out)
        return os.environ["SITE_URL"], out.getvalue()

    return run


def test_runall_without_site_url_gives_its_processes_one_on_its_port(runall_banner):
    site_url, banner = runall_banner("--port", "8100", site_url=None)
    assert site_url == "http://localhost:8100"
    assert "http://127.0.0.1:8100/" in banner and "Links in mail" not in banner


def test_runall_says_when_site_url_is_not_where_it_serves(runall_banner):
    site_url, banner = runall_banner("--port", "8100", site_url="http://localhost:8000")
    assert site_url == "http://localhost:8000"  # the operator's choice stands
    assert "Links in mail point at SITE_URL http://localhost:8000" in banner
    assert "http://127.0.0.1:8100" in banner
    _, banner = runall_banner("--port", "8100", site_url="http://localhost:8100")
    assert "Links in mail" not in banner


def test_the_readmes_proxy_advice_names_the_forwarded_for_setting_too():
    """Behind a load balancer without NEWSROOM_TRUSTED_PROXY_HOPS, every reader is
    the balancer: one sign-up limit and one login lock-out for everybody."""
    readme = (ROOT / "README.md").read_text()
    paragraphs = [p for p in readme.split("\n\n") if "DJANGO_BEHIND_TLS_PROXY=1" in p]
    assert len(paragraphs) >= 2  # scaling out, and the security section
    for paragraph in paragraphs:
        assert "NEWSROOM_TRUSTED_PROXY_HOPS" in paragraph, paragraph
